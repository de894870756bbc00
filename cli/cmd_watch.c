/* cmd_watch.c - `sluice watch RUN`: a live progress view of a run until it ends. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "sluice/util.h"

#define START_GRACE_MS 10000  /* a run not recorded by then is unknown (exit 2) */
#define QUIET_MS 30000        /* without a TTY, a line at least this often */
#define MAX_TASKS 4096        /* the flow parser's limit */
#define MAX_TRACKED 1000000   /* instances whose state is followed, over all tasks */
#define PROBE_MAX 5000        /* instance states read per poll */
#define MAX_DUP_HOPS 8
#define BAR 20                /* characters of a progress bar */
#define NAME_COLS 24          /* task names are cut to this on a terminal */
#define PLAIN_TASKS 20        /* tasks listed on one plain line */

enum { OPT_INTERVAL = 1, OPT_TIMEOUT };

/* What an instance's state means for the counts; FINAL_* never change again. */
enum { TI_PENDING = 0, TI_RUNNING, TI_RETRY, TI_OK, TI_FAILED, TI_SKIPPED };

struct wtask {
	const char *name; /* points into watch.order_text */
	char state[16];   /* node state: WAITING, ACTIVE, SUCCEEDED, FAILED ... */
	long total, done;
	unsigned char *ti; /* per map index: TI_*; NULL until total is known (or too many) */
	long ti_n;
	int single; /* total 1: index -1 or 0, found by probing both; 2 while unknown */
	long running, failed, retrying;
};

struct watch {
	char run[CLI_NAME_MAX + 1];
	char flow[CLI_NAME_MAX + 1];
	char state[32];
	char error[512];
	char *order_text;
	struct wtask *tasks;
	size_t ntasks;
	long tracked;
	long done, total, failed, running;
	int64_t created_ms, ended_ms;
	/* output */
	int tty, json, lines_shown;
	int64_t last_print;
	char last_sig[256]; /* the counts last printed, to print only changes */
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int ti_code(const char *state)
{
	if (!strcmp(state, "RUNNING"))
		return TI_RUNNING;
	if (!strcmp(state, "RETRY_WAIT"))
		return TI_RETRY;
	if (!strcmp(state, "SUCCEEDED"))
		return TI_OK;
	if (!strcmp(state, "FAILED") || !strcmp(state, "TIMED_OUT") || !strcmp(state, "CANCELLED"))
		return TI_FAILED;
	if (!strcmp(state, "SKIPPED"))
		return TI_SKIPPED;
	return TI_PENDING;
}

static void free_tasks(struct watch *w)
{
	size_t i;

	for (i = 0; i < w->ntasks; i++)
		free(w->tasks[i].ti);
	free(w->tasks);
	free(w->order_text);
	w->tasks = NULL;
	w->order_text = NULL;
	w->ntasks = 0;
	w->tracked = 0;
}

/* Builds the task list from the run hash field `tasks` (comma-separated, topological). */
static int set_tasks(struct watch *w, const char *csv)
{
	char *p, *save = NULL;
	size_t cap = 1;

	if (!(w->order_text = strdup(csv)))
		return -1;
	for (p = w->order_text; *p; p++)
		cap += *p == ',';
	if (cap > MAX_TASKS)
		cap = MAX_TASKS;
	if (!(w->tasks = calloc(cap, sizeof(*w->tasks))))
		return -1;
	for (p = strtok_r(w->order_text, ",", &save); p && w->ntasks < cap;
	     p = strtok_r(NULL, ",", &save)) {
		w->tasks[w->ntasks].name = p;
		w->tasks[w->ntasks].single = 2;
		sl_strlcpy(w->tasks[w->ntasks].state, "WAITING", sizeof(w->tasks[0].state));
		w->ntasks++;
	}
	return 0;
}

static int task_key(char *key, size_t cap, const char *run, const char *kind, const char *task,
		    long idx, int with_idx)
{
	char suffix[CLI_KEY_MAX];
	int n = with_idx ? snprintf(suffix, sizeof(suffix), "%s:%s:%ld", kind, task, idx)
			 : snprintf(suffix, sizeof(suffix), "%s:%s", kind, task);

	if (n < 0 || (size_t)n >= sizeof(suffix))
		return -1;
	return cli_run_key(key, cap, run, suffix);
}

static const char *reply_str(const redisReply *r)
{
	return cli_reply_is_str(r) ? r->str : NULL;
}

/* Reads every node's state, total and done in one pipeline. Returns CLI_OK or an exit code
 * after printing why. */
static int read_nodes(redisContext *c, struct watch *w)
{
	char key[CLI_KEY_MAX];
	size_t i;

	for (i = 0; i < w->ntasks; i++) {
		if (task_key(key, sizeof(key), w->run, "node", w->tasks[i].name, 0, 0) < 0)
			return CLI_USAGE;
		if (redisAppendCommand(c, "HMGET %s state total done", key) != REDIS_OK)
			goto conn_error;
	}
	for (i = 0; i < w->ntasks; i++) {
		struct wtask *t = &w->tasks[i];
		redisReply *r = NULL;

		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
			goto conn_error;
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
			const char *st = reply_str(r->element[0]);
			if (st)
				sl_strlcpy(t->state, st, sizeof(t->state));
			t->total = (long)out_int(reply_str(r->element[1]), 0);
			t->done = (long)out_int(reply_str(r->element[2]), 0);
			if (t->total < 0)
				t->total = 0;
		}
		freeReplyObject(r);
	}
	return CLI_OK;
conn_error:
	fprintf(stderr, "sluice: Redis HMGET failed: %s\n",
		c->errstr[0] ? c->errstr : "connection lost");
	return CLI_UNREACHABLE;
}

/* One instance state asked for: task, its array slot and the map index. */
struct probe {
	struct wtask *t;
	long slot, idx;
};

/* Reads the states of instances not known to be final, at most PROBE_MAX per call, and
 * recounts running, retrying and failed instances per task. */
static int read_instances(redisContext *c, struct watch *w)
{
	struct probe *pr = calloc(PROBE_MAX, sizeof(*pr));
	char key[CLI_KEY_MAX];
	size_t i, n = 0, k;
	int rc = CLI_UNREACHABLE;

	if (!pr) {
		fprintf(stderr, "sluice: out of memory\n");
		return CLI_FAILED;
	}
	for (i = 0; i < w->ntasks && n < PROBE_MAX; i++) {
		struct wtask *t = &w->tasks[i];
		long s;

		if (t->total <= 0 || !strcmp(t->state, "WAITING"))
			continue;
		if (!t->ti) {
			if (w->tracked + t->total > MAX_TRACKED)
				continue; /* too big to follow instance by instance: counts only */
			if (!(t->ti = calloc((size_t)t->total, 1))) {
				rc = CLI_FAILED;
				fprintf(stderr, "sluice: out of memory\n");
				goto out;
			}
			t->ti_n = t->total;
			w->tracked += t->total;
		}
		for (s = 0; s < t->ti_n && n < PROBE_MAX; s++) {
			if (t->ti[s] >= TI_OK)
				continue;
			if (t->ti_n == 1 && t->single == 2) {
				/* unmapped (-1) or a map over one element (0): ask for both */
				if (n + 2 > PROBE_MAX)
					break;
				pr[n++] = (struct probe){t, s, -1};
				pr[n++] = (struct probe){t, s, 0};
				continue;
			}
			pr[n++] = (struct probe){t, s, t->ti_n == 1 ? t->single : s};
		}
	}
	for (k = 0; k < n; k++) {
		if (task_key(key, sizeof(key), w->run, "ti", pr[k].t->name, pr[k].idx, 1) < 0) {
			rc = CLI_USAGE;
			goto out;
		}
		if (redisAppendCommand(c, "HGET %s state", key) != REDIS_OK)
			goto conn_error;
	}
	for (k = 0; k < n; k++) {
		redisReply *r = NULL;
		const char *st;

		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
			goto conn_error;
		if ((st = reply_str(r))) {
			pr[k].t->ti[pr[k].slot] = (unsigned char)ti_code(st);
			if (pr[k].t->ti_n == 1)
				pr[k].t->single = (int)pr[k].idx;
		}
		freeReplyObject(r);
	}
	w->running = 0; /* failed: the run hash's tasks_failed */
	for (i = 0; i < w->ntasks; i++) {
		struct wtask *t = &w->tasks[i];
		long s;

		t->running = t->failed = t->retrying = 0;
		for (s = 0; t->ti && s < t->ti_n; s++) {
			t->running += t->ti[s] == TI_RUNNING;
			t->retrying += t->ti[s] == TI_RETRY;
			t->failed += t->ti[s] == TI_FAILED;
		}
		w->running += t->running;
	}
	rc = CLI_OK;
	goto out;
conn_error:
	fprintf(stderr, "sluice: Redis HGET failed: %s\n",
		c->errstr[0] ? c->errstr : "connection lost");
out:
	free(pr);
	return rc;
}

static void bar(char *dst, long done, long total)
{
	long fill = total > 0 ? done * BAR / total : 0;
	long i;

	if (fill > BAR)
		fill = BAR;
	dst[0] = '[';
	for (i = 0; i < BAR; i++)
		dst[1 + i] = i < fill ? '#' : '.';
	dst[BAR + 1] = ']';
	dst[BAR + 2] = '\0';
}

static int64_t elapsed_ms(const struct watch *w)
{
	if (w->created_ms <= 0)
		return -1;
	return (w->ended_ms > 0 ? w->ended_ms : sl_now_ms()) - w->created_ms;
}

/* The per-task text after the name: "[####....]  37/100  8 running". */
static void task_text(const struct wtask *t, char *buf, size_t cap, int with_bar)
{
	char b[BAR + 3] = "", extra[96] = "";
	int n = 0;

	if (!strcmp(t->state, "WAITING") || (t->total == 0 && strcmp(t->state, "ACTIVE") &&
					      strcmp(t->state, "SUCCEEDED"))) {
		snprintf(buf, cap, "%s", t->state);
		return;
	}
	if (t->running)
		n += snprintf(extra + n, sizeof(extra) - (size_t)n, "  %ld running", t->running);
	if (t->retrying && n >= 0 && (size_t)n < sizeof(extra))
		n += snprintf(extra + n, sizeof(extra) - (size_t)n, "  %ld retrying", t->retrying);
	if (t->failed && n >= 0 && (size_t)n < sizeof(extra))
		n += snprintf(extra + n, sizeof(extra) - (size_t)n, "  %ld failed", t->failed);
	if (strcmp(t->state, "ACTIVE") && strcmp(t->state, "SUCCEEDED") && n >= 0 &&
	    (size_t)n < sizeof(extra))
		snprintf(extra + n, sizeof(extra) - (size_t)n, "  %s", t->state);
	if (with_bar) {
		bar(b, t->done, t->total);
		snprintf(buf, cap, "%s %5ld/%-5ld%s", b, t->done, t->total, extra);
	} else {
		snprintf(buf, cap, "%ld/%ld%s", t->done, t->total, extra);
	}
}

static void term_size(int *rows, int *cols)
{
	struct winsize ws;

	*rows = 24;
	*cols = 80;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

/* Prints one line on the terminal, cut to the width, clearing what was there. */
static void tty_line(const char *text, int cols)
{
	char clipped[1024];

	out_clip(text, (size_t)(cols > 1 ? cols - 1 : 1), clipped, sizeof(clipped));
	printf("\r\033[K%s\n", clipped);
}

static void show_tty(struct watch *w)
{
	char line[1024], text[256], b[BAR + 3], el[32], name[NAME_COLS * 4 + 8];
	int rows, cols, lines = 0, width = 4;
	size_t i, max_tasks;

	term_size(&rows, &cols);
	if (w->lines_shown)
		printf("\033[%dA", w->lines_shown);
	out_duration(elapsed_ms(w), el, sizeof(el));
	snprintf(line, sizeof(line), "run %s  %s  %s  %s", w->run, w->flow, w->state, el);
	tty_line(line, cols);
	lines++;
	bar(b, w->done, w->total);
	snprintf(line, sizeof(line), "%s %ld/%ld tasks done  %ld failed  %ld running", b, w->done,
		 w->total, w->failed, w->running);
	tty_line(line, cols);
	lines++;
	for (i = 0; i < w->ntasks; i++) {
		int len = (int)strlen(w->tasks[i].name);
		if (len > width)
			width = len > NAME_COLS ? NAME_COLS : len;
	}
	max_tasks = rows > 4 ? (size_t)rows - 4 : 1;
	for (i = 0; i < w->ntasks; i++) {
		if (i == max_tasks && w->ntasks > max_tasks + 1) {
			snprintf(line, sizeof(line), "  ... %zu more tasks", w->ntasks - i);
			tty_line(line, cols);
			lines++;
			break;
		}
		out_clip(w->tasks[i].name, NAME_COLS, name, sizeof(name));
		task_text(&w->tasks[i], text, sizeof(text), 1);
		snprintf(line, sizeof(line), "  %-*s  %s", width, name, text);
		tty_line(line, cols);
		lines++;
	}
	printf("\033[J");
	fflush(stdout);
	w->lines_shown = lines;
}

/* Without a terminal: one line when the counts changed (or every QUIET_MS), and the last. */
static void show_plain(struct watch *w, int final)
{
	char line[4096], sig[256], text[256], el[32];
	int64_t now = sl_mono_ms();
	size_t i;
	int n;

	snprintf(sig, sizeof(sig), "%s %ld %ld %ld %ld", w->state, w->done, w->total, w->failed,
		 w->running);
	if (!final && !strcmp(sig, w->last_sig) && now - w->last_print < QUIET_MS)
		return;
	sl_strlcpy(w->last_sig, sig, sizeof(w->last_sig));
	w->last_print = now;
	out_duration(elapsed_ms(w), el, sizeof(el));
	n = snprintf(line, sizeof(line), "%s %ld/%ld tasks done, %ld failed, %ld running (%s)",
		     w->state, w->done, w->total, w->failed, w->running, el);
	for (i = 0; i < w->ntasks && n > 0 && (size_t)n < sizeof(line); i++) {
		if (i == PLAIN_TASKS) {
			snprintf(line + n, sizeof(line) - (size_t)n, " ... +%zu tasks",
				 w->ntasks - i);
			break;
		}
		task_text(&w->tasks[i], text, sizeof(text), 0);
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%s%s %s", i ? "; " : " | ",
			      w->tasks[i].name, text);
	}
	printf("%s\n", line);
	fflush(stdout);
}

static void show_json(struct watch *w, int final)
{
	json_t *o = json_object(), *tasks = json_array();
	char sig[256], *text = NULL;
	int64_t now = sl_mono_ms();
	size_t i;

	snprintf(sig, sizeof(sig), "%s %ld %ld %ld %ld", w->state, w->done, w->total, w->failed,
		 w->running);
	if (!final && !strcmp(sig, w->last_sig) && now - w->last_print < QUIET_MS)
		goto out;
	if (!o || !tasks)
		goto out;
	sl_strlcpy(w->last_sig, sig, sizeof(w->last_sig));
	w->last_print = now;
	json_object_set_new(o, "run_id", json_string(w->run));
	json_object_set_new(o, "flow", json_string(w->flow));
	json_object_set_new(o, "state", json_string(w->state));
	json_object_set_new(o, "done", json_integer(w->done));
	json_object_set_new(o, "total", json_integer(w->total));
	json_object_set_new(o, "failed", json_integer(w->failed));
	json_object_set_new(o, "running", json_integer(w->running));
	json_object_set_new(o, "elapsed_ms", json_integer(elapsed_ms(w)));
	for (i = 0; i < w->ntasks; i++) {
		const struct wtask *t = &w->tasks[i];
		json_t *to = json_object();
		if (!to)
			continue;
		json_object_set_new(to, "task", json_string(t->name));
		json_object_set_new(to, "state", json_string(t->state));
		json_object_set_new(to, "done", json_integer(t->done));
		json_object_set_new(to, "total", json_integer(t->total));
		json_object_set_new(to, "failed", json_integer(t->failed));
		json_object_set_new(to, "running", json_integer(t->running));
		json_array_append_new(tasks, to);
	}
	json_object_set(o, "tasks", tasks);
	json_object_set_new(o, "final", json_boolean(final));
	if (final && w->error[0])
		json_object_set_new(o, "error", json_string(w->error));
	if ((text = json_dumps(o, JSON_COMPACT)))
		printf("%s\n", text);
	fflush(stdout);
out:
	free(text);
	json_decref(tasks);
	json_decref(o);
}

static void show(struct watch *w, int final)
{
	if (w->json)
		show_json(w, final);
	else if (w->tty)
		show_tty(w);
	else
		show_plain(w, final);
}

/* Takes the run hash's fields into w; a new `tasks` list replaces the old one. */
static int take_run(struct watch *w, const redisReply *h)
{
	const char *tasks = cli_hash_get(h, "tasks");

	sl_strlcpy(w->flow, cli_hash_get(h, "flow") ? cli_hash_get(h, "flow") : "?",
		   sizeof(w->flow));
	sl_strlcpy(w->state, cli_hash_get(h, "state") ? cli_hash_get(h, "state") : "?",
		   sizeof(w->state));
	sl_strlcpy(w->error, cli_hash_get(h, "error") ? cli_hash_get(h, "error") : "",
		   sizeof(w->error));
	w->done = (long)out_int(cli_hash_get(h, "tasks_done"), 0);
	w->total = (long)out_int(cli_hash_get(h, "tasks_total"), 0);
	w->failed = (long)out_int(cli_hash_get(h, "tasks_failed"), 0);
	w->created_ms = out_int(cli_hash_get(h, "created_ms"), 0);
	w->ended_ms = out_int(cli_hash_get(h, "ended_ms"), 0);
	if (!w->order_text && tasks && *tasks && set_tasks(w, tasks) < 0) {
		fprintf(stderr, "sluice: out of memory\n");
		return CLI_FAILED;
	}
	return CLI_OK;
}

static int parse_args(struct cli *cli, int argc, char **argv, const char **run,
		      long *interval_ms, long *timeout_ms)
{
	static const struct cli_opt opts[] = {
		{"interval", 'i', 1, OPT_INTERVAL},
		{"timeout", 0, 1, OPT_TIMEOUT},
		{NULL, 0, 0, 0},
	};
	struct cli_args a;
	int id;

	cli_args_init(&a, argc, argv, "watch");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		switch (id) {
		case CLI_ARG_ERROR:
			return CLI_USAGE;
		case CLI_ARG_HELP:
			help_command("watch", stdout);
			return -1;
		case CLI_ARG_WORD:
			if (*run)
				return cli_usage_error("watch", "one run at a time");
			*run = a.arg;
			break;
		case OPT_INTERVAL:
			if (sl_parse_duration_ms(a.arg, interval_ms) != SL_OK ||
			    *interval_ms < 100 || *interval_ms > 3600000)
				return cli_usage_error("watch",
						       "--interval wants a duration from 100ms to "
						       "1h, got \"%s\"",
						       a.arg);
			break;
		case OPT_TIMEOUT:
			if (sl_parse_duration_ms(a.arg, timeout_ms) != SL_OK || *timeout_ms <= 0)
				return cli_usage_error("watch",
						       "--timeout wants a duration like 30s, 10m, "
						       "2h, got \"%s\"",
						       a.arg);
			break;
		}
	}
	if (!*run)
		return cli_usage_error("watch", "which run? (sluice runs lists them)");
	if (cli_check_run_id("watch", *run) < 0)
		return CLI_USAGE;
	return CLI_OK;
}

int cmd_watch(struct cli *cli, int argc, char **argv)
{
	struct watch w;
	struct sl_state *st = NULL;
	struct sigaction sa, old;
	redisReply *h = NULL;
	const char *run = NULL;
	char key[CLI_KEY_MAX], el[32];
	long interval_ms = 0, timeout_ms = 0;
	int64_t started = sl_mono_ms();
	int rc, hops = 0, sig_set = 0;

	memset(&w, 0, sizeof(w));
	if ((rc = parse_args(cli, argc, argv, &run, &interval_ms, &timeout_ms)) != CLI_OK) {
		if (rc < 0)
			rc = CLI_OK; /* --help */
		goto out;
	}
	sl_strlcpy(w.run, run, sizeof(w.run));
	w.json = cli->json;
	w.tty = !w.json && isatty(STDOUT_FILENO);
	if (!interval_ms)
		interval_ms = w.tty ? 500 : 1000;
	if (!(st = cli_redis_connect(cli))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, NULL, &old);
	if (old.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	sig_set = 1;
	cli_run_key(key, sizeof(key), w.run, "run");
	for (;;) {
		redisContext *c;
		int64_t now;
		int code;

		if (interrupted) {
			fprintf(stderr, "stopped watching; run %s goes on\n", w.run);
			rc = 130;
			goto out;
		}
		if (!(h = cli_redis_check(sl_state_command(st, "HGETALL %s", key), "HGETALL"))) {
			rc = CLI_UNREACHABLE;
			goto out;
		}
		now = sl_mono_ms();
		if (cli_hash_len(h) == 0) {
			if (hops > 0 || now - started >= START_GRACE_MS) {
				fprintf(stderr, "sluice watch: no run %s\n", w.run);
				rc = CLI_USAGE;
				goto out;
			}
			/* just submitted: the planner has not recorded it yet */
		} else if (cli_hash_get(h, "state") &&
			   !strcmp(cli_hash_get(h, "state"), "DUPLICATE")) {
			const char *dup = cli_hash_get(h, "dup_of");
			if (!dup || !*dup || strlen(dup) > CLI_NAME_MAX || ++hops > MAX_DUP_HOPS ||
			    cli_run_key(key, sizeof(key), dup, "run") < 0) {
				fprintf(stderr, "sluice: run %s is a duplicate of an unknown run\n",
					w.run);
				rc = CLI_FAILED;
				goto out;
			}
			if (!w.json)
				printf("run %s is a duplicate of %s; watching that\n", w.run, dup);
			sl_strlcpy(w.run, dup, sizeof(w.run));
			free_tasks(&w);
			freeReplyObject(h);
			h = NULL;
			continue;
		} else {
			if ((rc = take_run(&w, h)) != CLI_OK)
				goto out;
			code = cli_exit_for_state(w.state);
			if (w.ntasks) {
				if (!(c = sl_state_redis(st))) {
					fprintf(stderr, "sluice: lost the connection to Redis\n");
					rc = CLI_UNREACHABLE;
					goto out;
				}
				if ((rc = read_nodes(c, &w)) != CLI_OK ||
				    (rc = read_instances(c, &w)) != CLI_OK)
					goto out;
			}
			show(&w, code >= 0);
			if (code >= 0) {
				rc = code;
				if (!w.json) {
					out_duration(elapsed_ms(&w), el, sizeof(el));
					if (code == CLI_OK)
						printf("run %s SUCCEEDED in %s\n", w.run, el);
					else
						printf("run %s %s: %s\n", w.run, w.state,
						       w.error[0] ? w.error : "(no reason given)");
				}
				goto out;
			}
		}
		if (timeout_ms > 0 && now - started >= timeout_ms) {
			out_duration(timeout_ms, el, sizeof(el));
			fprintf(stderr,
				"sluice: timed out after %s watching run %s (state %s); it goes on\n",
				el, w.run, w.state[0] ? w.state : "not recorded");
			rc = CLI_TIMEOUT;
			goto out;
		}
		freeReplyObject(h);
		h = NULL;
		cli_sleep_ms(interval_ms);
	}
out:
	fflush(stdout);
	if (sig_set)
		sigaction(SIGINT, &old, NULL);
	if (h)
		freeReplyObject(h);
	free_tasks(&w);
	sl_state_destroy(st);
	return rc;
}
