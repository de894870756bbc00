/* run.c - executes one task instance: a builtin in-process, or a command via sl_exec. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sluice/exec.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "worker.h"

/* Environment variables sluice sets for every command task (after the dispatch's own). */
#define RUN_SLUICE_ENV 7

int64_t worker_lease_stop_by(const struct worker *w, int64_t sent_ms, long ttl_ms)
{
	long margin = w->cfg->kill_grace_ms + ttl_ms / 10;

	/* At most ttl/3: renewals go out every ttl/3, and a busy machine delays them a little. */
	if (margin > ttl_ms / 3)
		margin = ttl_ms / 3;
	return sent_ms + ttl_ms - margin;
}

int worker_slot_should_stop(void *slot)
{
	struct worker_slot *s = slot;
	int64_t by = (int64_t)atomic_load(&s->stop_by_ms);

	if (by && sl_mono_ms() >= by && !atomic_exchange(&s->lost, 1))
		SL_WARN("slot %d: lease not renewed in time (redis unreachable?): stopping the "
			"task before the lease can lapse; nothing will be published",
			s->index);
	return atomic_load(&s->lost) || atomic_load(&s->w->hard_stop);
}

void worker_outcome_clear(struct worker_outcome *out)
{
	if (!out)
		return;
	free(out->output);
	free(out->stderr_tail);
	out->output = NULL;
	out->stderr_tail = NULL;
	out->stderr_len = 0;
}

static const char *intent_name(Sluice__V1__Intent intent)
{
	switch (intent) {
	case SLUICE__V1__INTENT__INTENT_REPROCESS:
		return "reprocess";
	case SLUICE__V1__INTENT__INTENT_TEST_SUBSET:
		return "test_subset";
	default:
		return "normal";
	}
}

/* Creates <work-dir>/<run> (and work-dir itself if missing) into path. Run ids were checked
 * to hold no '/' and not to start with '.'. */
static int make_run_dir(const char *work_dir, const char *run, char *path, size_t cap,
			char *error, size_t errlen)
{
	if ((size_t)snprintf(path, cap, "%s/%s", work_dir, run) >= cap) {
		snprintf(error, errlen, "work dir path too long");
		return -1;
	}
	if ((mkdir(work_dir, 0755) != 0 && errno != EEXIST) ||
	    (mkdir(path, 0755) != 0 && errno != EEXIST)) {
		snprintf(error, errlen, "cannot create work dir %.900s: %s", path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

/* Returns a new "NAME=value" string, or NULL on allocation failure. */
static char *env_pair(const char *name, const char *value)
{
	size_t n = strlen(name), v = strlen(value);
	char *s = malloc(n + v + 2);

	if (!s)
		return NULL;
	memcpy(s, name, n);
	s[n] = '=';
	memcpy(s + n + 1, value, v + 1);
	return s;
}

static void run_command(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
			struct worker_outcome *out)
{
	const struct worker_config *cfg = s->w->cfg;
	struct sl_exec_spec spec;
	struct sl_exec_result res;
	char **argv = NULL, **env = NULL;
	char dir[PATH_MAX], idx[16], attempt[16];
	size_t nenv = 0;
	enum sl_err err;

	memset(&res, 0, sizeof(res));
	out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
	if (make_run_dir(cfg->work_dir, d->run_id, dir, sizeof(dir), out->error,
			 sizeof(out->error)) != 0)
		goto out;
	argv = calloc(d->n_argv + 1, sizeof(*argv));
	env = calloc(d->n_env + RUN_SLUICE_ENV + 1, sizeof(*env));
	if (!argv || !env)
		goto oom;
	for (size_t i = 0; i < d->n_argv; i++)
		argv[i] = d->argv[i];
	for (size_t i = 0; i < d->n_env; i++)
		if (!(env[nenv++] = env_pair(d->env[i]->name,
					     d->env[i]->value ? d->env[i]->value : "")))
			goto oom;
	snprintf(idx, sizeof(idx), "%d", (int)d->map_index);
	snprintf(attempt, sizeof(attempt), "%u", (unsigned)d->attempt);
	/* Ours come last, so a flow cannot fake them. */
	if (!(env[nenv++] = env_pair("SLUICE_RUN_ID", d->run_id)) ||
	    !(env[nenv++] = env_pair("SLUICE_TASK", d->task)) ||
	    !(env[nenv++] = env_pair("SLUICE_MAP_INDEX", idx)) ||
	    !(env[nenv++] = env_pair("SLUICE_ATTEMPT", attempt)) ||
	    !(env[nenv++] = env_pair("SLUICE_FLOW", d->flow ? d->flow : "")) ||
	    !(env[nenv++] = env_pair("SLUICE_INTENT", intent_name(d->intent))) ||
	    !(env[nenv++] = env_pair("SLUICE_WORK_DIR", dir)))
		goto oom;

	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.env_add = env;
	/* The worker's own SLUICE_* settings (broker credentials, Redis URL) stay here. */
	spec.env_drop_prefix = "SLUICE_";
	spec.stdin_data = d->input.len ? d->input.data : NULL;
	spec.stdin_len = d->input.len;
	spec.timeout_ms = (long)d->timeout_ms;
	spec.kill_grace_ms = cfg->kill_grace_ms;
	spec.max_stdout = d->max_output_bytes ? d->max_output_bytes : WORKER_DEFAULT_MAX_OUTPUT;
	spec.should_stop = worker_slot_should_stop;
	spec.ud = s;
	/* A worker killed with SIGKILL leaves no task running; the reaper re-dispatches it. */
	spec.die_with_caller = 1;

	err = sl_exec_run(&spec, &res);
	if (err != SL_OK) {
		/* 127 is what a shell reports for a command it cannot run. */
		out->exit_code = 127;
		snprintf(out->error, sizeof(out->error), "%s",
			 res.err ? res.err : sl_strerror(err));
		goto out;
	}
	out->exit_code = res.exit_code;
	if (!(out->output = sl_output_to_json(res.out ? res.out : "", res.out_len)))
		goto oom;
	out->stderr_tail = res.err;
	out->stderr_len = res.err_len;
	res.err = NULL;
	if (res.stopped) {
		out->stopped = 1;
		out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
		snprintf(out->error, sizeof(out->error), "stopped");
	} else if (res.timed_out) {
		out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT;
		snprintf(out->error, sizeof(out->error), "timed out after %u ms",
			 (unsigned)d->timeout_ms);
	} else if (res.exit_code == 0) {
		out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
		if (res.out_truncated)
			snprintf(out->error, sizeof(out->error),
				 "stdout truncated to its first %zu bytes", spec.max_stdout);
	} else if (res.exit_code > 0) {
		snprintf(out->error, sizeof(out->error), "exit code %d", res.exit_code);
	} else {
		snprintf(out->error, sizeof(out->error), "killed by signal %d", -res.exit_code);
	}
	goto out;
oom:
	out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
	snprintf(out->error, sizeof(out->error), "out of memory");
out:
	sl_exec_result_free(&res);
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
	free(argv);
}

void worker_run_instance(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
			 struct worker_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->started_ms = sl_now_ms();
	if (d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN) {
		int64_t deadline = d->timeout_ms ? sl_mono_ms() + (int64_t)d->timeout_ms : 0;
		char dir[PATH_MAX];

		/* Run ids hold no '/' and do not start with '.' (checked on arrival). */
		if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", s->w->cfg->work_dir, d->run_id) >=
		    sizeof(dir))
			dir[0] = '\0';
		worker_builtin_run(d->builtin, d->input.data, d->input.len, dir[0] ? dir : NULL,
				   worker_slot_should_stop, s, deadline, out);
		if (out->status == SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT)
			snprintf(out->error, sizeof(out->error), "timed out after %u ms",
				 (unsigned)d->timeout_ms);
	} else {
		run_command(s, d, out);
	}
	out->finished_ms = sl_now_ms();
}

void worker_run_inline(const Sluice__V1__TaskDispatch *d, struct worker_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->started_ms = sl_now_ms();
	worker_builtin_run(d->builtin, d->input.data, d->input.len, NULL, NULL, NULL, 0, out);
	out->finished_ms = sl_now_ms();
}
