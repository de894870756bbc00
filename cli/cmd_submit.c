/* cmd_submit.c - `sluice submit`: send a RunRequest, optionally follow the run to its end. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "sluice/flow.h"
#include "sluice/kafka.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

#define MAX_PARAMS 256
#define MAX_IDEM_KEY 1024
#define POLL_MS 200
#define ACCEPT_MS 60000          /* a run no planner recorded by then is reported lost */
#define DEFAULT_TIMEOUT_MS 600000 /* --timeout default: 10m */
#define MAX_DUP_HOPS 8           /* duplicate-of chains; a real one has length 1 */

enum {
	OPT_PARAM = 1,
	OPT_IDEM,
	OPT_INTENT,
	OPT_WAIT,
	OPT_TIMEOUT,
};

struct submit {
	const char *flow_arg;
	const char *idem;
	const char *intent_name;
	Sluice__V1__Intent intent;
	int wait;
	long timeout_ms;
	Sluice__V1__Param params[MAX_PARAMS];
	Sluice__V1__Param *param_ptrs[MAX_PARAMS];
	size_t nparams;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* FLOW names a file when it looks like one; anything else is a flow name. */
static int is_flow_file(const char *flow)
{
	size_t n = strlen(flow);

	return strchr(flow, '/') || (n > 5 && !strcmp(flow + n - 5, ".yaml")) ||
	       (n > 4 && !strcmp(flow + n - 4, ".yml"));
}

/* Turns "name=value" into a Param whose json_value is JSON text: the value itself when it
 * parses as JSON, else the value as a JSON string. */
static int add_param(struct submit *s, const char *spec)
{
	const char *eq = strchr(spec, '=');
	Sluice__V1__Param *p;
	json_t *v;
	size_t i;

	if (!eq || eq == spec)
		return cli_usage_error("submit", "-p wants NAME=VALUE, got \"%s\"", spec);
	if ((size_t)(eq - spec) > CLI_NAME_MAX)
		return cli_usage_error("submit", "parameter name too long");
	if (s->nparams == MAX_PARAMS)
		return cli_usage_error("submit", "at most %d parameters", MAX_PARAMS);
	for (i = 0; i < s->nparams; i++)
		if (strlen(s->params[i].name) == (size_t)(eq - spec) &&
		    !strncmp(s->params[i].name, spec, (size_t)(eq - spec)))
			return cli_usage_error("submit", "parameter %.*s given twice",
					       (int)(eq - spec), spec);
	p = &s->params[s->nparams];
	sluice__v1__param__init(p);
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (!v)
		v = json_string(eq + 1);
	if (!v)
		return cli_usage_error("submit", "parameter %.*s is not valid UTF-8",
				       (int)(eq - spec), spec);
	p->json_value = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(v);
	p->name = strndup(spec, (size_t)(eq - spec));
	if (!p->name || !p->json_value) {
		free(p->name);
		free(p->json_value);
		fprintf(stderr, "sluice: out of memory\n");
		return CLI_FAILED;
	}
	s->param_ptrs[s->nparams++] = p;
	return CLI_OK;
}

static int parse_intent(struct submit *s, const char *name)
{
	s->intent_name = name;
	if (!strcmp(name, "normal"))
		s->intent = SLUICE__V1__INTENT__INTENT_NORMAL;
	else if (!strcmp(name, "reprocess"))
		s->intent = SLUICE__V1__INTENT__INTENT_REPROCESS;
	else if (!strcmp(name, "test_subset"))
		s->intent = SLUICE__V1__INTENT__INTENT_TEST_SUBSET;
	else
		return cli_usage_error("submit",
				       "--intent is normal, reprocess or test_subset, not \"%s\"",
				       name);
	return CLI_OK;
}

static int parse_args(struct cli *cli, struct submit *s, int argc, char **argv)
{
	static const struct cli_opt opts[] = {
		{"param", 'p', 1, OPT_PARAM},
		{"idempotency-key", 0, 1, OPT_IDEM},
		{"intent", 0, 1, OPT_INTENT},
		{"wait", 'w', 0, OPT_WAIT},
		{"timeout", 0, 1, OPT_TIMEOUT},
		{NULL, 0, 0, 0},
	};
	struct cli_args a;
	int id, rc;

	s->timeout_ms = DEFAULT_TIMEOUT_MS;
	s->intent_name = "normal";
	cli_args_init(&a, argc, argv, "submit");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		switch (id) {
		case CLI_ARG_ERROR:
			return CLI_USAGE;
		case CLI_ARG_HELP:
			help_command("submit", stdout);
			return -1;
		case CLI_ARG_WORD:
			if (s->flow_arg)
				return cli_usage_error("submit", "one flow at a time (got \"%s\" too)",
						       a.arg);
			s->flow_arg = a.arg;
			break;
		case OPT_PARAM:
			if ((rc = add_param(s, a.arg)) != CLI_OK)
				return rc;
			break;
		case OPT_IDEM:
			if (!*a.arg || strlen(a.arg) > MAX_IDEM_KEY)
				return cli_usage_error("submit",
						       "--idempotency-key has 1 to %d characters",
						       MAX_IDEM_KEY);
			s->idem = a.arg;
			break;
		case OPT_INTENT:
			if ((rc = parse_intent(s, a.arg)) != CLI_OK)
				return rc;
			break;
		case OPT_WAIT:
			s->wait = 1;
			break;
		case OPT_TIMEOUT:
			if (sl_parse_duration_ms(a.arg, &s->timeout_ms) != SL_OK ||
			    s->timeout_ms <= 0)
				return cli_usage_error("submit",
						       "--timeout wants a duration like 30s, 10m, "
						       "2h, got \"%s\"",
						       a.arg);
			break;
		}
	}
	if (!s->flow_arg)
		return cli_usage_error("submit", "which flow? (a name or a .yaml file)");
	return CLI_OK;
}

/* Checks the -p values against the flow file's declared parameters, as the planner will. */
static int check_params(const struct submit *s, const struct sl_flow *flow)
{
	json_t *given = json_object(), *bound = NULL;
	char errstr[512] = "";
	size_t i;
	int rc = CLI_FAILED;

	if (!given)
		goto out;
	for (i = 0; i < s->nparams; i++) {
		json_t *v = json_loads(s->params[i].json_value, JSON_DECODE_ANY, NULL);
		if (!v || json_object_set_new(given, s->params[i].name, v))
			goto out;
	}
	if (sl_flow_bind_params(flow, given, &bound, errstr, sizeof(errstr)) != SL_OK) {
		fprintf(stderr, "sluice submit: %s: %s\n", flow->path ? flow->path : flow->name,
			errstr);
		rc = CLI_USAGE;
		goto out;
	}
	rc = CLI_OK;
out:
	json_decref(given);
	json_decref(bound);
	return rc;
}

/* When $SLUICE_FLOWS_DIR holds <name>.yaml (or .yml) defining flow <name>, checks the -p
 * values against it here, so that a bad parameter fails at once; the planner checks again
 * and rejects the run when there is no such file here. */
static int check_named_flow(const struct submit *s)
{
	static const char *const exts[] = {".yaml", ".yml"};
	const char *dir = getenv("SLUICE_FLOWS_DIR");
	char path[4096], errstr[1024] = "";
	struct sl_flow *flow;
	int rc = CLI_OK;

	if (!dir || !*dir)
		return CLI_OK;
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		if (snprintf(path, sizeof(path), "%s/%s%s", dir, s->flow_arg, exts[i]) >=
			    (int)sizeof(path) ||
		    access(path, F_OK) != 0)
			continue;
		if (!(flow = sl_flow_load(path, errstr, sizeof(errstr)))) {
			fprintf(stderr, "%s\n", errstr);
			return CLI_USAGE;
		}
		if (!strcmp(flow->name, s->flow_arg))
			rc = check_params(s, flow);
		sl_flow_destroy(flow);
		return rc;
	}
	return CLI_OK;
}

struct progress {
	int tty;
	char state[32];
	long done, total;
	int64_t last_print;
	int shown; /* a TTY line is on screen */
};

/* Shows the run's progress on stderr: an updating line on a terminal, else a line per
 * change (at most one a second unless final). */
static void progress_show(struct progress *pg, const char *state, long done, long total,
			  int64_t started, int final)
{
	int64_t now = sl_mono_ms();
	int changed = strcmp(pg->state, state) || pg->done != done || pg->total != total;
	char el[32];

	out_duration(now - started, el, sizeof(el));
	if (pg->tty && !strcmp(state, "SUBMITTED")) {
		fprintf(stderr, "\r\033[KSUBMITTED, waiting for a planner  %s", el);
		pg->shown = 1;
		fflush(stderr);
	} else if (pg->tty) {
		fprintf(stderr, "\r\033[K%-9s %ld/%ld tasks  %s", state, done, total, el);
		pg->shown = 1;
		if (final) {
			fputc('\n', stderr);
			pg->shown = 0;
		}
		fflush(stderr);
	} else if (changed && (final || now - pg->last_print >= 1000 || !pg->last_print)) {
		fprintf(stderr, "%s %ld/%ld tasks (%s)\n", state, done, total, el);
		pg->last_print = now;
	} else {
		return; /* not recorded: the change is shown on a later poll */
	}
	sl_strlcpy(pg->state, state, sizeof(pg->state));
	pg->done = done;
	pg->total = total;
}

static void progress_clear(struct progress *pg)
{
	if (pg->tty && pg->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		pg->shown = 0;
	}
}

/* Follows run until it ends or timeout_ms passes; fills result (state, counts, error,
 * duplicate_of). Returns the exit code. */
static int wait_run(struct cli *cli, struct sl_state *st, const char *first_run,
		    long timeout_ms, json_t *result)
{
	char run[CLI_NAME_MAX + 1], key[CLI_KEY_MAX], el[32];
	struct progress pg = {0};
	struct sigaction sa, old;
	int64_t started = sl_mono_ms(), deadline = started + timeout_ms;
	int64_t accept_by = started + ACCEPT_MS;
	redisReply *r = NULL;
	int hops = 0, rc = CLI_TIMEOUT;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	/* Ctrl-C stops the waiting, not the run; an ignored SIGINT (nohup, &) stays ignored. */
	sigaction(SIGINT, NULL, &old);
	if (old.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	pg.tty = isatty(STDERR_FILENO);
	sl_strlcpy(run, first_run, sizeof(run));
	cli_run_key(key, sizeof(key), run, "run");
	for (;;) {
		const char *state;
		int64_t now;
		int final;

		if (interrupted) {
			progress_clear(&pg);
			fprintf(stderr, "stopped waiting; run %s goes on (sluice cancel %s stops it)\n",
				run, run);
			rc = 130;
			goto out;
		}
		if (!(r = cli_redis_check(sl_state_command(st, "HGETALL %s", key), "HGETALL"))) {
			progress_clear(&pg);
			rc = CLI_UNREACHABLE;
			goto out;
		}
		now = sl_mono_ms();
		state = cli_hash_get(r, "state");
		if (!state && hops > 0) {
			/* The run a duplicate points to was recorded long ago and expired. */
			progress_clear(&pg);
			fprintf(stderr, "sluice: run %s is no longer in Redis\n", run);
			rc = CLI_USAGE;
			goto out;
		} else if (!state) {
			/* The planner has not recorded the request yet. */
			if (now >= accept_by || now >= deadline) {
				progress_clear(&pg);
				out_duration(now - started, el, sizeof(el));
				fprintf(stderr,
					"sluice: no planner accepted run %s within %s (is "
					"sluice-planner running and reading %s?)\n",
					run, el, SL_TOPIC_RUNS_REQUESTED);
				json_object_set_new(result, "state", json_string("NOT_ACCEPTED"));
				rc = CLI_TIMEOUT;
				goto out;
			}
			if (pg.tty)
				progress_show(&pg, "SUBMITTED", 0, 0, started, 0);
		} else if (!strcmp(state, "DUPLICATE")) {
			const char *dup = cli_hash_get(r, "dup_of");
			if (!dup || !*dup || strlen(dup) > CLI_NAME_MAX || ++hops > MAX_DUP_HOPS ||
			    cli_run_key(key, sizeof(key), dup, "run") < 0) {
				progress_clear(&pg);
				fprintf(stderr, "sluice: run %s is a duplicate of an unknown run\n",
					run);
				rc = CLI_FAILED;
				goto out;
			}
			progress_clear(&pg);
			if (!cli->json) {
				printf("duplicate of %s\n", dup);
				fflush(stdout);
			}
			json_object_set_new(result, "duplicate_of", json_string(dup));
			sl_strlcpy(run, dup, sizeof(run));
			freeReplyObject(r);
			r = NULL;
			continue; /* read the earlier run right away */
		} else {
			long done = (long)out_int(cli_hash_get(r, "tasks_done"), 0);
			long total = (long)out_int(cli_hash_get(r, "tasks_total"), 0);
			const char *error = cli_hash_get(r, "error");

			final = cli_exit_for_state(state) >= 0;
			progress_show(&pg, state, done, total, started, final);
			if (final) {
				json_object_set_new(result, "state", json_string(state));
				json_object_set_new(result, "tasks_done", json_integer(done));
				json_object_set_new(result, "tasks_total", json_integer(total));
				if (error && *error)
					json_object_set_new(result, "error", json_string(error));
				rc = cli_exit_for_state(state);
				if (!cli->json) {
					out_duration(out_int(cli_hash_get(r, "ended_ms"), 0) -
							     out_int(cli_hash_get(r, "created_ms"), 0),
						     el, sizeof(el));
					if (rc == CLI_OK)
						fprintf(stderr, "run %s SUCCEEDED in %s\n", run, el);
					else
						fprintf(stderr, "run %s %s: %s\n", run, state,
							error && *error ? error : "(no reason given)");
				}
				goto out;
			}
		}
		if (now >= deadline) {
			progress_clear(&pg);
			out_duration(timeout_ms, el, sizeof(el));
			fprintf(stderr,
				"sluice: timed out after %s waiting for run %s (state %s); it goes "
				"on\n",
				el, run, state ? state : "not accepted");
			json_object_set_new(result, "state", json_string(state ? state : "PENDING"));
			rc = CLI_TIMEOUT;
			goto out;
		}
		freeReplyObject(r);
		r = NULL;
		cli_sleep_ms(POLL_MS);
	}
out:
	if (r)
		freeReplyObject(r);
	sigaction(SIGINT, &old, NULL);
	return rc;
}

int cmd_submit(struct cli *cli, int argc, char **argv)
{
	Sluice__V1__RunRequest req = SLUICE__V1__RUN_REQUEST__INIT;
	struct submit s;
	struct sl_flow *flow = NULL;
	struct sl_state *st = NULL;
	json_t *result = NULL;
	char run[64], trace[64], errstr[1024] = "";
	uint8_t *buf = NULL;
	size_t len, i;
	int rc;

	memset(&s, 0, sizeof(s));
	if ((rc = parse_args(cli, &s, argc, argv)) != CLI_OK) {
		if (rc < 0)
			rc = CLI_OK; /* --help */
		goto out;
	}
	if (is_flow_file(s.flow_arg)) {
		if (!(flow = sl_flow_load(s.flow_arg, errstr, sizeof(errstr)))) {
			fprintf(stderr, "%s\n", errstr);
			rc = CLI_USAGE;
			goto out;
		}
		if ((rc = check_params(&s, flow)) != CLI_OK)
			goto out;
		req.flow = flow->name;
		req.flow_source.data = (uint8_t *)flow->source;
		req.flow_source.len = flow->source_len;
	} else {
		const char *p;
		if (strlen(s.flow_arg) > CLI_NAME_MAX)
			goto bad_name;
		for (p = s.flow_arg; *p; p++)
			if ((unsigned char)*p <= ' ' || *p == 0x7f)
				goto bad_name;
		req.flow = (char *)s.flow_arg;
		if ((rc = check_named_flow(&s)) != CLI_OK)
			goto out;
	}
	/* Fail before requesting anything when the run could not be followed. */
	if (s.wait && !(st = cli_redis_connect(cli))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}

	sl_id_new("r-", run, sizeof(run));
	sl_id_new("t-", trace, sizeof(trace));
	req.schema_version = 1;
	req.trace_id = trace;
	req.run_id = run;
	req.n_params = s.nparams;
	req.params = s.param_ptrs;
	req.idempotency_key = (char *)(s.idem ? s.idem : "");
	req.intent = s.intent;
	req.requested_by = "cli";
	req.requested_at_ms = sl_now_ms();
	len = sluice__v1__run_request__get_packed_size(&req);
	if (len > SL_KAFKA_MAX_MESSAGE) {
		fprintf(stderr, "sluice submit: the request is %zu bytes, over the %d byte cap\n",
			len, SL_KAFKA_MAX_MESSAGE);
		rc = CLI_USAGE;
		goto out;
	}
	if (!(buf = malloc(len ? len : 1)) || !(result = json_object())) {
		fprintf(stderr, "sluice: out of memory\n");
		rc = CLI_FAILED;
		goto out;
	}
	sluice__v1__run_request__pack(&req, buf);
	json_object_set_new(result, "run_id", json_string(run));
	json_object_set_new(result, "flow", json_string(req.flow));
	if (!cli->json) {
		printf("%s\n", run); /* first, so that scripts and humans have it at once */
		fflush(stdout);
	}
	if ((rc = cli_kafka_send(cli, SL_TOPIC_RUNS_REQUESTED, run, buf, len)) != CLI_OK)
		goto out;
	if (s.wait)
		rc = wait_run(cli, st, run, s.timeout_ms, result);
	if (cli->json)
		out_json(result);
	goto out;
bad_name:
	rc = cli_usage_error("submit", "\"%s\" is neither a flow name nor a .yaml file",
			     s.flow_arg);
out:
	json_decref(result);
	free(buf);
	sl_state_destroy(st);
	sl_flow_destroy(flow);
	for (i = 0; i < s.nparams; i++) {
		free(s.params[i].name);
		free(s.params[i].json_value);
	}
	return rc;
}
