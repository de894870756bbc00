/* main.c - sluice-watcher: turns files dropped in trigger directories into RunRequests. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice/health.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "watcher.h"

#define LOOP_TICK_MS 200
#define SHUTDOWN_FLUSH_MS 10000
#define FALLBACK_SCAN_MS 5000 /* polling interval when inotify cannot be used */
#define DIR_CHECK_MS 1000

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

/* Sleeps up to ms; a signal cuts it short. */
static void nap(long ms)
{
	poll(NULL, 0, (int)ms);
}

/* Everything the loop holds; lives on main's stack. */
struct watcher {
	struct watcher_config cfg;
	struct watcher_flows *flows;
	struct watcher_inotify *ino; /* NULL in polling mode */
	struct watcher_cursor *cursor;
	struct watcher_publisher *pub;
	struct watcher_scanner *scanner;
	long poll_ms;       /* > 0: polling mode */
	int64_t next_poll;  /* monotonic ms */
	int64_t repair_at;  /* monotonic ms of the next attempt to reopen/rewatch dirs, 0 = none */
	long repair_backoff;
	int64_t next_dir_check; /* monotonic ms */
	struct sl_health *health; /* /healthz, /readyz, /metrics */
	struct sl_metric *m_recorded, *m_scans, *m_reloads, *m_flows, *m_dirs, *m_dirs_broken,
		*m_polling;
};

static void register_metrics(struct watcher *w)
{
	w->m_recorded = sl_health_counter(w->health, "sluice_watcher_files_recorded_total",
					  "Files whose RunRequest was delivered and recorded.");
	w->m_scans = sl_health_counter(w->health, "sluice_watcher_scans_total",
				       "Full scans of the trigger directories.");
	w->m_reloads = sl_health_counter(w->health, "sluice_watcher_reloads_total",
					 "SIGHUP reloads of the flows.");
	w->m_flows = sl_health_gauge(w->health, "sluice_watcher_flows",
				     "Flows with a file trigger being watched.");
	w->m_dirs = sl_health_gauge(w->health, "sluice_watcher_dirs", "Trigger directories.");
	w->m_dirs_broken = sl_health_gauge(w->health, "sluice_watcher_dirs_unwatched",
					   "Trigger directories that cannot be opened or watched "
					   "right now (retried with backoff).");
	w->m_polling = sl_health_gauge(w->health, "sluice_watcher_polling",
				       "1 in polling mode, 0 with inotify.");
}

static void update_gauges(struct watcher *w)
{
	int64_t broken = 0;

	for (size_t i = 0; w->flows && i < w->flows->ndirs; i++)
		broken += w->flows->dirs[i].fd < 0 || (w->ino && w->flows->dirs[i].wd < 0);
	sl_metric_set(w->m_flows, w->flows ? (int64_t)w->flows->nflows : 0);
	sl_metric_set(w->m_dirs, w->flows ? (int64_t)w->flows->ndirs : 0);
	sl_metric_set(w->m_dirs_broken, broken);
	sl_metric_set(w->m_polling, w->ino ? 0 : 1);
}

static void on_event(void *ud, size_t dir, const char *name)
{
	struct watcher *w = ud;

	watcher_scan_file(w->scanner, w->flows, dir, name, 1);
}

/* Topic creation is retried until Kafka answers: a watcher started before its broker waits. */
static int ensure_topic(const struct watcher *w)
{
	const char *topics[] = {SL_TOPIC_RUNS_REQUESTED};
	long backoff = WATCHER_BACKOFF_MIN_MS;
	char errstr[256];

	while (!stop_requested) {
		if (sl_kafka_topics_ensure(w->cfg.kafka_brokers, topics, 1,
					   WATCHER_TOPIC_PARTITIONS, errstr,
					   sizeof(errstr)) == SL_OK)
			return 1;
		SL_WARN("cannot ensure topic %s: %s (retrying in %ld ms)", SL_TOPIC_RUNS_REQUESTED,
			errstr, backoff);
		nap(backoff);
		backoff = backoff * 2 > WATCHER_BACKOFF_MAX_MS ? WATCHER_BACKOFF_MAX_MS : backoff * 2;
	}
	return 0;
}

/* Reopens directories that vanished and watches the unwatched ones; a full scan follows
 * any success, since files may have arrived while nothing was watching. */
static void repair_dirs(struct watcher *w)
{
	size_t broken = 0, fixed = 0;

	for (size_t i = 0; i < w->flows->ndirs; i++) {
		if (w->flows->dirs[i].fd >= 0)
			continue;
		if (watcher_flows_reopen(w->flows, i) == SL_OK)
			fixed++;
		else
			broken++;
	}
	if (w->ino) {
		size_t before = 0;
		for (size_t i = 0; i < w->flows->ndirs; i++)
			before += w->flows->dirs[i].wd < 0;
		broken = watcher_inotify_watch_all(w->ino, w->flows);
		fixed += before - broken;
	}
	if (fixed)
		watcher_scanner_schedule(w->scanner, 0);
	if (!broken) {
		w->repair_at = 0;
		w->repair_backoff = WATCHER_BACKOFF_MIN_MS;
		return;
	}
	w->repair_at = sl_mono_ms() + w->repair_backoff;
	w->repair_backoff = w->repair_backoff * 2 > WATCHER_BACKOFF_MAX_MS
				    ? WATCHER_BACKOFF_MAX_MS
				    : w->repair_backoff * 2;
}

/* Notices trigger directories deleted or replaced under us and hands them to repair_dirs(). */
static void check_dirs(struct watcher *w)
{
	for (size_t i = 0; i < w->flows->ndirs; i++) {
		struct watcher_dir *d = &w->flows->dirs[i];

		if (!watcher_dir_gone(d))
			continue;
		SL_WARN("trigger dir %s was removed or moved away; recreating it", d->path);
		if (w->ino)
			watcher_inotify_unwatch(w->ino, d);
		close(d->fd);
		d->fd = -1;
		w->repair_at = sl_mono_ms();
		w->repair_backoff = WATCHER_BACKOFF_MIN_MS;
	}
}

/* SIGHUP: the new flow set replaces the old one only if flows-dir could be read. */
static void reload(struct watcher *w)
{
	struct watcher_flows *fl;
	char errstr[512];

	SL_INFO("SIGHUP: reloading flows from %s", w->cfg.flows_dir);
	if (!(fl = watcher_flows_load(&w->cfg, errstr, sizeof(errstr)))) {
		SL_ERROR("reload failed, keeping the current flows: %s", errstr);
		return;
	}
	if (w->ino)
		watcher_inotify_unwatch_all(w->ino, w->flows);
	watcher_flows_destroy(w->flows);
	w->flows = fl;
	watcher_scanner_forget(w->scanner);
	w->repair_backoff = WATCHER_BACKOFF_MIN_MS;
	repair_dirs(w);
	watcher_scanner_schedule(w->scanner, 0);
}

static int next_timeout(const struct watcher *w)
{
	long t = LOOP_TICK_MS;
	long scan = watcher_scanner_wait_ms(w->scanner);

	if (scan >= 0 && scan < t)
		t = scan;
	return (int)t;
}

static void run(struct watcher *w)
{
	while (!stop_requested) {
		struct pollfd pfd = {.fd = w->ino ? watcher_inotify_fd(w->ino) : -1,
				     .events = POLLIN};
		int overflow = 0, lost = 0, recorded;
		int n = poll(&pfd, 1, next_timeout(w));

		if (n < 0 && errno != EINTR)
			SL_ERROR("poll: %s", strerror(errno));
		if (stop_requested)
			break;
		if (reload_requested) {
			reload_requested = 0;
			reload(w);
			sl_metric_inc(w->m_reloads);
		}
		if (w->ino && n > 0 && (pfd.revents & POLLIN)) {
			watcher_inotify_read(w->ino, w->flows, on_event, w, &overflow, &lost);
			if (overflow)
				watcher_scanner_schedule(w->scanner, 0);
			if (lost) {
				w->repair_at = sl_mono_ms();
				w->repair_backoff = WATCHER_BACKOFF_MIN_MS;
			}
		}
		if (sl_mono_ms() >= w->next_dir_check) {
			w->next_dir_check = sl_mono_ms() + DIR_CHECK_MS;
			check_dirs(w);
		}
		if (w->repair_at && sl_mono_ms() >= w->repair_at)
			repair_dirs(w);
		if (w->poll_ms > 0 && sl_mono_ms() >= w->next_poll) {
			w->next_poll = sl_mono_ms() + w->poll_ms;
			watcher_scanner_schedule(w->scanner, 0);
		}
		if (watcher_scanner_due(w->scanner)) {
			watcher_scan_all(w->scanner, w->flows);
			sl_metric_inc(w->m_scans);
		}
		recorded = watcher_publisher_service(w->pub, 0);
		if (recorded < 0)
			watcher_scanner_retry_later(w->scanner);
		else if (recorded > 0)
			watcher_scanner_succeeded(w->scanner);
		if (recorded > 0)
			sl_metric_add(w->m_recorded, recorded);
		update_gauges(w);
	}
}

int main(int argc, char **argv)
{
	struct watcher w;
	enum sl_err err;
	char errstr[512];
	int status = 1;

	memset(&w, 0, sizeof(w));
	err = sl_config_load(watcher_config_table, &w.cfg, argc, argv, NULL, 0, NULL, errstr,
			     sizeof(errstr));
	if (err == SL_ERR_CANCELLED) {
		status = 0; /* --help */
		goto out;
	}
	if (err == SL_OK)
		err = watcher_config_check(&w.cfg, errstr, sizeof(errstr));
	if (err != SL_OK) {
		fprintf(stderr, "sluice-watcher: %s\n", errstr);
		status = (int)err;
		goto out;
	}
	sl_log_init("watcher", sl_log_level_parse(w.cfg.log_level));
	install_signals();
	w.repair_backoff = WATCHER_BACKOFF_MIN_MS;
	if (!(w.health = sl_health_new(w.cfg.http, "watcher", errstr, sizeof(errstr)))) {
		SL_ERROR("%s", errstr);
		status = SL_ERR_CONFIG;
		goto out;
	}
	register_metrics(&w);

	if (!(w.flows = watcher_flows_load(&w.cfg, errstr, sizeof(errstr)))) {
		SL_ERROR("%s", errstr);
		status = SL_ERR_IO;
		goto out;
	}
	if (!ensure_topic(&w)) {
		status = 0; /* stopped while waiting for Kafka */
		goto out;
	}
	if (!(w.cursor = watcher_cursor_new(w.cfg.redis_url))) {
		SL_ERROR("out of memory");
		status = SL_ERR_NOMEM;
		goto out;
	}
	if (!(w.pub = watcher_publisher_new(w.cfg.kafka_brokers, w.cursor, errstr,
					    sizeof(errstr)))) {
		SL_ERROR("cannot create the Kafka producer: %s", errstr);
		status = SL_ERR_CONFIG;
		goto out;
	}
	if (!(w.scanner = watcher_scanner_new(&w.cfg, w.pub, &stop_requested))) {
		SL_ERROR("out of memory");
		status = SL_ERR_NOMEM;
		goto out;
	}
	w.poll_ms = w.cfg.scan_interval_ms;
	if (w.poll_ms == 0 && !(w.ino = watcher_inotify_new(errstr, sizeof(errstr)))) {
		SL_WARN("%s: polling every %d ms instead", errstr, FALLBACK_SCAN_MS);
		w.poll_ms = FALLBACK_SCAN_MS;
	}
	repair_dirs(&w); /* watches before the first scan, so nothing falls in between */
	watcher_scanner_schedule(w.scanner, 0);
	SL_INFO("watcher started: %zu flow(s), %s", w.flows->nflows,
		w.ino ? "inotify" : "polling");
	update_gauges(&w);
	sl_health_set_ready(w.health, 1);
	run(&w);
	sl_health_set_ready(w.health, 0);
	SL_INFO("stopping: flushing run requests");
	status = 0;
out:
	watcher_publisher_destroy(w.pub, SHUTDOWN_FLUSH_MS);
	watcher_scanner_destroy(w.scanner);
	watcher_cursor_destroy(w.cursor);
	if (w.ino && w.flows)
		watcher_inotify_unwatch_all(w.ino, w.flows);
	watcher_inotify_destroy(w.ino);
	watcher_flows_destroy(w.flows);
	sl_health_destroy(w.health);
	sl_config_free(watcher_config_table, &w.cfg);
	return status;
}
