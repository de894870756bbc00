/* util.h - small helpers shared by every module: clocks, durations, ids, hashing, JSON text. */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

/* Wall-clock milliseconds since the epoch (for records and timers shared between hosts). */
int64_t sl_now_ms(void);

/* Monotonic milliseconds (for local deadlines). */
int64_t sl_mono_ms(void);

/* Parses "250ms", "5s", "2m", "1h", "1d" or a bare number of milliseconds into *ms.
 * Returns SL_ERR_INVALID on anything else, *ms untouched. */
enum sl_err sl_parse_duration_ms(const char *text, long *ms);

/* Writes a new time-sortable id into buf: prefix, 12 hex digits of ms, 10 random hex digits
 * (e.g. "r-0193a2b4c5d6-8f3a9c2e11"). Needs cap >= strlen(prefix) + 25. */
void sl_id_new(const char *prefix, char *buf, size_t cap);

/* SHA-256 of data as 64 lowercase hex digits + NUL into hex (cap >= 65). */
void sl_sha256_hex(const void *data, size_t len, char *hex, size_t cap);

/* 1 when queue names a priority band of another queue (ends in ".high" or ".low": topic
 * sluice.tasks.<q>.high is queue <q>'s high band), so it cannot be a queue of its own. */
int sl_queue_is_band(const char *queue);

/* Copies src into dst (cap >= 1), always NUL-terminated; returns strlen(src). */
size_t sl_strlcpy(char *dst, const char *src, size_t cap);

/* Turns a task's raw stdout into JSON text: trailing whitespace is trimmed; if what is left
 * parses as JSON (any type) it is returned compact, else as a JSON string. Empty output is
 * "null". Caller frees with free(). Returns NULL only on allocation failure. */
char *sl_output_to_json(const char *data, size_t len);

#endif
