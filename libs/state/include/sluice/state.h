/* state.h - run state, task instances, leases and worker registry in Redis; every state
 * transition is a Lua script (EVALSHA), never a read-modify-write from C.
 *
 * Key layout (all keys of one run share the hash tag {run_id}):
 *   sluice:{R}:run              HASH  id flow state params intent source created_ms ended_ms
 *                                     nodes_left tasks_total tasks_done error requested_by
 *   sluice:{R}:node:<task>      HASH  state deps_left total done down (comma list) max_attempts
 *   sluice:{R}:ti:<task>:<idx>  HASH  state attempt max_attempts output error exit_code worker
 *                                     started_ms finished_ms dispatch (TaskDispatch bytes)
 *   sluice:{R}:lease:<task>:<idx> STRING "<worker>:<attempt>" with PX
 *   sluice:runs                 ZSET  run id -> created_ms (global index)
 *   sluice:idem:<key>           STRING run id
 *   sluice:timers               ZSET  "<R>|<task>|<idx>|<attempt>" -> due ms (retries)
 *   sluice:workers              ZSET  worker id -> last heartbeat ms
 *   sluice:worker:<id>          HASH  queue slots busy pid host started_ms draining
 *   sluice:watch:<flow>         HASH  content sha256 -> run id (watcher cursors)
 * <idx> is the map index, -1 for an unmapped task.
 */
#ifndef SLUICE_STATE_H
#define SLUICE_STATE_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

struct sl_state;

/* Connects to url (redis://host:port[/db]) and loads the Lua scripts. One connection:
 * use one sl_state per thread. Returns NULL and fills errstr on error. */
struct sl_state *sl_state_new(const char *url, char *errstr, size_t errlen);

/* Closes the connection. Accepts NULL. */
void sl_state_destroy(struct sl_state *st);

/* The underlying connection for plain reads (HGETALL, ZREVRANGE ...), borrowed.
 * Reconnects first if the connection was lost; returns NULL if that fails. */
redisContext *sl_state_redis(struct sl_state *st);

/* Runs a command (printf-style, hiredis format) with one reconnect-and-retry on a connection
 * error. Returns the reply (caller frees with freeReplyObject) or NULL. */
redisReply *sl_state_command(struct sl_state *st, const char *fmt, ...);
redisReply *sl_state_commandargv(struct sl_state *st, int argc, const char **argv,
				 const size_t *argvlen);

/* ---- leases (worker side) ---- */

/* Takes the lease of instance (run, task, idx) for attempt: succeeds only when the
 * instance's current attempt is `attempt` and it is DISPATCHED (or RUNNING with a lapsed
 * lease); marks it RUNNING with worker and started_ms. Returns SL_OK, SL_ERR_STALE (the
 * dispatch is outdated: drop it), SL_ERR_BUSY (someone holds it), or SL_ERR_REDIS. */
enum sl_err sl_state_lease_acquire(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker, long ttl_ms);

/* Extends the lease if it is still "<worker>:<attempt>". Returns SL_OK, SL_ERR_STALE when
 * the lease is lost (stop the task), or SL_ERR_REDIS. */
enum sl_err sl_state_lease_renew(struct sl_state *st, const char *run, const char *task,
				 int idx, unsigned attempt, const char *worker, long ttl_ms);

/* Deletes the lease if it is still ours. */
enum sl_err sl_state_lease_release(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker);

/* ---- worker registry ---- */

/* Registers or refreshes worker id (heartbeat): queue, slots and busy count. */
enum sl_err sl_state_worker_heartbeat(struct sl_state *st, const char *id, const char *queue,
				      int slots, int busy, int pid);

/* Sets *draining to 1 when a drain was requested for worker id. */
enum sl_err sl_state_worker_draining(struct sl_state *st, const char *id, int *draining);

/* Asks worker id to drain (stop taking work, finish, exit). */
enum sl_err sl_state_worker_request_drain(struct sl_state *st, const char *id);

/* Removes worker id from the registry. */
enum sl_err sl_state_worker_deregister(struct sl_state *st, const char *id);

#endif
