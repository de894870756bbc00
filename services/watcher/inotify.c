/* inotify.c - inotify watches on the trigger directories and the reading of their events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "sluice/log.h"
#include "watcher.h"

/* IN_CLOSE_WRITE: a writer finished; IN_MOVED_TO: a file was renamed in (the atomic way to
 * publish one). The *_SELF events tell us the directory itself went away. */
#define WATCH_MASK                                                                         \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |       \
	 IN_EXCL_UNLINK)

struct watcher_inotify {
	int fd;
};

struct watcher_inotify *watcher_inotify_new(char *errstr, size_t errlen)
{
	struct watcher_inotify *in = calloc(1, sizeof(*in));

	if (!in) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	in->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in->fd < 0) {
		snprintf(errstr, errlen, "inotify_init1: %s (use --scan-interval for polling)",
			 strerror(errno));
		free(in);
		return NULL;
	}
	return in;
}

int watcher_inotify_fd(const struct watcher_inotify *in)
{
	return in->fd;
}

size_t watcher_inotify_watch_all(struct watcher_inotify *in, struct watcher_flows *fl)
{
	size_t failed = 0;

	for (size_t i = 0; i < fl->ndirs; i++) {
		struct watcher_dir *d = &fl->dirs[i];

		if (d->wd >= 0)
			continue;
		if (d->fd < 0) {
			failed++;
			continue;
		}
		d->wd = inotify_add_watch(in->fd, d->path, WATCH_MASK);
		if (d->wd < 0) {
			SL_WARN("cannot watch %s: %s%s", d->path, strerror(errno),
				errno == ENOSPC ? " (raise fs.inotify.max_user_watches or use "
						  "--scan-interval)"
						: "");
			failed++;
		}
	}
	return failed;
}

void watcher_inotify_unwatch(struct watcher_inotify *in, struct watcher_dir *d)
{
	if (d->wd >= 0)
		inotify_rm_watch(in->fd, d->wd);
	d->wd = -1;
}

void watcher_inotify_unwatch_all(struct watcher_inotify *in, struct watcher_flows *fl)
{
	for (size_t i = 0; i < fl->ndirs; i++)
		watcher_inotify_unwatch(in, &fl->dirs[i]);
}

static ssize_t dir_of_wd(const struct watcher_flows *fl, int wd)
{
	for (size_t i = 0; i < fl->ndirs; i++)
		if (fl->dirs[i].wd == wd)
			return (ssize_t)i;
	return -1;
}

/* The directory was deleted or renamed away: drop its watch and handle so that the main
 * loop recreates it at its configured path. */
static void dir_lost(struct watcher_inotify *in, struct watcher_dir *d, uint32_t mask)
{
	SL_WARN("trigger dir %s was %s; recreating it", d->path,
		mask & IN_MOVE_SELF ? "moved away" : "removed");
	if (!(mask & IN_IGNORED))
		inotify_rm_watch(in->fd, d->wd);
	d->wd = -1;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

void watcher_inotify_read(struct watcher_inotify *in, struct watcher_flows *fl,
			  watcher_event_cb *on_file, void *ud, int *overflow, int *lost)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(in->fd, buf, sizeof(buf));
		char *p;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno != EAGAIN)
				SL_ERROR("reading inotify events: %s", strerror(errno));
			return;
		}
		if (n == 0)
			return;
		for (p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
			ssize_t di;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				SL_WARN("inotify queue overflowed: events lost, rescanning");
				*overflow = 1;
				continue;
			}
			if ((di = dir_of_wd(fl, ev->wd)) < 0)
				continue; /* a watch removed earlier; its IN_IGNORED trails behind */
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
				dir_lost(in, &fl->dirs[di], ev->mask);
				*lost = 1;
				continue;
			}
			if (!ev->len || !ev->name[0])
				continue;
			if (ev->mask & IN_ISDIR) {
				if (watcher_name_is_candidate(ev->name))
					SL_INFO("%s/%s is a directory, not a trigger file: skipped",
						fl->dirs[di].path, ev->name);
				continue;
			}
			if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
				on_file(ud, (size_t)di, ev->name);
		}
	}
}

void watcher_inotify_destroy(struct watcher_inotify *in)
{
	if (!in)
		return;
	if (in->fd >= 0)
		close(in->fd);
	free(in);
}
