/* watcher.h - the parts of sluice-watcher (config, flows, inotify, scan, publish, cursor). */
#ifndef SLUICE_WATCHER_H
#define SLUICE_WATCHER_H

#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice/config.h"
#include "sluice/err.h"

#define WATCHER_SHA_HEX 65    /* 64 hex digits + NUL */
#define WATCHER_ID_MAX 64     /* run and trace ids (sl_id_new needs prefix + 25) */
#define WATCHER_FLOW_NAME_MAX 200
#define WATCHER_MAX_FLOWS 1024 /* flow files read from flows-dir */
#define WATCHER_MAX_PENDING 1024 /* run requests published but not yet recorded */
#define WATCHER_TOPIC_PARTITIONS 8
#define WATCHER_BACKOFF_MIN_MS 1000L
#define WATCHER_BACKOFF_MAX_MS 30000L

/* ---- config.c ---- */

struct watcher_config {
	char *kafka_brokers;
	char *redis_url;
	char *flows_dir;
	char *base_dir;
	long scan_interval_ms; /* 0: inotify, full scans only at start and after overflow */
	long settle_ms;
	char *log_level;
	long max_file_size;
	char *http; /* health/metrics listen address, "" = off */
};

extern const struct sl_config_entry watcher_config_table[];

/* Checks values the table cannot (ranges). Returns SL_ERR_CONFIG and fills errstr. */
enum sl_err watcher_config_check(const struct watcher_config *cfg, char *errstr, size_t errlen);

/* ---- flows.c ---- */

/* One watched directory; several flows may share it. */
struct watcher_dir {
	char path[PATH_MAX]; /* absolute, symlinks resolved once at load */
	int fd;              /* O_DIRECTORY handle, -1 while the directory is unavailable */
	int wd;              /* inotify watch, -1 when none */
};

struct watcher_flow {
	struct sl_flow *flow; /* owned */
	size_t dir;           /* index into watcher_flows.dirs */
};

struct watcher_flows {
	struct watcher_flow *flows;
	size_t nflows;
	struct watcher_dir *dirs;
	size_t ndirs;
};

/* Loads every *.yaml / *.yml in cfg->flows_dir, keeps the flows with a file trigger and
 * opens (creating if missing) their directories; relative trigger dirs resolve against
 * cfg->base_dir. A bad flow file is logged and skipped; a directory that cannot be opened
 * is logged and left with fd -1 for watcher_flows_reopen(). Returns NULL and fills errstr
 * only when flows_dir itself cannot be read. Caller frees with watcher_flows_destroy(). */
struct watcher_flows *watcher_flows_load(const struct watcher_config *cfg, char *errstr,
					 size_t errlen);

/* (Re)opens dirs[i] (creating it if missing) after closing its old handle. Returns SL_OK,
 * or SL_ERR_IO after logging why. */
enum sl_err watcher_flows_reopen(struct watcher_flows *fl, size_t i);

/* Returns 1 when the open directory d was deleted, or its path no longer leads to it
 * (moved away, replaced). inotify does not report a deletion while we hold the directory
 * open, and polling mode has no inotify at all, so the main loop asks now and then. */
int watcher_dir_gone(const struct watcher_dir *d);

/* Closes the directories and frees the flows. Accepts NULL. Inotify watches must have been
 * removed by the caller. */
void watcher_flows_destroy(struct watcher_flows *fl);

/* ---- inotify.c ---- */

struct watcher_inotify;

/* Called for each IN_CLOSE_WRITE / IN_MOVED_TO of a non-directory in dirs[dir]. */
typedef void(watcher_event_cb)(void *ud, size_t dir, const char *name);

/* Returns NULL and fills errstr when inotify is not available. */
struct watcher_inotify *watcher_inotify_new(char *errstr, size_t errlen);

/* The descriptor to poll for POLLIN. */
int watcher_inotify_fd(const struct watcher_inotify *in);

/* Watches every dirs[i] with fd >= 0 and wd < 0. Returns the number of directories that
 * could not be watched (logged), which the caller retries later. */
size_t watcher_inotify_watch_all(struct watcher_inotify *in, struct watcher_flows *fl);

/* Removes the watch of d (wd back to -1), if any. */
void watcher_inotify_unwatch(struct watcher_inotify *in, struct watcher_dir *d);

/* Removes every watch of fl (wd back to -1). */
void watcher_inotify_unwatch_all(struct watcher_inotify *in, struct watcher_flows *fl);

/* Reads the pending events without blocking and calls on_file for each candidate event.
 * Sets *overflow when the kernel queue overflowed (events were lost: rescan everything).
 * A directory that vanished gets fd/wd -1 and sets *lost. */
void watcher_inotify_read(struct watcher_inotify *in, struct watcher_flows *fl,
			  watcher_event_cb *on_file, void *ud, int *overflow, int *lost);

/* Closes the descriptor. Accepts NULL. */
void watcher_inotify_destroy(struct watcher_inotify *in);

/* ---- cursor.c ---- */

struct watcher_cursor;

/* Creates the cursor store; the Redis connection is made lazily, with backoff, so a Redis
 * that is down at start is not an error. url is copied. Returns NULL only without memory. */
struct watcher_cursor *watcher_cursor_new(const char *url);

/* Looks up content sha256 of flow. Returns SL_OK and copies the run id into run (cap
 * bytes) when it was processed, SL_ERR_NOT_FOUND when not, SL_ERR_REDIS when Redis cannot
 * answer now (logged once per outage). */
enum sl_err watcher_cursor_lookup(struct watcher_cursor *c, const char *flow, const char *sha,
				  char *run, size_t cap);

/* Records that content sha256 of flow started run. SL_OK or SL_ERR_REDIS. */
enum sl_err watcher_cursor_record(struct watcher_cursor *c, const char *flow, const char *sha,
				  const char *run);

/* Closes the connection. Accepts NULL. */
void watcher_cursor_destroy(struct watcher_cursor *c);

/* ---- publish.c ---- */

struct watcher_publisher;

/* What one regular file gave: everything a RunRequest needs besides the flow. */
struct watcher_file {
	const char *path; /* absolute */
	const char *name; /* basename */
	int64_t size;
	char sha[WATCHER_SHA_HEX];
};

/* Creates the idempotent producer. cursor is borrowed. Returns NULL and fills errstr. */
struct watcher_publisher *watcher_publisher_new(const char *brokers,
						struct watcher_cursor *cursor, char *errstr,
						size_t errlen);

enum watcher_outcome {
	WATCHER_PUBLISHED, /* a RunRequest was queued; run is its id */
	WATCHER_IN_FLIGHT, /* same content already published, not recorded yet; run is its id */
	WATCHER_RECORDED,  /* the cursor holds the content: already processed by run */
	WATCHER_DROPPED,   /* no request can be built for it (logged); never retried */
};

/* Starts a run of flow for file unless its content was already processed (cursor) or a
 * request for it is in flight. Returns SL_OK and sets *outcome (and run, cap bytes), or a
 * retriable error (SL_ERR_REDIS, SL_ERR_KAFKA, SL_ERR_BUSY when too many requests are in
 * flight): the caller rescans later. Logs what it published, not the duplicates. */
enum sl_err watcher_publish(struct watcher_publisher *p, const char *flow,
			    const struct watcher_file *file, enum watcher_outcome *outcome,
			    char *run, size_t cap);

/* Serves delivery reports (up to timeout_ms) and records the delivered requests in the
 * cursor. Returns -1 when some request failed or could not be recorded yet (rescan; the
 * unrecorded ones are retried by the next call), else the number recorded. */
int watcher_publisher_service(struct watcher_publisher *p, int timeout_ms);

/* Number of requests published and not yet recorded. */
size_t watcher_publisher_pending(const struct watcher_publisher *p);

/* Flushes the producer (up to timeout_ms), records what was delivered and destroys.
 * Accepts NULL. */
void watcher_publisher_destroy(struct watcher_publisher *p, int timeout_ms);

/* ---- scan.c ---- */

struct watcher_scanner;

/* Creates the scanner: the per-inode memo of hashes and the schedule of rescans. cfg, pub
 * and stop (main's shutdown flag: a long scan ends early) are borrowed. Returns NULL only
 * without memory. */
struct watcher_scanner *watcher_scanner_new(const struct watcher_config *cfg,
					    struct watcher_publisher *pub,
					    const volatile sig_atomic_t *stop);

/* Returns 1 when name may be a trigger file at all: not hidden (".x") and not a temporary
 * name ("*.tmp", "*.part", "*.swp", "*~"). */
int watcher_name_is_candidate(const char *name);

/* Handles one name in dirs[dir]. from_event is 1 when inotify reported the file complete
 * (IN_CLOSE_WRITE / IN_MOVED_TO), 0 when a scan found it (it must then look settled). */
void watcher_scan_file(struct watcher_scanner *s, struct watcher_flows *fl, size_t dir,
		       const char *name, int from_event);

/* Lists every directory of fl and handles each name. */
void watcher_scan_all(struct watcher_scanner *s, struct watcher_flows *fl);

/* Asks for a full scan in delay_ms (the earliest request wins). */
void watcher_scanner_schedule(struct watcher_scanner *s, long delay_ms);

/* Asks for a full scan after the retry backoff (doubling up to WATCHER_BACKOFF_MAX_MS). */
void watcher_scanner_retry_later(struct watcher_scanner *s);

/* Resets the retry backoff: requests are getting through again. */
void watcher_scanner_succeeded(struct watcher_scanner *s);

/* Returns 1 when a scheduled scan is due now (and clears the schedule). */
int watcher_scanner_due(struct watcher_scanner *s);

/* Milliseconds until the next scheduled scan, or -1 when none. */
long watcher_scanner_wait_ms(const struct watcher_scanner *s);

/* Forgets which files are fully processed or skipped (hashes are kept): after a reload the
 * flows, and so the answers, may differ. */
void watcher_scanner_forget(struct watcher_scanner *s);

/* Frees the memo. Accepts NULL. */
void watcher_scanner_destroy(struct watcher_scanner *s);

#endif
