/* builtins.c - tasks that run inside the worker without a process: noop, echo, sum, sleep,
 * http_get (libcurl, to a file in the run's work dir) and sha256 (OpenSSL EVP). */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/flow.h"
#include "sluice/util.h"
#include "worker.h"

struct builtin_ctx {
	const char *input; /* JSON text, not NUL-terminated */
	size_t len;
	const char *run_dir; /* absolute, may not exist yet; NULL when unknown */
	int (*should_stop)(void *);
	void *ud;
	int64_t deadline_ms;
	struct worker_outcome *out;
};

__attribute__((format(printf, 2, 3))) static void fail(struct builtin_ctx *c, const char *fmt,
							...)
{
	va_list ap;

	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
	va_start(ap, fmt);
	vsnprintf(c->out->error, sizeof(c->out->error), fmt, ap);
	va_end(ap);
}

static void succeed(struct builtin_ctx *c, char *json)
{
	if (!json) {
		fail(c, "out of memory");
		return;
	}
	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	c->out->output = json;
}

/* Parses the input; an empty input is JSON null. Returns NULL (and fails c) when it is not
 * JSON. Caller frees with json_decref(). */
static json_t *input_json(struct builtin_ctx *c, const char *name)
{
	json_error_t jerr;
	json_t *v;

	if (c->len == 0)
		return json_null();
	if (!(v = json_loadb(c->input, c->len, JSON_DECODE_ANY, &jerr))) {
		fail(c, "%s: input is not JSON: %s", name, jerr.text);
	}
	return v;
}

static void builtin_noop(struct builtin_ctx *c)
{
	succeed(c, strdup("null"));
}

/* Output = input: JSON as given (compacted); text that is not JSON becomes a JSON string,
 * the same rule as a command's stdout. */
static void builtin_echo(struct builtin_ctx *c)
{
	succeed(c, sl_output_to_json(c->input ? c->input : "", c->len));
}

/* Sum of a JSON array of numbers: an integer while every element is one (and the sum fits
 * 64 bits), else a float. */
static void builtin_sum(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "sum"), *e;
	long long isum = 0;
	double fsum = 0;
	int all_int = 1;
	size_t i;

	if (!v)
		return;
	if (!json_is_array(v)) {
		fail(c, "sum: input must be a JSON array of numbers, got %s",
		     json_is_null(v) ? "nothing" : "another JSON type");
		goto out;
	}
	json_array_foreach(v, i, e) {
		if (json_is_integer(e)) {
			long long n = (long long)json_integer_value(e);
			if (all_int && __builtin_add_overflow(isum, n, &isum))
				all_int = 0;
			fsum += (double)n;
		} else if (json_is_real(e)) {
			all_int = 0;
			fsum += json_real_value(e);
		} else {
			fail(c, "sum: element %zu is not a number", i);
			goto out;
		}
	}
	if (all_int) {
		char buf[32];
		snprintf(buf, sizeof(buf), "%lld", isum);
		succeed(c, strdup(buf));
	} else if (!isfinite(fsum)) {
		fail(c, "sum: result is not a finite number");
	} else {
		json_t *r = json_real(fsum);
		succeed(c, r ? json_dumps(r, JSON_ENCODE_ANY | JSON_COMPACT) : NULL);
		json_decref(r);
	}
out:
	json_decref(v);
}

/* Sleeps input seconds (a number), in short steps so a stop request or the deadline ends
 * it within ~50 ms. */
static void builtin_sleep(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "sleep");
	double secs;
	int64_t until;

	if (!v)
		return;
	if (!json_is_number(v) || (secs = json_number_value(v)) < 0 || !isfinite(secs) ||
	    secs > 366.0 * 86400) {
		fail(c, "sleep: input must be a number of seconds (0 to one year)");
		goto out;
	}
	until = sl_mono_ms() + (int64_t)(secs * 1000.0 + 0.5);
	for (;;) {
		int64_t now = sl_mono_ms(), step = until - now;

		if (c->should_stop && c->should_stop(c->ud)) {
			c->out->stopped = 1;
			c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
			snprintf(c->out->error, sizeof(c->out->error), "stopped");
			goto out;
		}
		if (c->deadline_ms && now >= c->deadline_ms && now < until) {
			c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT;
			snprintf(c->out->error, sizeof(c->out->error), "timed out");
			goto out;
		}
		if (step <= 0)
			break;
		if (step > 50)
			step = 50;
		if (c->deadline_ms && c->deadline_ms - now < step)
			step = c->deadline_ms - now;
		usleep((useconds_t)(step > 0 ? step : 1) * 1000);
	}
	succeed(c, strdup("null"));
out:
	json_decref(v);
}

/* ---- http_get and sha256 ---- */

#define HTTP_DEFAULT_MAX_BYTES (100LL * 1024 * 1024)
#define HTTP_MAX_MAX_BYTES (1LL << 50)
#define HTTP_DEFAULT_TIMEOUT_MS (5L * 60 * 1000)
#define HTTP_CONNECT_TIMEOUT_MS 30000L
#define HTTP_MAX_REDIRECTS 5L
#define HTTP_URL_MAX 8192
#define BUILTIN_PATH_MAX 1024 /* a relative path given in the input */
#define HASH_CHUNK 65536

static void stopped(struct builtin_ctx *c)
{
	c->out->stopped = 1;
	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
	snprintf(c->out->error, sizeof(c->out->error), "stopped");
}

static void timed_out(struct builtin_ctx *c)
{
	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT;
	snprintf(c->out->error, sizeof(c->out->error), "timed out");
}

/* Returns NULL when p is a usable path relative to the run's work dir, else why not. */
static const char *bad_rel_path(const char *p)
{
	size_t n = strlen(p);

	if (n == 0)
		return "is empty";
	if (n > BUILTIN_PATH_MAX)
		return "is too long";
	if (p[0] == '/')
		return "must be relative to the run's work dir, not absolute";
	if (p[n - 1] == '/')
		return "names a directory, not a file";
	for (const char *q = p; *q;) {
		size_t len = strcspn(q, "/");

		if (len == 2 && q[0] == '.' && q[1] == '.')
			return "must not contain '..'";
		q += len;
		if (*q)
			q++;
	}
	for (const char *q = p; *q; q++)
		if ((unsigned char)*q < 0x20)
			return "holds a control character";
	return NULL;
}

/* Creates every directory of path from offset from on (path is a file path whose leading
 * part up to from exists or is created here too). Returns 0 or -1 with errno set. */
static int make_parents(char *path, size_t from)
{
	for (char *s = path + from; (s = strchr(s, '/')); s++) {
		if (s == path)
			continue;
		*s = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			*s = '/';
			return -1;
		}
		*s = '/';
	}
	return 0;
}

/* What an error message may show of a URL: scheme, host, port and path, without user info
 * or query (they may hold credentials). Writes into buf. */
static void url_for_humans(const char *url, char *buf, size_t cap)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		curl_url_get(u, CURLUPART_PATH, &path, 0);
		snprintf(buf, cap, "%s://%s%s%s%.300s", scheme, host, port ? ":" : "",
			 port ? port : "", path ? path : "");
	} else {
		snprintf(buf, cap, "(unparsable url)");
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
}

static void to_hex(const unsigned char *md, unsigned len, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned i = 0; i < len; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * len] = '\0';
}

struct http_sink {
	struct builtin_ctx *c;
	int fd;
	EVP_MD_CTX *md;
	long long bytes;
	long long max;
	int too_big;
	int write_errno;
	int stop;     /* aborted by should_stop */
	int deadline; /* aborted by the task's timeout */
};

/* @locality slot thread (inside curl_easy_perform). Returning less than asked aborts. */
static size_t http_write(char *data, size_t size, size_t n, void *ud)
{
	struct http_sink *k = ud;
	size_t len = size * n, off = 0;

	if ((long long)len > k->max - k->bytes) {
		k->too_big = 1;
		return 0;
	}
	while (off < len) {
		ssize_t w = write(k->fd, data + off, len - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			k->write_errno = errno;
			return 0;
		}
		off += (size_t)w;
	}
	EVP_DigestUpdate(k->md, data, len);
	k->bytes += (long long)len;
	return len;
}

/* Called by curl about once a second even when no data flows: lease loss, hard stop and
 * the task's timeout abort the transfer here. */
static int http_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			 curl_off_t ulnow)
{
	struct http_sink *k = ud;

	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (k->c->should_stop && k->c->should_stop(k->c->ud)) {
		k->stop = 1;
		return 1;
	}
	if (k->c->deadline_ms && sl_mono_ms() >= k->c->deadline_ms) {
		k->deadline = 1;
		return 1;
	}
	if (dltotal > 0 && (long long)dltotal > k->max) {
		k->too_big = 1;
		return 1;
	}
	return 0;
}

/* Reads the http_get input: an object {url, path, max_bytes, timeout} or a URL string
 * (the file is then named after the URL's last path segment). Fills *url, *rel (borrowed
 * from v or from namebuf). Returns 0, or -1 after failing c. */
static int http_input(struct builtin_ctx *c, json_t *v, const char **url, const char **rel,
		      long long *max, long *timeout_ms, char *namebuf, size_t namecap)
{
	const char *key, *why;
	json_t *e;

	*max = HTTP_DEFAULT_MAX_BYTES;
	*timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
	*rel = NULL;
	if (json_is_string(v)) {
		const char *s = json_string_value(v), *end = s + strcspn(s, "?#"), *slash = end;

		while (slash > s && slash[-1] != '/')
			slash--;
		if (slash == end || (size_t)(end - slash) >= namecap || slash == s) {
			fail(c, "http_get: cannot name the file after this url; give "
				"{\"url\": ..., \"path\": ...}");
			return -1;
		}
		memcpy(namebuf, slash, (size_t)(end - slash));
		namebuf[end - slash] = '\0';
		*url = s;
		*rel = namebuf;
	} else if (json_is_object(v)) {
		*url = NULL;
		json_object_foreach(v, key, e) {
			if (!strcmp(key, "url") && json_is_string(e)) {
				*url = json_string_value(e);
			} else if (!strcmp(key, "path") && json_is_string(e)) {
				*rel = json_string_value(e);
			} else if (!strcmp(key, "max_bytes") && json_is_integer(e)) {
				*max = (long long)json_integer_value(e);
				if (*max <= 0 || *max > HTTP_MAX_MAX_BYTES) {
					fail(c, "http_get: max_bytes must be between 1 and %lld",
					     HTTP_MAX_MAX_BYTES);
					return -1;
				}
			} else if (!strcmp(key, "timeout") && json_is_string(e)) {
				if (sl_parse_duration_ms(json_string_value(e), timeout_ms) != SL_OK ||
				    *timeout_ms <= 0) {
					fail(c, "http_get: bad timeout '%.100s' (e.g. 30s, 2m)",
					     json_string_value(e));
					return -1;
				}
			} else if (!strcmp(key, "timeout") && json_is_number(e) &&
				   json_number_value(e) > 0 && json_number_value(e) < 86400.0 * 7) {
				*timeout_ms = (long)(json_number_value(e) * 1000.0);
			} else {
				fail(c, "http_get: bad or unknown input key '%.100s' (allowed: url "
					"(string), path (string), max_bytes (integer), timeout "
					"(duration))",
				     key);
				return -1;
			}
		}
		if (!*url || !*rel) {
			fail(c, "http_get: input needs \"url\" and \"path\"");
			return -1;
		}
	} else {
		fail(c, "http_get: input must be {\"url\": ..., \"path\": ...} or a url string");
		return -1;
	}
	if (strlen(*url) > HTTP_URL_MAX || (strncasecmp(*url, "http://", 7) != 0 &&
					    strncasecmp(*url, "https://", 8) != 0)) {
		fail(c, "http_get: url must be http:// or https:// (at most %d bytes)",
		     HTTP_URL_MAX);
		return -1;
	}
	if ((why = bad_rel_path(*rel))) {
		fail(c, "http_get: path '%.200s' %s", *rel, why);
		return -1;
	}
	return 0;
}

/* Downloads a URL into a file of the run's work dir (temp file + rename, so the name only
 * ever shows a complete body), with a size cap, a timeout and the body's SHA-256. */
static void builtin_http_get(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "http_get"), *res = NULL;
	const char *url = NULL, *rel = NULL, *base;
	char final[PATH_MAX], tmp[PATH_MAX], shown[512], name[256];
	char errbuf[CURL_ERROR_SIZE] = "", hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	long long max;
	long timeout_ms, status = 0;
	struct http_sink k = {.c = c, .fd = -1};
	CURL *curl = NULL;
	CURLcode rc;
	char *ctype = NULL;
	size_t dirlen;
	int tmp_made = 0;

	if (!v)
		return;
	if (http_input(c, v, &url, &rel, &max, &timeout_ms, name, sizeof(name)) != 0)
		goto out;
	url_for_humans(url, shown, sizeof(shown));
	if (!c->run_dir || c->run_dir[0] != '/') {
		fail(c, "http_get: no work dir for this run");
		goto out;
	}
	dirlen = strlen(c->run_dir);
	base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
	if ((size_t)snprintf(final, sizeof(final), "%s/%s", c->run_dir, rel) >= sizeof(final) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%.*s.%s.XXXXXX.part",
			     (int)(strlen(final) - strlen(base)), final, base) >= sizeof(tmp)) {
		fail(c, "http_get: path too long");
		goto out;
	}
	/* The run dir's parent (work-dir) is the worker's; create the run dir and below. */
	if (make_parents(final, dirlen > 1 ? dirlen - 1 : 0) != 0 ||
	    (mkdir(c->run_dir, 0755) != 0 && errno != EEXIST)) {
		fail(c, "http_get: cannot create the directory of %.300s: %s", final,
		     strerror(errno));
		goto out;
	}
	if ((k.fd = mkstemps(tmp, 5)) < 0) {
		fail(c, "http_get: cannot create %.300s: %s", tmp, strerror(errno));
		goto out;
	}
	tmp_made = 1;
	fchmod(k.fd, 0644);
	k.max = max;
	if (!(k.md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(k.md, EVP_sha256(), NULL) != 1 ||
	    !(curl = curl_easy_init())) {
		fail(c, "http_get: out of memory");
		goto out;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(curl, CURLOPT_MAXREDIRS, HTTP_MAX_REDIRECTS);
	curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
			 timeout_ms < HTTP_CONNECT_TIMEOUT_MS ? timeout_ms : HTTP_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice-worker/1");
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &k);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, http_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &k);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (k.stop) {
		stopped(c);
	} else if (k.deadline) {
		timed_out(c);
	} else if (k.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		fail(c, "http_get: %s: body exceeds max_bytes (%lld bytes); transfer aborted", shown,
		     max);
	} else if (rc == CURLE_HTTP_RETURNED_ERROR) {
		fail(c, "http_get: %s: HTTP status %ld", shown, status);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		fail(c, "http_get: %s: timed out after %ld ms (input timeout)", shown, timeout_ms);
	} else if (k.write_errno) {
		fail(c, "http_get: cannot write %.300s: %s", tmp, strerror(k.write_errno));
	} else if (rc == CURLE_TOO_MANY_REDIRECTS) {
		fail(c, "http_get: %s: more than %ld redirects", shown, HTTP_MAX_REDIRECTS);
	} else if (rc != CURLE_OK) {
		fail(c, "http_get: %s: %s", shown, errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	if (rc != CURLE_OK || c->out->status != SLUICE__V1__TASK_STATUS__TASK_STATUS_UNSPECIFIED)
		goto out;
	{
		int rc_sync = fsync(k.fd), rc_close = close(k.fd);

		k.fd = -1;
		if (rc_sync != 0 || rc_close != 0) {
			fail(c, "http_get: cannot write %.300s: %s", tmp, strerror(errno));
			goto out;
		}
	}
	if (rename(tmp, final) != 0) {
		fail(c, "http_get: cannot rename %.300s to %.300s: %s", tmp, final, strerror(errno));
		goto out;
	}
	tmp_made = 0;
	EVP_DigestFinal_ex(k.md, md, &mdlen);
	to_hex(md, mdlen, hex);
	curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ctype);
	res = json_pack("{s:s, s:I, s:s, s:i, s:s?, s:s}", "path", final, "bytes",
			(json_int_t)k.bytes, "sha256", hex, "status", (int)status, "content_type",
			ctype, "url", shown);
	succeed(c, res ? json_dumps(res, JSON_COMPACT) : NULL);
out:
	if (k.fd >= 0)
		close(k.fd);
	if (tmp_made) /* a failed or stopped transfer leaves nothing behind */
		unlink(tmp);
	EVP_MD_CTX_free(k.md);
	curl_easy_cleanup(curl);
	json_decref(res);
	json_decref(v);
}

/* SHA-256 of a file (streamed; relative paths are in the run's work dir) or of a text. */
static void builtin_sha256(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "sha256"), *p = NULL, *t = NULL;
	const char *path = NULL, *why;
	char full[PATH_MAX], hex[2 * EVP_MAX_MD_SIZE + 1], *buf = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = NULL;
	struct stat sb;
	int fd = -1;

	if (!v)
		return;
	if (json_is_string(v)) {
		path = json_string_value(v);
	} else if (json_is_object(v) && json_object_size(v) == 1 &&
		   ((p = json_object_get(v, "path")) || (t = json_object_get(v, "text"))) &&
		   json_is_string(p ? p : t)) {
		path = p ? json_string_value(p) : NULL;
	} else {
		fail(c, "sha256: input must be a path string, {\"path\": ...} or {\"text\": ...}");
		goto out;
	}
	if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		fail(c, "sha256: out of memory");
		goto out;
	}
	if (t) {
		EVP_DigestUpdate(ctx, json_string_value(t), json_string_length(t));
		goto done;
	}
	if (path[0] == '/') {
		if (strlen(path) >= sizeof(full)) {
			fail(c, "sha256: path too long");
			goto out;
		}
		snprintf(full, sizeof(full), "%s", path);
	} else if ((why = bad_rel_path(path))) {
		fail(c, "sha256: path '%.200s' %s", path, why);
		goto out;
	} else if (!c->run_dir ||
		   (size_t)snprintf(full, sizeof(full), "%s/%s", c->run_dir, path) >= sizeof(full)) {
		fail(c, "sha256: no work dir for a relative path, or path too long");
		goto out;
	}
	if ((fd = open(full, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		fail(c, "sha256: cannot open %.300s: %s", full, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		fail(c, "sha256: %.300s is not a regular file", full);
		goto out;
	}
	if (!(buf = malloc(HASH_CHUNK))) {
		fail(c, "sha256: out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, HASH_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail(c, "sha256: cannot read %.300s: %s", full, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		if (c->should_stop && c->should_stop(c->ud)) {
			stopped(c);
			goto out;
		}
		if (c->deadline_ms && sl_mono_ms() >= c->deadline_ms) {
			timed_out(c);
			goto out;
		}
	}
done:
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	to_hex(md, mdlen, hex);
	{
		json_t *s = json_string(hex);
		succeed(c, s ? json_dumps(s, JSON_ENCODE_ANY) : NULL);
		json_decref(s);
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	EVP_MD_CTX_free(ctx);
	json_decref(v);
}

static const struct {
	const char *name;
	void (*fn)(struct builtin_ctx *c);
} builtins[] = {
	{"noop", builtin_noop},
	{"echo", builtin_echo},
	{"sum", builtin_sum},
	{"sleep", builtin_sleep},
	{"http_get", builtin_http_get},
	{"sha256", builtin_sha256},
};

int worker_builtin_is_inline(const char *name)
{
	return sl_flow_builtin_is_inline(name);
}

void worker_builtin_run(const char *name, const void *input, size_t len, const char *run_dir,
			int (*should_stop)(void *), void *ud, int64_t deadline_ms,
			struct worker_outcome *out)
{
	struct builtin_ctx c = {.input = input, .len = input ? len : 0, .run_dir = run_dir,
				.should_stop = should_stop, .ud = ud, .deadline_ms = deadline_ms,
				.out = out};

	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		if (!strcmp(builtins[i].name, name)) {
			builtins[i].fn(&c);
			return;
		}
	}
	fail(&c, "unknown builtin: %.200s", name);
}
