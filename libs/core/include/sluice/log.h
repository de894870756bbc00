/* log.h - the one logger: JSON lines on stderr, level checked before arguments are evaluated. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum sl_log_level {
	SL_LOG_DEBUG = 0,
	SL_LOG_INFO = 1,
	SL_LOG_WARN = 2,
	SL_LOG_ERROR = 3,
};

/* Sets the service name and the minimum level; call once from main before threads start.
 * service is borrowed and must outlive the process (a string literal). */
void sl_log_init(const char *service, enum sl_log_level min_level);

/* Parses "debug", "info", "warn", "error"; returns SL_LOG_INFO for anything else. */
enum sl_log_level sl_log_level_parse(const char *name);

/* Returns 1 when messages of this level are written. Thread-safe. */
int sl_log_enabled(enum sl_log_level level);

/* Writes one JSON line {"ts","level","svc","msg","src"}; use the macros below. Thread-safe. */
void sl_log_write(enum sl_log_level level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define sl_log(level, ...)                                                                 \
	do {                                                                               \
		if (sl_log_enabled(level))                                                 \
			sl_log_write(level, __FILE__, __LINE__, __VA_ARGS__);              \
	} while (0)
#define SL_DEBUG(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)
#define SL_INFO(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define SL_WARN(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define SL_ERROR(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
