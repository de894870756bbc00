/* backend.h - how a pool's workers are started and stopped; one backend per file (backend_*.c). */
#ifndef AUTOSCALER_BACKEND_H
#define AUTOSCALER_BACKEND_H

#include <stddef.h>

#include "pools.h"
#include "sluice/err.h"

struct autoscaler_backend;

/* Told once per worker that has ended: id (borrowed, valid during the call) and how it ended
 * ("exited with status 0", "killed by signal 9"). */
typedef void(autoscaler_exit_cb)(void *ctx, const char *id, const char *how);

struct autoscaler_backend_ops {
	/* Starts one worker of pool pc named id. On error fills errstr and returns SL_ERR_EXEC
	 * (or SL_ERR_TOO_BIG when the backend tracks too many workers); nothing was started. */
	enum sl_err (*start)(struct autoscaler_backend *b, const struct autoscaler_pool_config *pc,
			     const char *id, char *errstr, size_t errlen);
	/* Asks worker id to stop now (it drains on SIGTERM); unknown ids are ignored. */
	void (*stop)(struct autoscaler_backend *b, const char *id);
	/* Calls cb for each worker that ended since the last call, then forgets it. Never
	 * blocks. */
	void (*reap)(struct autoscaler_backend *b, autoscaler_exit_cb *cb, void *ctx);
	/* Workers started and not reaped yet. */
	size_t (*running)(const struct autoscaler_backend *b);
	/* Frees the backend; workers still running are left running. Accepts NULL. */
	void (*destroy)(struct autoscaler_backend *b);
};

/* Every backend struct starts with this. */
struct autoscaler_backend {
	const struct autoscaler_backend_ops *ops;
};

/* ---- process: fork/exec of sluice-worker on this machine (backend_process.c) ---- */

struct autoscaler_process_opts {
	const char *worker_bin;    /* path of sluice-worker */
	const char *log_dir;       /* worker-<id>.log goes here; NULL: inherit stderr */
	const char *pid_dir;       /* <id>.pid goes here; NULL: no pid files */
	const char *kafka_brokers; /* set as SLUICE_KAFKA_BROKERS for the workers */
	const char *redis_url;     /* set as SLUICE_REDIS_URL for the workers */
	const char *const *drop_env; /* variables not passed to workers, NULL-terminated */
};

/* Creates the process backend; every string of opts is copied. Returns NULL and fills errstr
 * on error. Workers get `<worker_bin> --queue Q --slots N --id ID`, this process's environment
 * (less drop_env, with the Kafka and Redis addresses set), stdin from /dev/null, and their own
 * process group. */
struct autoscaler_backend *
autoscaler_backend_process_new(const struct autoscaler_process_opts *opts, char *errstr,
			       size_t errlen);

#endif
