/* log.c - JSON-lines logger on stderr. */
#include "sluice/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Set once by sl_log_init() before any thread starts; read-only afterwards. */
static const char *log_service = "sluice";
static enum sl_log_level log_min = SL_LOG_INFO;

void sl_log_init(const char *service, enum sl_log_level min_level)
{
	log_service = service;
	log_min = min_level;
}

enum sl_log_level sl_log_level_parse(const char *name)
{
	if (!name)
		return SL_LOG_INFO;
	if (!strcasecmp(name, "debug"))
		return SL_LOG_DEBUG;
	if (!strcasecmp(name, "warn") || !strcasecmp(name, "warning"))
		return SL_LOG_WARN;
	if (!strcasecmp(name, "error"))
		return SL_LOG_ERROR;
	return SL_LOG_INFO;
}

int sl_log_enabled(enum sl_log_level level)
{
	return level >= log_min;
}

/* Appends s JSON-escaped to buf (bounded); returns the new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s)
{
	for (; *s && len + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[len++] = '\\';
			buf[len++] = (char)c;
		} else if (c == '\n') {
			buf[len++] = '\\';
			buf[len++] = 'n';
		} else if (c < 0x20) {
			len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
		} else {
			buf[len++] = (char)c;
		}
	}
	return len;
}

void sl_log_write(enum sl_log_level level, const char *file, int line, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	char msg[2048];
	char out[4608];
	struct timespec ts;
	struct tm tm;
	size_t len;
	const char *base = strrchr(file, '/');
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	len = (size_t)snprintf(out, sizeof(out),
			       "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"svc\":\"%s\",\"pid\":%d,\"msg\":\"",
			       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			       tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3], log_service,
			       (int)getpid());
	len = json_escape(out, len, sizeof(out) - 64, msg);
	len += (size_t)snprintf(out + len, sizeof(out) - len, "\",\"src\":\"%s:%d\"}\n",
				base ? base + 1 : file, line);
	if (len >= sizeof(out))
		len = sizeof(out) - 1;
	/* One write(2) per line keeps lines whole between threads and processes. */
	if (write(STDERR_FILENO, out, len) < 0)
		return;
}
