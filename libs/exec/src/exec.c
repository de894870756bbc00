/* exec.c - spawns one command in its own process group and supervises it with poll(). */
#include "sluice/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice/util.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define EXEC_DEF_GRACE_MS 2000
#define EXEC_DEF_MAX_STDOUT (1024 * 1024)
#define EXEC_DEF_MAX_STDERR (8 * 1024)
#define EXEC_STOP_POLL_MS 50
/* After the leader exits, how long output may still be read from pipes that some escaped
 * descendant (one that left the group) keeps open. */
#define EXEC_DRAIN_MS 1000
#define EXEC_CHUNK 65536

extern char **environ;

struct capture {
	char *buf;
	size_t len;
	size_t cap;   /* allocated, excluding the NUL */
	size_t limit; /* stdout: bytes kept; stderr: ring size */
	size_t head;  /* stderr ring: next write position */
	int truncated; /* stdout only */
};

static size_t name_len(const char *kv)
{
	const char *eq = strchr(kv, '=');

	return eq ? (size_t)(eq - kv) : strlen(kv);
}

static int same_name(const char *a, const char *b)
{
	size_t n = name_len(a);

	return n == name_len(b) && !strncmp(a, b, n);
}

/* Builds the child's environment: environ less the names that env_add sets or that start
 * with drop_prefix, then env_add where a later entry wins over an earlier one of the same
 * name. The array is malloc'd, its strings borrowed. Returns NULL on allocation failure. */
static char **build_env(char *const *env_add, const char *drop_prefix)
{
	size_t nenv = 0, nadd = 0, n = 0, i, j;
	size_t plen = drop_prefix ? strlen(drop_prefix) : 0;
	char **envp;

	while (environ && environ[nenv])
		nenv++;
	while (env_add && env_add[nadd])
		nadd++;
	if (!(envp = calloc(nenv + nadd + 1, sizeof(*envp))))
		return NULL;
	for (i = 0; i < nenv; i++) {
		int overridden = plen && !strncmp(environ[i], drop_prefix, plen);

		for (j = 0; !overridden && j < nadd; j++)
			overridden = same_name(environ[i], env_add[j]);
		if (!overridden)
			envp[n++] = environ[i];
	}
	for (i = 0; i < nadd; i++) {
		int later = 0;

		for (j = i + 1; !later && j < nadd; j++)
			later = same_name(env_add[i], env_add[j]);
		if (!later)
			envp[n++] = env_add[i];
	}
	envp[n] = NULL;
	return envp;
}

/* Appends data to the stdout capture, dropping what exceeds its limit. */
static void keep_head(struct capture *c, const char *data, size_t len)
{
	size_t room = c->limit - c->len;

	if (len > room) {
		c->truncated = 1;
		len = room;
	}
	if (!len)
		return;
	if (c->len + len > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		char *nb;

		while (cap < c->len + len)
			cap *= 2;
		if (cap > c->limit)
			cap = c->limit;
		if (!(nb = realloc(c->buf, cap + 1))) {
			c->truncated = 1; /* keep what we have rather than fail the task */
			return;
		}
		c->buf = nb;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
}

/* Writes data into the stderr ring, which keeps the last limit bytes. */
static void keep_tail(struct capture *c, const char *data, size_t len)
{
	if (!c->buf) {
		if (!(c->buf = malloc(c->limit + 1)))
			return;
		c->cap = c->limit;
	}
	if (len > c->limit) {
		data += len - c->limit;
		len = c->limit;
	}
	while (len) {
		size_t n = c->limit - c->head;

		if (n > len)
			n = len;
		memcpy(c->buf + c->head, data, n);
		c->head = (c->head + n) % c->limit;
		c->len = c->len + n > c->limit ? c->limit : c->len + n;
		data += n;
		len -= n;
	}
}

/* Returns the ring's content in order as a new NUL-terminated string (NULL on OOM). */
static char *tail_string(struct capture *c, size_t *len)
{
	char *s = malloc(c->len + 1);
	size_t start;

	if (!s)
		return NULL;
	if (c->len) {
		start = c->len < c->limit ? 0 : c->head;
		size_t first = c->limit - start < c->len ? c->limit - start : c->len;
		memcpy(s, c->buf + start, first);
		memcpy(s + first, c->buf, c->len - first);
	}
	s[c->len] = '\0';
	*len = c->len;
	return s;
}

void sl_exec_kill_group(pid_t pgid, int sig)
{
	/* Never signal pgid 0 (our own group) or 1: that would hit the caller or everyone. */
	if (pgid <= 1)
		return;
	if (kill(-pgid, sig) != 0 && errno != ESRCH)
		return;
}

void sl_exec_result_free(struct sl_exec_result *res)
{
	if (!res)
		return;
	free(res->out);
	free(res->err);
	res->out = NULL;
	res->err = NULL;
	res->out_len = res->err_len = 0;
}

__attribute__((format(printf, 2, 3))) static void set_error(struct sl_exec_result *res,
							    const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(res->err);
	res->err = strdup(msg);
	res->err_len = res->err ? strlen(res->err) : 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Reads what is available on *fd into c (head or tail mode); closes *fd at EOF or error. */
static void drain_fd(int *fd, struct capture *c, int tail, char *scratch)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n = read(*fd, scratch, EXEC_CHUNK);

		if (n > 0) {
			if (tail)
				keep_tail(c, scratch, (size_t)n);
			else
				keep_head(c, scratch, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		close_fd(fd);
		return;
	}
}

/* Writes the next piece of stdin; closes *fd when all is written or the child stopped
 * reading. SIGPIPE is blocked in this thread by the caller and consumed here. */
static void feed_stdin(int *fd, const char *data, size_t len, size_t *off)
{
	while (*off < len) {
		ssize_t n = write(*fd, data + *off, len - *off);

		if (n > 0) {
			*off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0 && errno == EPIPE) {
			sigset_t pipe_set;
			struct timespec zero = {0, 0};

			sigemptyset(&pipe_set);
			sigaddset(&pipe_set, SIGPIPE);
			while (sigtimedwait(&pipe_set, NULL, &zero) == -1 && errno == EINTR)
				;
		}
		break;
	}
	close_fd(fd);
}

/* Returns 1 when the child has exited (still unreaped, so its pid and group id cannot be
 * reused yet). */
static int leader_exited(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
		return errno == ECHILD;
	return si.si_pid == pid;
}

/* What a spawned child did before exec, written by the child into the parent's memory (vfork
 * shares it; the parent sleeps until the child execs or exits). */
enum child_stage { CHILD_SIGNALS, CHILD_FDS, CHILD_CHDIR, CHILD_EXEC };

struct child_report {
	volatile int stage;
	volatile int err;
};

/* The child's side of spawn(), between vfork and exec: only system calls (async-signal-safe)
 * and writes to the stack and to *report. Every signal is blocked on entry. */
__attribute__((noreturn)) static void child_exec(const struct sl_exec_spec *spec, int in_fd,
						 int out_fd, int err_fd, char **envp,
						 const char *path, pid_t caller,
						 struct child_report *report)
{
	static const int targets[3] = {0, 1, 2};
	struct sigaction dfl;
	sigset_t none;
	int fds[3] = {in_fd, out_fd, err_fd};
	const char *file = spec->argv[0];
	size_t flen = strlen(file);
	char buf[4096];
	int denied = 0;

	/* Handled and ignored signals back to their default (exec keeps SIG_IGN; a handler must
	 * not run in this child, which shares the caller's memory, once the mask opens). */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction cur;

		if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &cur) == 0 &&
		    cur.sa_handler != SIG_DFL)
			sigaction(sig, &dfl, NULL);
	}
	report->stage = CHILD_FDS;
	if (setpgid(0, 0) != 0)
		goto fail;
	if (spec->die_with_caller) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
			goto fail;
		if (getppid() != caller) /* the caller died before the signal was set */
			_exit(127);
	}
	if (fds[0] < 0 && (fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		goto fail;
	for (int i = 0; i < 3; i++) {
		/* dup2 onto itself keeps O_CLOEXEC: clear it instead. */
		if (fds[i] == targets[i] ? fcntl(fds[i], F_SETFD, 0) != 0
					 : dup2(fds[i], targets[i]) < 0)
			goto fail;
	}
	/* Sockets and files of the caller (Redis, Kafka, logs) stay out of the task. */
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
		for (int fd = 3; fd < 65536; fd++)
			close(fd);
	report->stage = CHILD_CHDIR;
	if (spec->cwd && chdir(spec->cwd) != 0)
		goto fail;
	report->stage = CHILD_EXEC;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (strchr(file, '/')) {
		execve(file, spec->argv, envp);
		goto fail;
	}
	/* execvp's search, over the caller's PATH (path), without its allocation. */
	for (const char *p = path; ; p++) {
		const char *end = strchr(p, ':');
		size_t dlen = end ? (size_t)(end - p) : strlen(p);

		if (dlen + 1 + flen < sizeof(buf)) {
			memcpy(buf, dlen ? p : ".", dlen ? dlen : 1);
			dlen = dlen ? dlen : 1;
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			execve(buf, spec->argv, envp);
			if (errno == EACCES)
				denied = 1;
			else if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG)
				goto fail;
		}
		if (!end)
			break;
		p = end;
	}
	errno = denied ? EACCES : ENOENT;
fail:
	report->err = errno;
	_exit(127);
}

/* The caller's PATH, or the usual default when it has none. Not inlined: a local computed
 * in spawn()'s frame would be one vfork may clobber (-Wclobbered). */
__attribute__((noinline)) static const char *search_path(void)
{
	const char *const path = getenv("PATH");

	return path && *path ? path : "/bin:/usr/bin";
}

/* Starts the command in its own process group with stdin from in_fd (or /dev/null), stdout
 * to out_fd, stderr to err_fd, every other descriptor closed, every signal at its default
 * and none blocked. vfork, not posix_spawn: glibc's posix_spawn maps and unmaps a stack for
 * its helper on every call (the unmap costs a TLB shootdown on every CPU); this measured a
 * median 4% more spawns of /bin/true per second from 8 threads on the 2-core VM, 0-90 us
 * less CPU each (bench/micro/spawn_ways.c, ADR 28). */
static enum sl_err spawn(const struct sl_exec_spec *spec, int in_fd, int out_fd, int err_fd,
			 char **envp, pid_t *pid, struct sl_exec_result *res)
{
	struct child_report report = {CHILD_SIGNALS, 0};
	const char *const path = search_path();
	const pid_t caller = getpid();
	sigset_t all, old;
	int status;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	*pid = vfork();
	if (*pid == 0)
		child_exec(spec, in_fd, out_fd, err_fd, envp, path, caller, &report);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (*pid < 0) {
		set_error(res, "cannot start %s: %s", spec->argv[0], strerror(errno));
		return SL_ERR_EXEC;
	}
	if (!report.err)
		return SL_OK;
	while (waitpid(*pid, &status, 0) < 0 && errno == EINTR)
		;
	if (report.stage == CHILD_CHDIR)
		set_error(res, "cannot enter directory %s: %s", spec->cwd, strerror(report.err));
	else if (report.stage == CHILD_EXEC &&
		 (report.err == ENOENT || report.err == ENOTDIR))
		set_error(res, "no such command: %s", spec->argv[0]);
	else if (report.stage == CHILD_EXEC)
		set_error(res, "cannot execute %s: %s", spec->argv[0], strerror(report.err));
	else
		set_error(res, "cannot prepare %s: %s", spec->argv[0], strerror(report.err));
	return SL_ERR_EXEC;
}

enum sl_err sl_exec_run(const struct sl_exec_spec *spec, struct sl_exec_result *res)
{
	int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	struct capture out = {0}, errc = {0};
	sigset_t pipe_set, old_mask;
	char **envp = NULL;
	char *scratch = NULL;
	enum sl_err err = SL_OK;
	int pidfd = -1, status = 0, exited = 0, mask_set = 0;
	pid_t pid = -1;
	size_t in_off = 0;
	int64_t start = sl_mono_ms(), deadline = 0, kill_at = 0, drain_until = 0, next_stop = 0;
	long grace;

	memset(res, 0, sizeof(*res));
	if (!spec || !spec->argv || !spec->argv[0] || !spec->argv[0][0]) {
		set_error(res, "empty command");
		return SL_ERR_INVALID;
	}
	for (size_t i = 0; spec->env_add && spec->env_add[i]; i++) {
		if (!strchr(spec->env_add[i], '=') || spec->env_add[i][0] == '=') {
			set_error(res, "bad environment entry \"%.200s\"", spec->env_add[i]);
			return SL_ERR_INVALID;
		}
	}
	grace = spec->kill_grace_ms > 0 ? spec->kill_grace_ms : EXEC_DEF_GRACE_MS;
	out.limit = spec->max_stdout ? spec->max_stdout : EXEC_DEF_MAX_STDOUT;
	errc.limit = spec->max_stderr ? spec->max_stderr : EXEC_DEF_MAX_STDERR;

	/* A child that stops reading its stdin must not kill us with SIGPIPE: block it in this
	 * thread only (the signal a failed write raises is thread-directed) and consume it. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask) == 0)
		mask_set = 1;

	if (!(scratch = malloc(EXEC_CHUNK)) || !(envp = build_env(spec->env_add,
								    spec->env_drop_prefix))) {
		set_error(res, "out of memory");
		err = SL_ERR_NOMEM;
		goto out;
	}
	/* O_CLOEXEC: children spawned at the same time by other threads must not inherit our
	 * pipe ends, or our EOF would wait for them. */
	if ((spec->stdin_data && pipe2(in_pipe, O_CLOEXEC) != 0) ||
	    pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
		set_error(res, "cannot create pipes: %s", strerror(errno));
		err = SL_ERR_EXEC;
		goto out;
	}
	err = spawn(spec, in_pipe[0], out_pipe[1], err_pipe[1], envp, &pid, res);
	close_fd(&in_pipe[0]);
	close_fd(&out_pipe[1]);
	close_fd(&err_pipe[1]);
	if (err != SL_OK) {
		pid = -1;
		goto out;
	}
	if (spec->on_start)
		spec->on_start(pid, spec->ud);
	if (in_pipe[1] >= 0)
		fcntl(in_pipe[1], F_SETFL, fcntl(in_pipe[1], F_GETFL) | O_NONBLOCK);
	fcntl(out_pipe[0], F_SETFL, fcntl(out_pipe[0], F_GETFL) | O_NONBLOCK);
	fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (spec->timeout_ms > 0)
		deadline = start + spec->timeout_ms;
	if (in_pipe[1] >= 0 && spec->stdin_len == 0)
		close_fd(&in_pipe[1]);

	for (;;) {
		struct pollfd pfd[4];
		int nfd = 0, i_in = -1, i_out = -1, i_err = -1;
		int64_t now = sl_mono_ms(), wake = now + EXEC_STOP_POLL_MS;

		if (!exited) {
			if (deadline && now >= deadline && !kill_at) {
				res->timed_out = 1;
				sl_exec_kill_group(pid, SIGTERM);
				kill_at = now + grace;
			}
			if (spec->should_stop && now >= next_stop && !kill_at) {
				next_stop = now + EXEC_STOP_POLL_MS;
				if (spec->should_stop(spec->ud)) {
					res->stopped = 1;
					sl_exec_kill_group(pid, SIGTERM);
					kill_at = now + grace;
				}
			}
			if (kill_at && now >= kill_at) {
				sl_exec_kill_group(pid, SIGKILL);
				kill_at = INT64_MAX; /* sent; leave the rest to the kernel */
			}
			if (leader_exited(pid)) {
				/* The leader is a zombie, so its group id is still ours: take the
				 * rest of the group (background jobs) down with it. */
				sl_exec_kill_group(pid, SIGKILL);
				while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
					;
				exited = 1;
				close_fd(&in_pipe[1]);
				drain_until = now + EXEC_DRAIN_MS;
			}
		}
		if (exited && ((out_pipe[0] < 0 && err_pipe[0] < 0) || now >= drain_until))
			break;
		if (deadline && !kill_at && deadline < wake)
			wake = deadline;
		if (kill_at && kill_at != INT64_MAX && kill_at < wake)
			wake = kill_at;
		if (exited && drain_until < wake)
			wake = drain_until;

		if (in_pipe[1] >= 0) {
			pfd[nfd] = (struct pollfd){.fd = in_pipe[1], .events = POLLOUT};
			i_in = nfd++;
		}
		if (out_pipe[0] >= 0) {
			pfd[nfd] = (struct pollfd){.fd = out_pipe[0], .events = POLLIN};
			i_out = nfd++;
		}
		if (err_pipe[0] >= 0) {
			pfd[nfd] = (struct pollfd){.fd = err_pipe[0], .events = POLLIN};
			i_err = nfd++;
		}
		/* A readable pidfd only wakes us: leader_exited() at the top does the rest. Without
		 * pidfd (old kernels) the 50 ms wake-up does. */
		if (!exited && pidfd >= 0)
			pfd[nfd++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		if (poll(pfd, (nfds_t)nfd, (int)(wake > now ? wake - now : 0)) < 0) {
			if (errno == EINTR)
				continue;
			set_error(res, "poll: %s", strerror(errno));
			sl_exec_kill_group(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			exited = 1;
			err = SL_ERR_IO;
			goto out;
		}
		if (i_in >= 0 && pfd[i_in].revents)
			feed_stdin(&in_pipe[1], spec->stdin_data, spec->stdin_len, &in_off);
		if (i_out >= 0 && pfd[i_out].revents)
			drain_fd(&out_pipe[0], &out, 0, scratch);
		if (i_err >= 0 && pfd[i_err].revents)
			drain_fd(&err_pipe[0], &errc, 1, scratch);
	}
	if (WIFEXITED(status))
		res->exit_code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		res->exit_code = -WTERMSIG(status);
out:
	if (pid > 0 && !exited) {
		sl_exec_kill_group(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	close_fd(&pidfd);
	close_fd(&in_pipe[0]);
	close_fd(&in_pipe[1]);
	close_fd(&out_pipe[0]);
	close_fd(&out_pipe[1]);
	close_fd(&err_pipe[0]);
	close_fd(&err_pipe[1]);
	if (mask_set)
		pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	res->out_truncated = out.truncated;
	if (!out.buf)
		out.buf = malloc(1);
	if (out.buf)
		out.buf[out.len] = '\0';
	res->out = out.buf;
	res->out_len = out.buf ? out.len : 0;
	if (!res->err)
		res->err = tail_string(&errc, &res->err_len);
	free(errc.buf);
	free(envp);
	free(scratch);
	res->duration_ms = (long)(sl_mono_ms() - start);
	return err;
}
