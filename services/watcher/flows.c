/* flows.c - loads the flows that have a file trigger and opens the directories they watch. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/flow.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "watcher.h"

static int has_flow_suffix(const char *name)
{
	size_t n = strlen(name);

	if (name[0] == '.')
		return 0;
	return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml"));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Lists the flow file names of dir, sorted so that loading is deterministic (the first
 * file wins when two define the same flow). Caller frees with free_names(). */
static enum sl_err list_flow_files(const char *dir, char ***out, size_t *n, char *errstr,
				   size_t errlen)
{
	enum sl_err err = SL_OK;
	char **names = NULL;
	size_t count = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d) {
		snprintf(errstr, errlen, "flows-dir %s: %s", dir, strerror(errno));
		return SL_ERR_IO;
	}
	if (!(names = calloc(WATCHER_MAX_FLOWS, sizeof(*names)))) {
		err = SL_ERR_NOMEM;
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	while ((de = readdir(d))) {
		if (!has_flow_suffix(de->d_name))
			continue;
		if (count == WATCHER_MAX_FLOWS) {
			SL_ERROR("flows-dir %s holds more than %d flow files; the rest are ignored",
				 dir, WATCHER_MAX_FLOWS);
			break;
		}
		if (!(names[count] = strdup(de->d_name))) {
			err = SL_ERR_NOMEM;
			snprintf(errstr, errlen, "out of memory");
			goto out;
		}
		count++;
	}
	qsort(names, count, sizeof(*names), cmp_str);
out:
	closedir(d);
	if (err != SL_OK) {
		free_names(names, count);
		return err;
	}
	*out = names;
	*n = count;
	return SL_OK;
}

/* Creates path and its missing parents (mode 0755 before umask). Returns 0 or -1 (errno). */
static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t n = sl_strlcpy(buf, path, sizeof(buf));

	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return -1;
	return 0;
}

/* Turns a flow's trigger dir into an absolute path: relative ones are joined to base_dir;
 * the directory is created if missing and its symlinks resolved, so that two flows naming
 * the same directory differently share one watch. Returns SL_OK or SL_ERR_INVALID. */
static enum sl_err resolve_dir(const char *base, const char *dir, char *out, size_t cap)
{
	char joined[PATH_MAX];
	char abs[PATH_MAX];
	char cwd[PATH_MAX];
	int n;

	if (dir[0] == '/')
		n = snprintf(joined, sizeof(joined), "%s", dir);
	else
		n = snprintf(joined, sizeof(joined), "%s/%s", base, dir);
	if (n < 0 || (size_t)n >= sizeof(joined))
		return SL_ERR_INVALID;
	mkdir_p(joined); /* a failure is reported when the directory is opened */
	if (realpath(joined, abs)) {
		if (sl_strlcpy(out, abs, cap) >= cap)
			return SL_ERR_INVALID;
		return SL_OK;
	}
	/* Not there yet: keep an absolute, unresolved path and retry opening it later. */
	if (joined[0] == '/')
		n = snprintf(out, cap, "%s", joined);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(out, cap, "%s/%s", cwd, joined);
	else
		return SL_ERR_INVALID;
	return n < 0 || (size_t)n >= cap ? SL_ERR_INVALID : SL_OK;
}

/* Returns the index of the directory path in fl, adding it when new, or -1 without memory. */
static ssize_t intern_dir(struct watcher_flows *fl, const char *path)
{
	struct watcher_dir *dirs;

	for (size_t i = 0; i < fl->ndirs; i++)
		if (!strcmp(fl->dirs[i].path, path))
			return (ssize_t)i;
	if (!(dirs = realloc(fl->dirs, (fl->ndirs + 1) * sizeof(*dirs))))
		return -1;
	fl->dirs = dirs;
	sl_strlcpy(dirs[fl->ndirs].path, path, sizeof(dirs[fl->ndirs].path));
	dirs[fl->ndirs].fd = -1;
	dirs[fl->ndirs].wd = -1;
	return (ssize_t)fl->ndirs++;
}

/* Keeps flow (takes ownership) if it has a usable file trigger, else destroys it.
 * Returns SL_ERR_NOMEM only; every other problem is logged and the flow dropped. */
static enum sl_err add_flow(struct watcher_flows *fl, const struct watcher_config *cfg,
			    struct sl_flow *flow, const char *file)
{
	enum sl_err err = SL_OK;
	char dir[PATH_MAX];
	ssize_t di;

	if (!flow->trigger_dir) {
		SL_DEBUG("flow %s (%s) has no file trigger", flow->name, file);
		goto out;
	}
	if (strlen(flow->name) >= WATCHER_FLOW_NAME_MAX) {
		SL_ERROR("%s: flow name longer than %d characters, skipped", file,
			 WATCHER_FLOW_NAME_MAX - 1);
		goto out;
	}
	for (size_t i = 0; i < fl->nflows; i++) {
		if (!strcmp(fl->flows[i].flow->name, flow->name)) {
			SL_ERROR("%s: flow %s is already defined by %s, skipped", file, flow->name,
				 fl->flows[i].flow->path);
			goto out;
		}
	}
	if (resolve_dir(cfg->base_dir, flow->trigger_dir, dir, sizeof(dir)) != SL_OK) {
		SL_ERROR("%s: trigger dir %s: path too long, flow skipped", file,
			 flow->trigger_dir);
		goto out;
	}
	if ((di = intern_dir(fl, dir)) < 0) {
		err = SL_ERR_NOMEM;
		goto out;
	}
	fl->flows[fl->nflows].flow = flow;
	fl->flows[fl->nflows].dir = (size_t)di;
	fl->nflows++;
	SL_INFO("flow %s watches %s for %s", flow->name, dir,
		flow->trigger_glob ? flow->trigger_glob : "*");
	flow = NULL; /* kept */
out:
	sl_flow_destroy(flow);
	return err;
}

struct watcher_flows *watcher_flows_load(const struct watcher_config *cfg, char *errstr,
					 size_t errlen)
{
	struct watcher_flows *fl = calloc(1, sizeof(*fl));
	char **names = NULL;
	size_t nnames = 0;
	int ok = 0;

	if (!fl) {
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	if (list_flow_files(cfg->flows_dir, &names, &nnames, errstr, errlen) != SL_OK)
		goto out;
	if (!(fl->flows = calloc(nnames ? nnames : 1, sizeof(*fl->flows)))) {
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nnames; i++) {
		char path[PATH_MAX];
		char ferr[512];
		struct sl_flow *flow;
		int n = snprintf(path, sizeof(path), "%s/%s", cfg->flows_dir, names[i]);

		if (n < 0 || (size_t)n >= sizeof(path)) {
			SL_ERROR("flow file %s/%s: path too long, skipped", cfg->flows_dir,
				 names[i]);
			continue;
		}
		if (!(flow = sl_flow_load(path, ferr, sizeof(ferr)))) {
			SL_ERROR("flow file skipped: %s", ferr);
			continue;
		}
		if (add_flow(fl, cfg, flow, path) != SL_OK) {
			snprintf(errstr, errlen, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < fl->ndirs; i++)
		watcher_flows_reopen(fl, i);
	SL_INFO("%zu flow(s) with a file trigger in %s, %zu director%s watched", fl->nflows,
		cfg->flows_dir, fl->ndirs, fl->ndirs == 1 ? "y" : "ies");
	ok = 1;
out:
	free_names(names, nnames);
	if (!ok) {
		watcher_flows_destroy(fl);
		return NULL;
	}
	return fl;
}

enum sl_err watcher_flows_reopen(struct watcher_flows *fl, size_t i)
{
	struct watcher_dir *d = &fl->dirs[i];

	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	if (mkdir_p(d->path)) {
		SL_WARN("cannot create trigger dir %s: %s", d->path, strerror(errno));
		return SL_ERR_IO;
	}
	d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->fd < 0) {
		SL_WARN("cannot open trigger dir %s: %s", d->path, strerror(errno));
		return SL_ERR_IO;
	}
	return SL_OK;
}

int watcher_dir_gone(const struct watcher_dir *d)
{
	struct stat held, now;

	if (d->fd < 0)
		return 0;
	if (fstat(d->fd, &held) || held.st_nlink == 0)
		return 1;
	/* Moved away (or replaced): the path no longer leads to the directory we hold. */
	if (stat(d->path, &now))
		return errno == ENOENT || errno == ENOTDIR;
	return now.st_dev != held.st_dev || now.st_ino != held.st_ino;
}

void watcher_flows_destroy(struct watcher_flows *fl)
{
	if (!fl)
		return;
	for (size_t i = 0; i < fl->nflows; i++)
		sl_flow_destroy(fl->flows[i].flow);
	for (size_t i = 0; i < fl->ndirs; i++)
		if (fl->dirs[i].fd >= 0)
			close(fl->dirs[i].fd);
	free(fl->flows);
	free(fl->dirs);
	free(fl);
}
