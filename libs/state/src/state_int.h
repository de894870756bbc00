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
};

/* Runs script `name` with nkeys keys followed by its args (argv[0..argc) = keys then ARGV).
 * Loads the script again on NOSCRIPT; reconnects once on a connection error.
 * Returns the reply (caller frees with freeReplyObject) or NULL on a connection error;
 * a script error is logged and returned as NULL too. */
redisReply *state_eval(struct sl_state *st, const char *name, int nkeys, int argc,
		       const char **argv, const size_t *lens);

/* Runs several scripts as one MULTI/EXEC transaction, pipelined: either all of them are
 * applied or (connection lost before EXEC) none. names[i] gets nkeys[i] keys followed by its
 * args (argv[i][0..argc[i]), lengths lens[i]). Returns the EXEC reply (an array with one
 * reply per script; caller frees with freeReplyObject) or NULL on a connection or script
 * loading error, after which the connection is dropped. */
redisReply *state_eval_atomic(struct sl_state *st, size_t count, const char *const *names,
			      const int *nkeys, const int *argc, const char *const *const *argv,
			      const size_t *const *lens);

/* Formats a key into buf: "sluice:{<run>}:<suffix...>". */
void state_key(char *buf, size_t cap, const char *run, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
