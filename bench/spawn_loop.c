/* spawn_loop.c - baseline for the bench: posix_spawn + wait of a program N times, at most J at once. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints one JSON line: {"n":N,"jobs":J,"seconds":S,"rate":R}. Exit 1 on any failed child. */
int main(int argc, char **argv)
{
	long n, jobs, started = 0, done = 0, failed = 0;
	char *args[2];
	double t0, dt;
	int rc = 1;

	if (argc != 4 || (n = strtol(argv[1], NULL, 10)) < 1 || (jobs = strtol(argv[2], NULL, 10)) < 1) {
		fprintf(stderr, "usage: spawn_loop N JOBS PROGRAM\n");
		return 2;
	}
	args[0] = argv[3];
	args[1] = NULL;
	t0 = now_s();
	while (done < n) {
		while (started < n && started - done < jobs) {
			pid_t pid;
			int err = posix_spawn(&pid, argv[3], NULL, NULL, args, environ);

			if (err != 0) {
				fprintf(stderr, "spawn_loop: posix_spawn %s: %s\n", argv[3], strerror(err));
				goto out;
			}
			started++;
		}
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			perror("spawn_loop: waitpid");
			goto out;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
		done++;
	}
	dt = now_s() - t0;
	printf("{\"n\":%ld,\"jobs\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"failed\":%ld}\n", n, jobs, dt,
	       (double)n / dt, failed);
	rc = failed ? 1 : 0;
out:
	return rc;
}
