/* spawn_ways.c - N spawns of /bin/true from T threads, each with a pipe for its stdout and
 * stderr: glibc's posix_spawn with the attributes libs/exec used until session 12 (own group,
 * every signal reset, descriptors closed) against vfork + execve doing the same, as
 * libs/exec does now. Prints the rate and the CPU per spawn (this process and its children)
 * of each, alternating, so that the machine's drift hits both.
 * Build: cc -O2 -o spawn_ways bench/micro/spawn_ways.c -lpthread
 * Run:   ./spawn_ways [N=10000] [T=8] [ROUNDS=3] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static atomic_int left;
static int use_vfork;

static pid_t with_posix_spawn(int out)
{
	char *argv[] = {"/bin/true", NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out, 1);
	posix_spawn_file_actions_adddup2(&fa, out, 2);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
					      POSIX_SPAWN_SETSIGDEF);
	if (posix_spawn(&pid, argv[0], &fa, &at, argv, environ))
		pid = -1;
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

static pid_t with_vfork(int out)
{
	char *argv[] = {"/bin/true", NULL};
	sigset_t all, old;
	pid_t pid;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pid = vfork();
	if (pid == 0) {
		struct sigaction dfl, cur;
		sigset_t none;
		int fd;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &cur) == 0 &&
			    cur.sa_handler != SIG_DFL)
				sigaction(sig, &dfl, NULL);
		setpgid(0, 0);
		if ((fd = open("/dev/null", O_RDONLY)) > 0) {
			dup2(fd, 0);
			close(fd);
		}
		dup2(out, 1);
		dup2(out, 2);
		syscall(SYS_close_range, 3U, ~0U, 0U);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(argv[0], argv, environ);
		_exit(127);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return pid;
}

static void *spawner(void *arg)
{
	(void)arg;
	while (atomic_fetch_sub(&left, 1) > 0) {
		int p[2], status;
		char buf[64];
		pid_t pid;

		if (pipe2(p, O_CLOEXEC) != 0)
			abort();
		pid = use_vfork ? with_vfork(p[1]) : with_posix_spawn(p[1]);
		close(p[1]);
		while (read(p[0], buf, sizeof(buf)) > 0)
			;
		close(p[0]);
		if (pid > 0)
			waitpid(pid, &status, 0);
	}
	return NULL;
}

static double cpu_seconds(void)
{
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	return self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
	       kids.ru_stime.tv_sec +
	       (self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
		kids.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10000, t = argc > 2 ? atoi(argv[2]) : 8;
	int rounds = argc > 3 ? atoi(argv[3]) : 3;
	pthread_t tid[64];

	if (n <= 0 || t <= 0 || t > 64 || rounds <= 0) {
		fprintf(stderr, "usage: spawn_ways [N] [THREADS<=64] [ROUNDS]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* one ignored signal to reset, as in the worker */
	for (int r = 0; r < rounds; r++) {
		for (use_vfork = 0; use_vfork < 2; use_vfork++) {
			struct timespec a, b;
			double c0 = cpu_seconds(), s;

			atomic_store(&left, n);
			clock_gettime(CLOCK_MONOTONIC, &a);
			for (int i = 0; i < t; i++)
				pthread_create(&tid[i], NULL, spawner, NULL);
			for (int i = 0; i < t; i++)
				pthread_join(tid[i], NULL);
			clock_gettime(CLOCK_MONOTONIC, &b);
			s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
			printf("round %d %-11s %d spawns, %d threads: %6.0f/s, %4.0f us CPU per spawn\n",
			       r + 1, use_vfork ? "vfork" : "posix_spawn", n, t, n / s,
			       (cpu_seconds() - c0) / n * 1e6);
			fflush(stdout);
		}
	}
	return 0;
}
