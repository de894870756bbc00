/* state_int.h - internals shared by the state module's files. */
#ifndef SLUICE_STATE_INT_H
#define SLUICE_STATE_INT_H

#include "lua_scripts.h"
#include "sluice/state.h"

#define STATE_MAX_SCRIPTS 32
#define STATE_KEY_MAX 512

struct sl_state {
	redisContext *c; /* NULL while disconnected */
	char host[256];
	int port;
	int db;
	char password[256];
	char sha[STATE_MAX_SCRIPTS][41];
	unsigned long long lease_calls; /* lease_acquire calls made: their ids (lease.c) */
};

/* Runs script `name` with nkeys keys followed by its args (argv[0..argc) = keys then ARGV).
 * Loads the script again on NOSCRIPT; reconnects once on a connection error.
 * Returns the reply (caller frees with freeReplyObject) or NULL on a connection error;
 * a script error is logged and returned as NULL too. */
redisReply *state_eval(struct sl_state *st, const char *name, int nkeys, int argc,
		       const char **argv, const size_t *lens);

/* Runs script name with one key (argv[0]) and argc - 1 args, whose reply is a flat array of
 * pairs, and allocates a zeroed array of as many elements of elem_size for the caller to fill.
 * *reply (caller frees; may be NULL) and *arr (caller frees; NULL for no pairs) are set;
 * returns SL_OK, SL_ERR_REDIS (no reply, or not an array) or SL_ERR_NOMEM. */
enum sl_err state_eval_pairs(struct sl_state *st, const char *name, int argc, const char **argv,
			     size_t elem_size, redisReply **reply, void **arr, size_t *npairs);

/* Runs count calls of script name pipelined: every call is sent, then the replies are read in
 * order: one round trip, and Redis answers (and, with appendfsync always, fsyncs) all the calls
 * it reads in one event-loop turn together. Call i gets nkeys[i] keys followed by its args
 * (argv[i][0..argc[i]), lengths lens[i]; lens NULL: C strings). Calls answered NOSCRIPT are
 * sent again after the scripts are reloaded, and calls without a reply after a connection
 * error are sent again after a reconnect (3 tries, as state_eval()). replies[i] gets call i's
 * reply (caller frees with freeReplyObject) or NULL when it failed (connection error, or a
 * script error, which is logged). */
void state_eval_pipeline(struct sl_state *st, const char *name, size_t count, const int *nkeys,
			 const int *argc, const char *const *const *argv,
			 const size_t *const *lens, redisReply **replies);

/* As state_eval_pipeline(), call i running script names[i] (calls of several scripts in one
 * round trip, still in order). */
void state_eval_pipeline_of(struct sl_state *st, const char *const *names, size_t count,
			    const int *nkeys, const int *argc, const char *const *const *argv,
			    const size_t *const *lens, redisReply **replies);

/* Formats a key into buf: "sluice:{<run>}:<suffix...>". */
void state_key(char *buf, size_t cap, const char *run, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
