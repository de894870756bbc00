/* backend_process.c - runs workers as child processes of the autoscaler (posix_spawn). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "policy.h"
#include "sluice/log.h"
#include "sluice/util.h"

extern char **environ;

#define PROCESS_MAX_CHILDREN (AUTOSCALER_MAX_POOLS * AUTOSCALER_POOL_MAX_SIZE)
#define PROCESS_MAX_ENV 4096
#define PRUNE_EVERY_MS 10000

struct child {
	char id[AUTOSCALER_ID_MAX];
	pid_t pid;
};

struct process_backend {
	struct autoscaler_backend base; /* first: the generic part */
	char *worker_bin;
	char *log_dir;
	char *pid_dir;
	char **envp; /* NULL-terminated, every entry owned */
	struct child *children;
	size_t nchildren;
	size_t cap;
	int64_t pruned_ms; /* last prune_pidfiles(), monotonic */
};

static int path_join(char *buf, size_t cap, const char *dir, const char *prefix, const char *id,
		     const char *suffix)
{
	int n = snprintf(buf, cap, "%s/%s%s%s", dir, prefix, id, suffix);

	return n >= 0 && (size_t)n < cap;
}

/* Writes the pid file through a temporary name so a reader never sees half a number. */
static void write_pidfile(const struct process_backend *pb, const char *id, pid_t pid)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	FILE *fp = NULL;

	if (!pb->pid_dir)
		return;
	if (!path_join(path, sizeof(path), pb->pid_dir, "", id, ".pid") ||
	    !path_join(tmp, sizeof(tmp), pb->pid_dir, ".", id, ".pid.tmp"))
		goto fail;
	if (!(fp = fopen(tmp, "w")))
		goto fail;
	fprintf(fp, "%ld\n", (long)pid);
	if (fclose(fp) != 0) {
		fp = NULL;
		unlink(tmp);
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		goto fail;
	}
	return;
fail:
	SL_WARN("cannot write pid file of worker %s in %s: %s", id, pb->pid_dir, strerror(errno));
}

static void remove_pidfile(const struct process_backend *pb, const char *id)
{
	char path[PATH_MAX];

	if (pb->pid_dir && path_join(path, sizeof(path), pb->pid_dir, "", id, ".pid"))
		unlink(path);
}

static enum sl_err process_start(struct autoscaler_backend *b,
				 const struct autoscaler_pool_config *pc, const char *id,
				 char *errstr, size_t errlen)
{
	struct process_backend *pb = (struct process_backend *)b;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int have_fa = 0, have_attr = 0, rc;
	enum sl_err err = SL_ERR_EXEC;
	char logpath[PATH_MAX], slots[16];
	char *argv[8];
	sigset_t none, all;
	pid_t pid;

	if (pb->nchildren == pb->cap) {
		snprintf(errstr, errlen, "already %zu worker processes", pb->cap);
		return SL_ERR_TOO_BIG;
	}
	snprintf(slots, sizeof(slots), "%d", pc->slots);
	argv[0] = pb->worker_bin;
	argv[1] = "--queue";
	argv[2] = (char *)pc->queue;
	argv[3] = "--slots";
	argv[4] = slots;
	argv[5] = "--id";
	argv[6] = (char *)id;
	argv[7] = NULL;

	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		goto spawn_failed;
	have_fa = 1;
	if ((rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0)))
		goto spawn_failed;
	if (pb->log_dir) {
		if (!path_join(logpath, sizeof(logpath), pb->log_dir, "worker-", id, ".log")) {
			snprintf(errstr, errlen, "log path too long in %s", pb->log_dir);
			goto out;
		}
		if ((rc = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, logpath,
							   O_WRONLY | O_CREAT | O_APPEND, 0644)) ||
		    (rc = posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO)))
			goto spawn_failed;
	}
	/* Kafka and Redis sockets of the autoscaler are none of the worker's business. */
	if ((rc = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1)))
		goto spawn_failed;
	if ((rc = posix_spawnattr_init(&attr)) != 0)
		goto spawn_failed;
	have_attr = 1;
	sigemptyset(&none);
	sigfillset(&all);
	/* Its own process group keeps a Ctrl-C or a group signal aimed at the autoscaler away
	 * from workers that are finishing tasks; they stop when told to. */
	if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
							  POSIX_SPAWN_SETSIGDEF)) ||
	    (rc = posix_spawnattr_setpgroup(&attr, 0)) ||
	    (rc = posix_spawnattr_setsigmask(&attr, &none)) ||
	    (rc = posix_spawnattr_setsigdefault(&attr, &all)))
		goto spawn_failed;
	if (strchr(pb->worker_bin, '/'))
		rc = posix_spawn(&pid, pb->worker_bin, &fa, &attr, argv, pb->envp);
	else
		rc = posix_spawnp(&pid, pb->worker_bin, &fa, &attr, argv, pb->envp);
	if (rc)
		goto spawn_failed;
	sl_strlcpy(pb->children[pb->nchildren].id, id, AUTOSCALER_ID_MAX);
	pb->children[pb->nchildren].pid = pid;
	pb->nchildren++;
	write_pidfile(pb, id, pid);
	SL_DEBUG("started %s --queue %s --slots %d --id %s: pid %ld", pb->worker_bin, pc->queue,
		 pc->slots, id, (long)pid);
	err = SL_OK;
	goto out;
spawn_failed:
	snprintf(errstr, errlen, "cannot start %s: %s", pb->worker_bin, strerror(rc));
out:
	if (have_attr)
		posix_spawnattr_destroy(&attr);
	if (have_fa)
		posix_spawn_file_actions_destroy(&fa);
	return err;
}

static void process_stop(struct autoscaler_backend *b, const char *id)
{
	struct process_backend *pb = (struct process_backend *)b;

	for (size_t i = 0; i < pb->nchildren; i++) {
		if (strcmp(pb->children[i].id, id) != 0)
			continue;
		/* The group holds the worker and any task it runs in the same group. */
		if (kill(-pb->children[i].pid, SIGTERM) != 0)
			kill(pb->children[i].pid, SIGTERM);
		return;
	}
}

/* Removes pid files of workers that are gone but were not our children to reap (started by an
 * earlier run of the autoscaler); those of live workers stay, for `scripts/stack down`. */
static void prune_pidfiles(const char *pid_dir)
{
	DIR *d = opendir(pid_dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[PATH_MAX], text[32] = "";
		size_t n = strlen(e->d_name);
		FILE *fp;
		long pid;

		if (e->d_name[0] == '.' || n < 5 || strcmp(e->d_name + n - 4, ".pid") != 0 ||
		    !path_join(path, sizeof(path), pid_dir, "", e->d_name, "") ||
		    !(fp = fopen(path, "r")))
			continue;
		if (!fgets(text, sizeof(text), fp))
			text[0] = '\0';
		fclose(fp);
		pid = strtol(text, NULL, 10);
		if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
			unlink(path);
	}
	closedir(d);
}

static void process_reap(struct autoscaler_backend *b, autoscaler_exit_cb *cb, void *ctx)
{
	struct process_backend *pb = (struct process_backend *)b;
	size_t i = 0;

	while (i < pb->nchildren) {
		struct child c = pb->children[i];
		char how[64];
		int status;
		pid_t r = waitpid(c.pid, &status, WNOHANG);

		if (r == 0 || (r < 0 && errno == EINTR)) {
			i++;
			continue;
		}
		if (r < 0)
			snprintf(how, sizeof(how), "lost (%s)", strerror(errno));
		else if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(status));
		else
			snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
		pb->children[i] = pb->children[--pb->nchildren];
		remove_pidfile(pb, c.id);
		cb(ctx, c.id, how);
	}
	if (pb->pid_dir && sl_mono_ms() - pb->pruned_ms >= PRUNE_EVERY_MS) {
		prune_pidfiles(pb->pid_dir);
		pb->pruned_ms = sl_mono_ms();
	}
}

static size_t process_running(const struct autoscaler_backend *b)
{
	return ((const struct process_backend *)b)->nchildren;
}

static void process_destroy(struct autoscaler_backend *b)
{
	struct process_backend *pb = (struct process_backend *)b;

	if (!pb)
		return;
	if (pb->envp)
		for (size_t i = 0; pb->envp[i]; i++)
			free(pb->envp[i]);
	free(pb->envp);
	free(pb->children);
	free(pb->worker_bin);
	free(pb->log_dir);
	free(pb->pid_dir);
	free(pb);
}

static const struct autoscaler_backend_ops process_ops = {
	.start = process_start,
	.stop = process_stop,
	.reap = process_reap,
	.running = process_running,
	.destroy = process_destroy,
};

static int dropped(const char *entry, const char *const *drop)
{
	size_t n = strcspn(entry, "=");

	for (; drop && *drop; drop++)
		if (strlen(*drop) == n && !strncmp(entry, *drop, n))
			return 1;
	return !strncmp(entry, "SLUICE_KAFKA_BROKERS=", 21) ||
	       !strncmp(entry, "SLUICE_REDIS_URL=", 17);
}

/* The workers' environment: ours, less what only concerns the autoscaler, with the addresses
 * it was given (a flag may have overridden the environment). */
static char **build_env(const struct autoscaler_process_opts *opts)
{
	size_t n = 0, k = 0;
	char **envp;

	for (char **e = environ; *e; e++)
		n++;
	if (n > PROCESS_MAX_ENV)
		n = PROCESS_MAX_ENV;
	if (!(envp = calloc(n + 3, sizeof(*envp))))
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (dropped(environ[i], opts->drop_env))
			continue;
		if (!(envp[k++] = strdup(environ[i])))
			goto fail;
	}
	if (asprintf(&envp[k], "SLUICE_KAFKA_BROKERS=%s", opts->kafka_brokers) < 0) {
		envp[k] = NULL;
		goto fail;
	}
	if (asprintf(&envp[++k], "SLUICE_REDIS_URL=%s", opts->redis_url) < 0) {
		envp[k] = NULL;
		goto fail;
	}
	return envp;
fail:
	for (size_t i = 0; i < k; i++)
		free(envp[i]);
	free(envp);
	return NULL;
}

struct autoscaler_backend *
autoscaler_backend_process_new(const struct autoscaler_process_opts *opts, char *errstr,
			       size_t errlen)
{
	struct process_backend *pb = calloc(1, sizeof(*pb));

	if (!pb)
		goto nomem;
	pb->base.ops = &process_ops;
	pb->cap = PROCESS_MAX_CHILDREN;
	if (!(pb->children = calloc(pb->cap, sizeof(*pb->children))) ||
	    !(pb->worker_bin = strdup(opts->worker_bin)) ||
	    (opts->log_dir && !(pb->log_dir = strdup(opts->log_dir))) ||
	    (opts->pid_dir && !(pb->pid_dir = strdup(opts->pid_dir))) ||
	    !(pb->envp = build_env(opts)))
		goto nomem;
	if (pb->pid_dir) {
		prune_pidfiles(pb->pid_dir);
		pb->pruned_ms = sl_mono_ms();
	}
	return &pb->base;
nomem:
	snprintf(errstr, errlen, "process backend: out of memory");
	process_destroy(pb ? &pb->base : NULL);
	return NULL;
}
