/* scan.c - which names count, the O_NOFOLLOW open + SHA-256 of a file, and full directory scans. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/flow.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "watcher.h"

#define CHUNK (64 * 1024)
#define MEMO_MIN 1024
#define MEMO_MAX 65536 /* entries; a full memo is cleared (it is only a cache) */

enum memo_kind {
	MEMO_EMPTY = 0,
	MEMO_SEEN,    /* observed, not taken yet (not settled) */
	MEMO_HASHED,  /* content hashed: sha is valid for these stats */
	MEMO_SKIPPED, /* not a trigger file (reported once) until its stats change */
};

/* What the scanner knows of one inode, valid while its size, mtime and ctime stay the same
 * (any write or chmod changes ctime), so polling never re-reads an unchanged file. */
struct memo_entry {
	enum memo_kind kind;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
	int64_t seen_ms; /* monotonic time these stats were first observed */
	int done;        /* MEMO_HASHED and every matching flow's cursor holds it */
	char sha[WATCHER_SHA_HEX];
};

struct watcher_scanner {
	const struct watcher_config *cfg;
	struct watcher_publisher *pub;
	const volatile sig_atomic_t *stop; /* borrowed: a long scan ends early on shutdown */
	struct memo_entry *memo;
	size_t cap;
	size_t used;
	int64_t scan_at; /* monotonic ms of the next full scan, 0 = none */
	long backoff_ms;
	int failed; /* a retriable failure was scheduled since the last full scan started */
	size_t n_new, n_dup; /* runs requested / duplicates found by the current full scan */
	unsigned char buf[CHUNK];
};

enum hash_result {
	HASH_OK,
	HASH_SKIP,    /* not a trigger file after all; reported */
	HASH_CHANGED, /* modified while read: try again once it settles */
	HASH_RETRY,   /* transient I/O error; reported */
};

struct watcher_scanner *watcher_scanner_new(const struct watcher_config *cfg,
					    struct watcher_publisher *pub,
					    const volatile sig_atomic_t *stop)
{
	struct watcher_scanner *s = calloc(1, sizeof(*s));

	if (!s || !(s->memo = calloc(MEMO_MIN, sizeof(*s->memo)))) {
		free(s);
		return NULL;
	}
	s->cap = MEMO_MIN;
	s->cfg = cfg;
	s->pub = pub;
	s->stop = stop;
	s->backoff_ms = WATCHER_BACKOFF_MIN_MS;
	return s;
}

void watcher_scanner_destroy(struct watcher_scanner *s)
{
	if (!s)
		return;
	free(s->memo);
	free(s);
}

/* ---- names ---- */

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n >= k && !strcasecmp(name + n - k, suffix);
}

int watcher_name_is_candidate(const char *name)
{
	size_t n = strlen(name);

	if (!n || name[0] == '.' || name[n - 1] == '~')
		return 0;
	return !has_suffix(name, ".tmp") && !has_suffix(name, ".part") &&
	       !has_suffix(name, ".swp");
}

static const char *flow_glob(const struct sl_flow *flow)
{
	return flow->trigger_glob && *flow->trigger_glob ? flow->trigger_glob : "*";
}

static int any_flow_matches(const struct watcher_flows *fl, size_t dir, const char *name)
{
	for (size_t i = 0; i < fl->nflows; i++)
		if (fl->flows[i].dir == dir && !fnmatch(flow_glob(fl->flows[i].flow), name, 0))
			return 1;
	return 0;
}

/* ---- schedule ---- */

void watcher_scanner_schedule(struct watcher_scanner *s, long delay_ms)
{
	int64_t at = sl_mono_ms() + (delay_ms > 0 ? delay_ms : 0);

	if (!s->scan_at || at < s->scan_at)
		s->scan_at = at;
}

void watcher_scanner_retry_later(struct watcher_scanner *s)
{
	if (s->failed)
		return; /* one backoff step per scan, however many files failed in it */
	s->failed = 1;
	watcher_scanner_schedule(s, s->backoff_ms);
	SL_DEBUG("full scan scheduled in %ld ms (retry)", s->backoff_ms);
	s->backoff_ms = s->backoff_ms * 2 > WATCHER_BACKOFF_MAX_MS ? WATCHER_BACKOFF_MAX_MS
								   : s->backoff_ms * 2;
}

void watcher_scanner_succeeded(struct watcher_scanner *s)
{
	if (!s->failed)
		s->backoff_ms = WATCHER_BACKOFF_MIN_MS;
}

int watcher_scanner_due(struct watcher_scanner *s)
{
	if (!s->scan_at || sl_mono_ms() < s->scan_at)
		return 0;
	s->scan_at = 0;
	return 1;
}

long watcher_scanner_wait_ms(const struct watcher_scanner *s)
{
	int64_t left;

	if (!s->scan_at)
		return -1;
	left = s->scan_at - sl_mono_ms();
	return left > 0 ? (long)left : 0;
}

/* ---- memo ---- */

static size_t memo_slot(const struct memo_entry *memo, size_t cap, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)dev * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)ino * 0xff51afd7ed558ccdULL);
	size_t i = (size_t)(h ^ (h >> 29)) & (cap - 1);

	while (memo[i].kind != MEMO_EMPTY && (memo[i].dev != dev || memo[i].ino != ino))
		i = (i + 1) & (cap - 1);
	return i;
}

/* Makes room for one more entry: doubles the table up to MEMO_MAX, then starts over. */
static void memo_reserve(struct watcher_scanner *s)
{
	struct memo_entry *bigger;
	size_t cap = s->cap * 2;

	if ((s->used + 1) * 4 < s->cap * 3)
		return;
	if (cap > MEMO_MAX || !(bigger = calloc(cap, sizeof(*bigger)))) {
		SL_DEBUG("file memo full (%zu entries): cleared", s->used);
		memset(s->memo, 0, s->cap * sizeof(*s->memo));
		s->used = 0;
		return;
	}
	for (size_t i = 0; i < s->cap; i++)
		if (s->memo[i].kind != MEMO_EMPTY)
			bigger[memo_slot(bigger, cap, s->memo[i].dev, s->memo[i].ino)] = s->memo[i];
	free(s->memo);
	s->memo = bigger;
	s->cap = cap;
}

static int same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int same_stats(const struct memo_entry *m, const struct stat *st)
{
	return m->size == st->st_size && same_time(&m->mtime, &st->st_mtim) &&
	       same_time(&m->ctime, &st->st_ctim);
}

/* Returns the entry of st's inode; a new one, or one whose stats changed, is MEMO_SEEN. */
static struct memo_entry *memo_get(struct watcher_scanner *s, const struct stat *st)
{
	struct memo_entry *m = &s->memo[memo_slot(s->memo, s->cap, st->st_dev, st->st_ino)];

	if (m->kind == MEMO_EMPTY) {
		memo_reserve(s);
		m = &s->memo[memo_slot(s->memo, s->cap, st->st_dev, st->st_ino)];
		s->used++;
	} else if (same_stats(m, st)) {
		return m;
	}
	memset(m, 0, sizeof(*m));
	m->kind = MEMO_SEEN;
	m->dev = st->st_dev;
	m->ino = st->st_ino;
	m->size = st->st_size;
	m->mtime = st->st_mtim;
	m->ctime = st->st_ctim;
	m->seen_ms = sl_mono_ms();
	return m;
}

/* A file found by a scan is taken once it looks finished: last modified at least settle-time
 * ago, or seen unchanged for that long (clock-skewed network file systems). Otherwise a
 * rescan is scheduled for when it would be. */
static int settled(struct watcher_scanner *s, const struct memo_entry *m)
{
	long settle = s->cfg->settle_ms;
	int64_t age_wall = sl_now_ms() - ((int64_t)m->mtime.tv_sec * 1000 + m->mtime.tv_nsec / 1000000);
	int64_t age_seen = sl_mono_ms() - m->seen_ms;

	if (age_wall >= settle || age_seen >= settle)
		return 1;
	watcher_scanner_schedule(s, settle - age_seen);
	return 0;
}

/* ---- one file ---- */

static const char *kind_of(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symlink";
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a fifo";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "a device";
	return "not a regular file";
}

/* Reports a name that is not a trigger file, once per inode and stats. */
static void skip(struct watcher_scanner *s, const struct stat *st, const char *path,
		 const char *why)
{
	struct memo_entry *m = memo_get(s, st);

	if (m->kind == MEMO_SKIPPED) {
		SL_DEBUG("%s skipped again: %s", path, why);
		return;
	}
	m->kind = MEMO_SKIPPED;
	SL_WARN("%s skipped: %s", path, why);
}

/* Streams the content of the open file fd through SHA-256 (at most max bytes). */
static enum hash_result hash_fd(struct watcher_scanner *s, int fd, const char *path,
				char *hex, int64_t *size)
{
	enum hash_result res = HASH_RETRY;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int64_t total = 0;

	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		SL_ERROR("%s: cannot start SHA-256", path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, s->buf, sizeof(s->buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			SL_WARN("%s: read failed: %s (retrying later)", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		total += n;
		if (total > s->cfg->max_file_size) {
			res = HASH_CHANGED; /* it grew past the cap while read: look again later */
			goto out;
		}
		if (EVP_DigestUpdate(ctx, s->buf, (size_t)n) != 1)
			goto out;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)
		goto out;
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + i * 2, 3, "%02x", md[i]);
	*size = total;
	res = HASH_OK;
out:
	EVP_MD_CTX_free(ctx);
	return res;
}

/* Publishes file for every flow of dir whose glob matches it. Returns 1 when every one of
 * them had already processed this content (nothing left to do while it stays unchanged). */
static int publish_all(struct watcher_scanner *s, struct watcher_flows *fl, size_t dir,
		       const struct watcher_file *file, int from_event)
{
	int all_recorded = 1;

	for (size_t i = 0; i < fl->nflows; i++) {
		const struct sl_flow *flow = fl->flows[i].flow;
		enum watcher_outcome outcome = WATCHER_DROPPED;
		char run[WATCHER_ID_MAX] = "";
		enum sl_err err;

		if (fl->flows[i].dir != dir || fnmatch(flow_glob(flow), file->name, 0))
			continue;
		err = watcher_publish(s->pub, flow->name, file, &outcome, run, sizeof(run));
		/* Too many in flight: let delivery reports free slots for a few seconds. */
		for (int tries = 0; err == SL_ERR_BUSY && tries < 50 && !*s->stop; tries++) {
			if (watcher_publisher_service(s->pub, 100) < 0)
				watcher_scanner_retry_later(s);
			err = watcher_publish(s->pub, flow->name, file, &outcome, run,
					      sizeof(run));
		}
		if (err != SL_OK) {
			watcher_scanner_retry_later(s);
			all_recorded = 0;
			continue;
		}
		switch (outcome) {
		case WATCHER_PUBLISHED:
			s->n_new++;
			all_recorded = 0;
			break;
		case WATCHER_IN_FLIGHT:
		case WATCHER_RECORDED:
			s->n_dup++;
			/* A scan meets every old file again: only events are worth a line. */
			sl_log(from_event ? SL_LOG_INFO : SL_LOG_DEBUG,
			       "duplicate content, no new run: flow %s file %s sha256 %s (run %s%s)",
			       flow->name, file->path, file->sha, run,
			       outcome == WATCHER_IN_FLIGHT ? ", request in flight" : "");
			if (outcome == WATCHER_IN_FLIGHT)
				all_recorded = 0;
			break;
		case WATCHER_DROPPED:
			break;
		}
	}
	return all_recorded;
}

void watcher_scan_file(struct watcher_scanner *s, struct watcher_flows *fl, size_t dir,
		       const char *name, int from_event)
{
	struct watcher_dir *d = &fl->dirs[dir];
	struct watcher_file file = {0};
	struct memo_entry *m;
	struct stat st, st2;
	char path[PATH_MAX];
	json_t *utf8 = NULL;
	int fd = -1, n;

	if (d->fd < 0)
		return;
	if (!watcher_name_is_candidate(name) || !any_flow_matches(fl, dir, name)) {
		SL_DEBUG("%s/%s: hidden, temporary or not matching any glob", d->path, name);
		return;
	}
	n = snprintf(path, sizeof(path), "%s/%s", d->path, name);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		SL_WARN("%s/%s: path too long, skipped", d->path, name);
		return;
	}
	/* lstat first so that fifos and devices are never opened (opening one can block). */
	if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		if (errno == ENOENT)
			SL_DEBUG("%s is gone", path);
		else
			SL_WARN("%s: %s, skipped", path, strerror(errno));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		skip(s, &st, path, kind_of(st.st_mode));
		return;
	}
	/* O_NOFOLLOW: a symlink swapped in since the lstat is refused, never followed.
	 * O_NONBLOCK: same for a fifo. */
	fd = openat(d->fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			SL_DEBUG("%s is gone", path);
		else if (errno == ELOOP)
			skip(s, &st, path, "a symlink");
		else if (errno == EACCES || errno == EPERM)
			skip(s, &st, path, "permission denied (chmod it or send SIGHUP)");
		else {
			SL_WARN("%s: open failed: %s (retrying later)", path, strerror(errno));
			watcher_scanner_retry_later(s);
		}
		goto out;
	}
	if (fstat(fd, &st)) {
		SL_WARN("%s: fstat failed: %s (retrying later)", path, strerror(errno));
		watcher_scanner_retry_later(s);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		skip(s, &st, path, kind_of(st.st_mode));
		goto out;
	}
	m = memo_get(s, &st);
	if (m->kind == MEMO_SKIPPED)
		goto out;
	if (m->kind == MEMO_HASHED && m->done) {
		SL_DEBUG("%s unchanged since it was processed", path);
		goto out;
	}
	if (m->kind == MEMO_SEEN) {
		if (!from_event && !settled(s, m))
			goto out;
		if (st.st_size > s->cfg->max_file_size) {
			char why[96];
			snprintf(why, sizeof(why), "%lld bytes, more than max-file-size (%ld)",
				 (long long)st.st_size, s->cfg->max_file_size);
			skip(s, &st, path, why);
			goto out;
		}
		if (!(utf8 = json_string(path))) {
			skip(s, &st, path, "path is not valid UTF-8");
			goto out;
		}
		switch (hash_fd(s, fd, path, m->sha, &file.size)) {
		case HASH_OK:
			break;
		case HASH_CHANGED:
			SL_DEBUG("%s changed while read; taken once it settles", path);
			watcher_scanner_schedule(s, s->cfg->settle_ms);
			goto out;
		default:
			watcher_scanner_retry_later(s);
			goto out;
		}
		/* Changed during the read (written in place, not renamed in): the hash is of
		 * a mix. The writer's close (or the settle rescan) brings it back. */
		if (fstat(fd, &st2) || !same_stats(m, &st2) || file.size != st2.st_size) {
			SL_DEBUG("%s changed while read; taken once it settles", path);
			m->kind = MEMO_SEEN;
			m->seen_ms = sl_mono_ms(); /* restarts the settle clock */
			watcher_scanner_schedule(s, s->cfg->settle_ms);
			goto out;
		}
		m->kind = MEMO_HASHED;
	}
	file.size = m->size;
	sl_strlcpy(file.sha, m->sha, sizeof(file.sha));
	file.path = path;
	file.name = name;
	m->done = publish_all(s, fl, dir, &file, from_event);
out:
	json_decref(utf8);
	if (fd >= 0)
		close(fd);
}

/* ---- full scans ---- */

void watcher_scan_all(struct watcher_scanner *s, struct watcher_flows *fl)
{
	size_t files = 0;

	s->failed = 0;
	s->n_new = s->n_dup = 0;
	for (size_t i = 0; i < fl->ndirs && !*s->stop; i++) {
		struct watcher_dir *d = &fl->dirs[i];
		struct dirent *de;
		DIR *dir;
		int fd;

		if (d->fd < 0) {
			watcher_scanner_retry_later(s);
			continue;
		}
		/* A separate handle: readdir's position must not be shared with d->fd. */
		fd = openat(d->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || !(dir = fdopendir(fd))) {
			SL_WARN("cannot list %s: %s", d->path, strerror(errno));
			if (fd >= 0)
				close(fd);
			watcher_scanner_retry_later(s);
			continue;
		}
		while (!*s->stop && (de = readdir(dir))) {
			if (de->d_type == DT_DIR && de->d_name[0] == '.')
				continue; /* "." and ".." */
			watcher_scan_file(s, fl, i, de->d_name, 0);
			files++;
		}
		closedir(dir);
	}
	if (!s->n_new)
		watcher_scanner_succeeded(s); /* else once their delivery is recorded */
	/* Quiet when polling finds nothing new. */
	sl_log(s->n_new || s->n_dup ? SL_LOG_INFO : SL_LOG_DEBUG,
	       "full scan: %zu director%s, %zu name(s), %zu run(s) requested, %zu already "
	       "processed",
	       fl->ndirs, fl->ndirs == 1 ? "y" : "ies", files, s->n_new, s->n_dup);
}

void watcher_scanner_forget(struct watcher_scanner *s)
{
	for (size_t i = 0; i < s->cap; i++) {
		struct memo_entry *m = &s->memo[i];

		m->done = 0;
		if (m->kind == MEMO_SKIPPED)
			m->kind = MEMO_SEEN; /* looked at and reported again */
	}
}
