/* util.c - clocks, durations, ids, hashing and output normalisation. */
#include "sluice/util.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t sl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum sl_err sl_parse_duration_ms(const char *text, long *ms)
{
	char *end = NULL;
	double v;
	double mult;

	if (!text || !*text)
		return SL_ERR_INVALID;
	errno = 0;
	v = strtod(text, &end);
	if (errno || end == text || v < 0)
		return SL_ERR_INVALID;
	if (!*end || !strcmp(end, "ms"))
		mult = 1;
	else if (!strcmp(end, "s"))
		mult = 1000;
	else if (!strcmp(end, "m"))
		mult = 60000;
	else if (!strcmp(end, "h"))
		mult = 3600000;
	else if (!strcmp(end, "d"))
		mult = 86400000;
	else
		return SL_ERR_INVALID;
	if (v * mult > 9.0e15)
		return SL_ERR_INVALID;
	*ms = (long)(v * mult + 0.5);
	return SL_OK;
}

void sl_id_new(const char *prefix, char *buf, size_t cap)
{
	unsigned char rnd[5];

	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		/* Fall back on the clock's low bits; ids stay unique enough within one process. */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		for (size_t i = 0; i < sizeof(rnd); i++)
			rnd[i] = (unsigned char)(ts.tv_nsec >> (i * 5));
	}
	snprintf(buf, cap, "%s%012llx%02x%02x%02x%02x%02x", prefix,
		 (unsigned long long)sl_now_ms() & 0xffffffffffffULL, rnd[0], rnd[1], rnd[2],
		 rnd[3], rnd[4]);
}

void sl_sha256_hex(const void *data, size_t len, char *hex, size_t cap)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (cap < 65) {
		if (cap)
			hex[0] = '\0';
		return;
	}
	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + i * 2, 3, "%02x", md[i]);
}

size_t sl_strlcpy(char *dst, const char *src, size_t cap)
{
	size_t n = strlen(src);

	if (cap) {
		size_t c = n < cap - 1 ? n : cap - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

char *sl_output_to_json(const char *data, size_t len)
{
	json_t *v;
	char *out;

	while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' ||
		       data[len - 1] == '\t'))
		len--;
	if (!len)
		return strdup("null");
	v = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (!v)
		v = json_stringn_nocheck(data, len);
	if (!v)
		return NULL;
	out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(v);
	return out;
}

int sl_queue_is_band(const char *queue)
{
	size_t n = strlen(queue);

	return (n >= 5 && !strcmp(queue + n - 5, ".high")) ||
	       (n >= 4 && !strcmp(queue + n - 4, ".low"));
}
