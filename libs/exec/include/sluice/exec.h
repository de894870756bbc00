/* exec.h - runs one command: argv only (no shell), its own process group, a deadline with
 * SIGTERM then SIGKILL to the whole group, stdin from a buffer, capped stdout/stderr. */
#ifndef SLUICE_EXEC_H
#define SLUICE_EXEC_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "sluice/err.h"

struct sl_exec_spec {
	char *const *argv;     /* NULL-terminated; argv[0] looked up in PATH; borrowed */
	char *const *env_add;  /* "NAME=value" added to the inherited environment; may be NULL */
	const char *cwd;       /* working directory, NULL = inherit */
	const void *stdin_data; /* written to the child's stdin, then closed; NULL = /dev/null */
	size_t stdin_len;
	long timeout_ms;       /* 0 = none */
	long kill_grace_ms;    /* between SIGTERM and SIGKILL; 0 = 2000 */
	size_t max_stdout;     /* bytes kept; the rest is read and dropped; 0 = 1 MiB */
	size_t max_stderr;     /* the LAST max_stderr bytes are kept; 0 = 8 KiB */
	/* Polled about every 50 ms while the child runs: returning non-zero stops it like a
	 * timeout (used when a lease is lost or the run is cancelled). May be NULL. */
	int (*should_stop)(void *ud);
	void *ud;
	/* Called once right after the child started, with its pid (= its process group id). */
	void (*on_start)(pid_t pid, void *ud);
	/* Inherited variables whose name starts with this prefix are not passed on (the worker
	 * keeps its own SLUICE_* settings, which may hold credentials, from tasks); env_add is
	 * applied after, so it can still set such names. NULL = inherit everything. */
	const char *env_drop_prefix;
	/* Non-zero: the command gets SIGKILL when the thread that started it ends, which is
	 * what happens to every thread of a caller killed with SIGKILL (Linux's parent-death
	 * signal), so a killed worker leaves no task running. Only the command itself gets it,
	 * not what it started; the caller's thread must outlive the call (sl_exec_run blocks
	 * until the command ends, so it does unless the thread is cancelled). */
	int die_with_caller;
};

struct sl_exec_result {
	int exit_code;     /* exit status, or -signal when killed by a signal */
	int timed_out;     /* the deadline passed and the group was killed */
	int stopped;       /* should_stop asked for it and the group was killed */
	char *out;         /* stdout, NUL-terminated (empty when none; NULL only on OOM),
			    * caller frees with sl_exec_result_free() */
	size_t out_len;
	int out_truncated;
	char *err;         /* tail of stderr, NUL-terminated; on SL_ERR_* the reason instead */
	size_t err_len;
	long duration_ms;
};

/* Runs spec and waits for the child and its captured output. Returns SL_OK when the child
 * ran (whatever its exit code), SL_ERR_EXEC when it could not be started (res->err says
 * why, e.g. "no such command: foo"), SL_ERR_INVALID for a bad spec. res is always
 * initialised; free it with sl_exec_result_free(). Safe to call from several threads.
 * When the leader exits, whatever is left of its process group is killed (no background
 * job outlives the task); output still buffered in the pipes is read for up to 1 s more.
 * The calling thread must not reap children with wait(-1) elsewhere.
 * @locality any thread; blocks until the child is gone. */
enum sl_err sl_exec_run(const struct sl_exec_spec *spec, struct sl_exec_result *res);

void sl_exec_result_free(struct sl_exec_result *res);

/* Sends sig to process group pgid, ignoring a group that is already gone. pgid <= 1 is
 * ignored (it would signal the caller's own group or every process). */
void sl_exec_kill_group(pid_t pgid, int sig);

#endif
