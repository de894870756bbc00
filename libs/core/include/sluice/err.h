/* err.h - the one error enum of sluice; codes are only ever appended. */
#ifndef SLUICE_ERR_H
#define SLUICE_ERR_H

enum sl_err {
	SL_OK = 0,
	SL_ERR_INVALID = 1,    /* bad argument or input value */
	SL_ERR_NOMEM = 2,      /* allocation failed */
	SL_ERR_IO = 3,         /* file system or pipe error */
	SL_ERR_PARSE = 4,      /* YAML, JSON, template or expression syntax */
	SL_ERR_NOT_FOUND = 5,  /* flow, run, key or file does not exist */
	SL_ERR_EXISTS = 6,     /* already there (idempotent duplicate) */
	SL_ERR_TIMEOUT = 7,    /* deadline passed */
	SL_ERR_KAFKA = 8,      /* broker or client error */
	SL_ERR_REDIS = 9,      /* Redis connection or command error */
	SL_ERR_STALE = 10,     /* fenced: attempt is not the current one */
	SL_ERR_TOO_BIG = 11,   /* over a size cap */
	SL_ERR_DECODE = 12,    /* protobuf could not be decoded */
	SL_ERR_CONFIG = 13,    /* unknown or ill-typed configuration */
	SL_ERR_EXEC = 14,      /* could not start a process */
	SL_ERR_CANCELLED = 15, /* stopped on request */
	SL_ERR_BUSY = 16,      /* held by someone else (lease) */
	SL_ERR_FAILED = 17,    /* a task or run ended FAILED */
	SL_ERR_HTTP = 18,      /* HTTP transfer failed */
};

/* Returns a static, human-readable description of err; never NULL. */
const char *sl_strerror(enum sl_err err);

/* Returns 1 when retrying the same operation later may succeed. */
int sl_err_is_retriable(enum sl_err err);

#endif
