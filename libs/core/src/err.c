/* err.c - descriptions and retry classes of enum sl_err. */
#include "sluice/err.h"

const char *sl_strerror(enum sl_err err)
{
	switch (err) {
	case SL_OK: return "ok";
	case SL_ERR_INVALID: return "invalid argument";
	case SL_ERR_NOMEM: return "out of memory";
	case SL_ERR_IO: return "i/o error";
	case SL_ERR_PARSE: return "parse error";
	case SL_ERR_NOT_FOUND: return "not found";
	case SL_ERR_EXISTS: return "already exists";
	case SL_ERR_TIMEOUT: return "timed out";
	case SL_ERR_KAFKA: return "kafka error";
	case SL_ERR_REDIS: return "redis error";
	case SL_ERR_STALE: return "stale attempt";
	case SL_ERR_TOO_BIG: return "too big";
	case SL_ERR_DECODE: return "cannot decode message";
	case SL_ERR_CONFIG: return "configuration error";
	case SL_ERR_EXEC: return "cannot execute";
	case SL_ERR_CANCELLED: return "cancelled";
	case SL_ERR_BUSY: return "busy";
	case SL_ERR_FAILED: return "failed";
	case SL_ERR_HTTP: return "http error";
	}
	return "unknown error";
}

int sl_err_is_retriable(enum sl_err err)
{
	switch (err) {
	case SL_ERR_IO:
	case SL_ERR_TIMEOUT:
	case SL_ERR_KAFKA:
	case SL_ERR_REDIS:
	case SL_ERR_BUSY:
	case SL_ERR_HTTP:
		return 1;
	default:
		return 0;
	}
}
