/* health.c - a metrics registry and the small HTTP server (libmicrohttpd) that exposes it. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/health.h"
#include "sluice/log.h"

#define HEALTH_MAX_CONNECTIONS 16
#define HEALTH_CONN_TIMEOUT_S 5
#define HEALTH_SERVICE_MAX 64
/* Worst case per metric: two comment lines, the sample line and escapes. */
#define HEALTH_RENDER_CAP                                                                  \
	(SL_HEALTH_MAX_METRICS * (3 * SL_HEALTH_NAME_MAX + 2 * SL_HEALTH_HELP_MAX + 96) + 512)

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE };

struct sl_metric {
	enum metric_kind kind;
	char name[SL_HEALTH_NAME_MAX + 1];
	char help[SL_HEALTH_HELP_MAX + 1];
	atomic_llong value;
};

struct sl_health {
	char service[HEALTH_SERVICE_MAX + 1];
	struct MHD_Daemon *daemon;
	int fd; /* listening socket until MHD takes it over */
	int port;
	atomic_int ready;
	pthread_mutex_t lock; /* guards metrics[] and nmetrics */
	struct sl_metric *metrics[SL_HEALTH_MAX_METRICS];
	size_t nmetrics;
	int full_logged;
};

/* Length of the identifier at s ([a-zA-Z_:][a-zA-Z0-9_:]*, colons only when colon). */
static size_t ident(const char *s, int colon)
{
	size_t i = 0;

	for (;; i++) {
		char c = s[i];
		int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			    (colon && c == ':');

		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return i;
	}
}

/* name or name{label="value",...}; values hold no '"', '\\' or newline. */
static int valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > SL_HEALTH_NAME_MAX || (i = ident(s, 1)) == 0)
		return 0;
	if (!s[i])
		return 1;
	if (s[i] != '{')
		return 0;
	for (i++;;) {
		size_t l = ident(s + i, 0);

		if (l == 0 || s[i + l] != '=' || s[i + l + 1] != '"')
			return 0;
		i += l + 2;
		while (s[i] && s[i] != '"' && s[i] != '\\' && s[i] != '\n')
			i++;
		if (s[i] != '"')
			return 0;
		i++;
		if (s[i] == '}')
			return s[i + 1] == '\0';
		if (s[i] != ',')
			return 0;
		i++;
	}
}

/* Length of the family name (before any '{'). */
static size_t family_len(const char *name)
{
	return strcspn(name, "{");
}

static int same_family(const char *a, const char *b)
{
	size_t n = family_len(a);

	return n == family_len(b) && !strncmp(a, b, n);
}

/* Appends printf output to buf at *len; sets *len to SIZE_MAX once it does not fit. */
__attribute__((format(printf, 4, 5))) static void append(char *buf, size_t cap, size_t *len,
							 const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*len == SIZE_MAX)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, cap - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *len)
		*len = SIZE_MAX;
	else
		*len += (size_t)n;
}

/* HELP text escapes backslash and newline (Prometheus text format). */
static void escape_help(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	for (; *in && o + 3 < cap; in++) {
		if (*in == '\\' || *in == '\n') {
			out[o++] = '\\';
			out[o++] = *in == '\n' ? 'n' : '\\';
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

size_t sl_health_render(struct sl_health *h, char *buf, size_t cap)
{
	char help[2 * SL_HEALTH_HELP_MAX + 1];
	size_t len = 0;

	if (!h || cap == 0)
		return SIZE_MAX;
	buf[0] = '\0';
	append(buf, cap, &len, "# HELP sluice_up 1 while the service runs.\n"
			       "# TYPE sluice_up gauge\nsluice_up{service=\"%s\"} 1\n",
	       h->service);
	append(buf, cap, &len, "# HELP sluice_ready 1 when the service is ready (see /readyz).\n"
			       "# TYPE sluice_ready gauge\nsluice_ready{service=\"%s\"} %d\n",
	       h->service, atomic_load(&h->ready) ? 1 : 0);
	pthread_mutex_lock(&h->lock);
	/* One HELP/TYPE per family, its samples (labelled ones) together right below it. */
	for (size_t i = 0; i < h->nmetrics; i++) {
		const struct sl_metric *m = h->metrics[i];
		int fl = (int)family_len(m->name), seen = 0;

		for (size_t j = 0; j < i && !seen; j++)
			seen = same_family(h->metrics[j]->name, m->name);
		if (seen)
			continue;
		escape_help(m->help, help, sizeof(help));
		append(buf, cap, &len, "# HELP %.*s %s\n# TYPE %.*s %s\n", fl, m->name, help, fl,
		       m->name, m->kind == METRIC_COUNTER ? "counter" : "gauge");
		for (size_t j = i; j < h->nmetrics; j++)
			if (same_family(h->metrics[j]->name, m->name))
				append(buf, cap, &len, "%s %lld\n", h->metrics[j]->name,
				       (long long)atomic_load(&h->metrics[j]->value));
	}
	pthread_mutex_unlock(&h->lock);
	return len;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body, mode);
	enum MHD_Result rc;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

#define TEXT_PLAIN "text/plain; charset=utf-8"

/* @locality the MHD thread. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct sl_health *h = cls;
	char *buf;
	size_t len;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
		*upload_size = 0; /* bodies are never read */
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT_PLAIN, "GET only\n", 9,
			     MHD_RESPMEM_PERSISTENT);
	}
	if (!strcmp(url, "/healthz"))
		return reply(conn, MHD_HTTP_OK, TEXT_PLAIN, "ok\n", 3, MHD_RESPMEM_PERSISTENT);
	if (!strcmp(url, "/readyz")) {
		if (atomic_load(&h->ready))
			return reply(conn, MHD_HTTP_OK, TEXT_PLAIN, "ready\n", 6,
				     MHD_RESPMEM_PERSISTENT);
		return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready\n", 10,
			     MHD_RESPMEM_PERSISTENT);
	}
	if (!strcmp(url, "/metrics")) {
		if (!(buf = malloc(HEALTH_RENDER_CAP)))
			return MHD_NO;
		if ((len = sl_health_render(h, buf, HEALTH_RENDER_CAP)) == SIZE_MAX) {
			free(buf);
			return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, TEXT_PLAIN,
				     "metrics do not fit\n", 19, MHD_RESPMEM_PERSISTENT);
		}
		/* MHD frees buf with free() once sent. */
		return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf,
			     len, MHD_RESPMEM_MUST_FREE);
	}
	return reply(conn, MHD_HTTP_NOT_FOUND, TEXT_PLAIN,
		     "not found (try /healthz, /readyz or /metrics)\n", 46, MHD_RESPMEM_PERSISTENT);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	SL_WARN("health http: %s", msg);
}

/* Splits "host:port" / "[v6]:port" / ":port" and binds a listening socket. Returns the fd or
 * -1 with errstr filled. */
static int listen_on(const char *addr, int *port, char *errstr, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(addr, ':'), *h = host;
	struct addrinfo hints, *res = NULL, *ai;
	int fd = -1, one = 1, rc;
	size_t hl;

	if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	    strlen(colon + 1) > 5 || atoi(colon + 1) > 65535) {
		snprintf(errstr, errlen, "http listen address must be host:port, got \"%.200s\"",
			 addr);
		return -1;
	}
	hl = (size_t)(colon - addr);
	if (hl >= sizeof(host)) {
		snprintf(errstr, errlen, "http listen host too long");
		return -1;
	}
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = '\0';
		h = host + 1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res)) != 0) {
		snprintf(errstr, errlen, "http listen address %.200s: %s", addr, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0)) < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 32) == 0)
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		snprintf(errstr, errlen, "cannot listen on %.200s: %s", addr, strerror(errno));
	} else {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			*port = ntohs(ss.ss_family == AF_INET6
					      ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
	}
	freeaddrinfo(res);
	return fd;
}

struct sl_health *sl_health_new(const char *listen_addr, const char *service, char *errstr,
				size_t errlen)
{
	struct sl_health *h = calloc(1, sizeof(*h));

	if (!h) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	h->fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	snprintf(h->service, sizeof(h->service), "%s", service ? service : "");
	/* The label value is ours, but keep it safe for the text format anyway. */
	for (char *c = h->service; *c; c++)
		if (*c == '"' || *c == '\\' || *c == '\n')
			*c = '_';
	if (!listen_addr || !*listen_addr)
		return h;
	if ((h->fd = listen_on(listen_addr, &h->port, errstr, errlen)) < 0)
		goto fail;
	h->daemon = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
		/* first, or MHD logs through its own logger until it reaches it */
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, h->fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)HEALTH_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HEALTH_CONN_TIMEOUT_S, MHD_OPTION_END);
	if (!h->daemon) {
		snprintf(errstr, errlen, "cannot start the http server on %.200s", listen_addr);
		goto fail;
	}
	h->fd = -1; /* MHD owns it now and closes it in MHD_stop_daemon() */
	return h;
fail:
	sl_health_destroy(h);
	return NULL;
}

int sl_health_port(const struct sl_health *h)
{
	return h && h->daemon ? h->port : 0;
}

void sl_health_set_ready(struct sl_health *h, int ready)
{
	if (h)
		atomic_store(&h->ready, ready ? 1 : 0);
}

static struct sl_metric *reg(struct sl_health *h, const char *name, const char *help,
			     enum metric_kind kind)
{
	struct sl_metric *m = NULL;

	if (!h || !name || !valid_name(name)) {
		if (h)
			SL_ERROR("metric name \"%.200s\" is not valid", name ? name : "");
		return NULL;
	}
	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nmetrics; i++) {
		if (!strcmp(h->metrics[i]->name, name)) {
			m = h->metrics[i]->kind == kind ? h->metrics[i] : NULL;
			if (!m)
				SL_ERROR("metric %s registered twice with different kinds", name);
			goto out;
		}
		if (same_family(h->metrics[i]->name, name) && h->metrics[i]->kind != kind) {
			SL_ERROR("metric %s: its family has another kind", name);
			goto out;
		}
	}
	if (h->nmetrics == SL_HEALTH_MAX_METRICS) {
		if (!h->full_logged++) /* callers may register on every tick: say it once */
			SL_ERROR("metric %s not registered: the registry holds %d already", name,
				 SL_HEALTH_MAX_METRICS);
		goto out;
	}
	if (!(m = calloc(1, sizeof(*m))))
		goto out;
	m->kind = kind;
	snprintf(m->name, sizeof(m->name), "%s", name);
	snprintf(m->help, sizeof(m->help), "%s", help ? help : "");
	atomic_init(&m->value, 0);
	h->metrics[h->nmetrics++] = m;
out:
	pthread_mutex_unlock(&h->lock);
	return m;
}

struct sl_metric *sl_health_counter(struct sl_health *h, const char *name, const char *help)
{
	return reg(h, name, help, METRIC_COUNTER);
}

struct sl_metric *sl_health_gauge(struct sl_health *h, const char *name, const char *help)
{
	return reg(h, name, help, METRIC_GAUGE);
}

void sl_metric_add(struct sl_metric *m, int64_t n)
{
	if (!m || (m->kind == METRIC_COUNTER && n < 0))
		return;
	atomic_fetch_add(&m->value, (long long)n);
}

void sl_metric_inc(struct sl_metric *m)
{
	sl_metric_add(m, 1);
}

void sl_metric_set(struct sl_metric *m, int64_t v)
{
	if (m)
		atomic_store(&m->value, (long long)v);
}

int64_t sl_metric_get(const struct sl_metric *m)
{
	return m ? (int64_t)atomic_load(&((struct sl_metric *)m)->value) : 0;
}

void sl_health_destroy(struct sl_health *h)
{
	if (!h)
		return;
	if (h->daemon)
		MHD_stop_daemon(h->daemon);
	if (h->fd >= 0)
		close(h->fd);
	for (size_t i = 0; i < h->nmetrics; i++)
		free(h->metrics[i]);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
