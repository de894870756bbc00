/* health.h - /healthz, /readyz and Prometheus /metrics over HTTP for every sluice service. */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

#define SL_HEALTH_MAX_METRICS 64  /* registrations beyond this return NULL */
#define SL_HEALTH_NAME_MAX 128    /* metric name length */
#define SL_HEALTH_HELP_MAX 256    /* help text length (longer is cut) */

struct sl_health;
struct sl_metric;

/* Creates the registry and, when listen_addr is a non-empty "host:port" ("127.0.0.1:9464",
 * "[::1]:0", ":9464" = every address; port 0 picks a free one), starts serving it on a
 * thread of its own:
 *   GET /healthz  200 "ok" while the process serves requests (liveness);
 *   GET /readyz   200 "ready" once sl_health_set_ready(h, 1) was called, else 503;
 *   GET /metrics  every registered metric in the Prometheus text format 0.0.4.
 * NULL or "" disables the server: the object still holds metrics (so callers need no
 * special case) and sl_health_port() returns 0. service (e.g. "worker") is copied and
 * exported as the label of sluice_up. Returns NULL and fills errstr when the address is
 * bad or cannot be bound. */
struct sl_health *sl_health_new(const char *listen_addr, const char *service, char *errstr,
				size_t errlen);

/* The bound TCP port, 0 when disabled. Accepts NULL. */
int sl_health_port(const struct sl_health *h);

/* Sets the readiness /readyz reports. Thread-safe; accepts NULL. */
void sl_health_set_ready(struct sl_health *h, int ready);

/* Registers a counter (only grows) or a gauge (set to anything). name must match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, optionally followed by labels {pool="big",...} (values without
 * '"', '\\' or newlines), at most SL_HEALTH_NAME_MAX in all; metrics of one family (same
 * name before '{') share the first one's help and kind. help is copied. Registering a name
 * twice returns the first metric when the kind matches, so a caller may look a labelled
 * metric up on every use. Returns a metric owned by h (valid until sl_health_destroy), or
 * NULL when h is NULL, the name is invalid, the kind clashes or the registry is full
 * (logged once). Thread-safe. */
struct sl_metric *sl_health_counter(struct sl_health *h, const char *name, const char *help);
struct sl_metric *sl_health_gauge(struct sl_health *h, const char *name, const char *help);

/* Updates a metric atomically. Every function accepts NULL (does nothing), so an optional
 * metric needs no check at the call site. sl_metric_add with a negative n on a counter is
 * ignored. */
void sl_metric_add(struct sl_metric *m, int64_t n);
void sl_metric_inc(struct sl_metric *m);
void sl_metric_set(struct sl_metric *m, int64_t v);
int64_t sl_metric_get(const struct sl_metric *m);

/* Writes the Prometheus text of every metric into buf (NUL-terminated). Returns the length
 * written, or SIZE_MAX when buf is too small (its content is then unspecified). */
size_t sl_health_render(struct sl_health *h, char *buf, size_t cap);

/* Stops the server (waits for requests in progress) and frees everything. Accepts NULL. */
void sl_health_destroy(struct sl_health *h);

#endif
