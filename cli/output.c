/* output.c - aligned tables, JSON printing, times and durations for the CLI's output. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

struct out_row {
	char **cells; /* NULL for a note */
	char *note;
};

struct out_table {
	size_t ncols;
	const char *const *headers;
	struct out_row *rows;
	size_t nrows, cap;
};

/* Most rows a table holds: status --all of a huge fan-out is still bounded in memory. */
#define OUT_MAX_ROWS 2000000

/* Length of the UTF-8 sequence at p, 1 for a broken one (shown as '?'). */
static size_t seq_len(const unsigned char *p)
{
	size_t k = 1, j;

	if (*p >= 0xc0 && *p < 0xe0)
		k = 2;
	else if (*p >= 0xe0 && *p < 0xf0)
		k = 3;
	else if (*p >= 0xf0 && *p < 0xf8)
		k = 4;
	for (j = 1; j < k; j++)
		if ((p[j] & 0xc0) != 0x80)
			return 1; /* also stops at the NUL */
	return k;
}

/* Number of characters of p, counting no further than limit. */
static size_t count_chars(const unsigned char *p, size_t limit)
{
	size_t n = 0;

	for (; *p && n < limit; n++)
		p += seq_len(p);
	return n;
}

void out_clip(const char *src, size_t maxchars, char *dst, size_t cap)
{
	const unsigned char *p = (const unsigned char *)(src ? src : "");
	size_t n = 0, chars = 0, keep = maxchars;

	if (cap == 0)
		return;
	if (maxchars > 3 && count_chars(p, maxchars + 1) > maxchars)
		keep = maxchars - 3; /* room for the "..." */
	while (*p && chars < keep) {
		size_t k = seq_len(p);
		if (n + k + 4 > cap)
			break;
		if (k == 1 && (*p < 0x20 || *p == 0x7f))
			dst[n++] = ' ';
		else if (k == 1 && *p >= 0x80)
			dst[n++] = '?';
		else if (k == 2 && p[0] == 0xc2 && p[1] < 0xa0)
			dst[n++] = ' '; /* C1 controls: terminals may act on them */
		else {
			memcpy(dst + n, p, k);
			n += k;
		}
		p += k;
		chars++;
	}
	if (*p && n + 4 <= cap) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

/* Display width of s, counting UTF-8 characters. */
static size_t width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

struct out_table *out_table_new(size_t ncols, const char *const *headers)
{
	struct out_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ncols = ncols;
	t->headers = headers;
	return t;
}

static struct out_row *new_row(struct out_table *t)
{
	if (t->nrows >= OUT_MAX_ROWS)
		return NULL;
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct out_row *rows = realloc(t->rows, cap * sizeof(*rows));
		if (!rows)
			return NULL;
		t->rows = rows;
		t->cap = cap;
	}
	memset(&t->rows[t->nrows], 0, sizeof(t->rows[0]));
	return &t->rows[t->nrows++];
}

int out_table_add(struct out_table *t, const char *const *cells)
{
	struct out_row *row = new_row(t);
	size_t i;

	if (!row || !(row->cells = calloc(t->ncols, sizeof(char *))))
		return -1;
	for (i = 0; i < t->ncols; i++) {
		char buf[OUT_CELL_MAX * 4 + 8];
		out_clip(cells[i] ? cells[i] : "-", OUT_CELL_MAX, buf, sizeof(buf));
		if (!(row->cells[i] = strdup(buf)))
			return -1;
	}
	return 0;
}

int out_table_add_note(struct out_table *t, const char *text)
{
	struct out_row *row = new_row(t);
	char buf[1024];

	if (!row)
		return -1;
	out_clip(text, 250, buf, sizeof(buf));
	return (row->note = strdup(buf)) ? 0 : -1;
}

void out_table_print(const struct out_table *t, FILE *fp)
{
	size_t *w = calloc(t->ncols, sizeof(size_t));
	size_t r, c;

	if (!w)
		return;
	for (c = 0; c < t->ncols; c++)
		w[c] = width(t->headers[c]);
	for (r = 0; r < t->nrows; r++)
		for (c = 0; t->rows[r].cells && c < t->ncols; c++)
			if (width(t->rows[r].cells[c]) > w[c])
				w[c] = width(t->rows[r].cells[c]);
	for (c = 0; c < t->ncols; c++)
		fprintf(fp, "%s%-*s", c ? "  " : "", c + 1 < t->ncols ? (int)w[c] : 0,
			t->headers[c]);
	fputc('\n', fp);
	for (r = 0; r < t->nrows; r++) {
		if (!t->rows[r].cells) {
			fprintf(fp, "%s\n", t->rows[r].note);
			continue;
		}
		for (c = 0; c < t->ncols; c++) {
			const char *cell = t->rows[r].cells[c];
			size_t pad = c + 1 < t->ncols ? w[c] - width(cell) : 0;
			fprintf(fp, "%s%s%*s", c ? "  " : "", cell, (int)pad, "");
		}
		fputc('\n', fp);
	}
	free(w);
}

void out_table_destroy(struct out_table *t)
{
	size_t r, c;

	if (!t)
		return;
	for (r = 0; r < t->nrows; r++) {
		if (t->rows[r].cells)
			for (c = 0; c < t->ncols; c++)
				free(t->rows[r].cells[c]);
		free(t->rows[r].cells);
		free(t->rows[r].note);
	}
	free(t->rows);
	free(t);
}

int out_json(json_t *v)
{
	if (!v) {
		fprintf(stderr, "sluice: out of memory\n");
		return CLI_FAILED;
	}
	json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
	fputc('\n', stdout);
	return CLI_OK;
}

void out_time(int64_t ms, char *buf, size_t cap)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || !gmtime_r(&secs, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "-");
}

void out_duration(int64_t ms, char *buf, size_t cap)
{
	if (ms < 0)
		snprintf(buf, cap, "-");
	else if (ms < 1000)
		snprintf(buf, cap, "%dms", (int)ms);
	else if (ms < 60000)
		snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
	else if (ms < 3600000)
		snprintf(buf, cap, "%dm%02ds", (int)(ms / 60000), (int)(ms / 1000 % 60));
	else if (ms < 86400000)
		snprintf(buf, cap, "%dh%02dm", (int)(ms / 3600000), (int)(ms / 60000 % 60));
	else
		snprintf(buf, cap, "%lldd%02dh", (long long)(ms / 86400000),
			 (int)(ms / 3600000 % 24));
}

int64_t out_int(const char *text, int64_t def)
{
	char *end = NULL;
	long long v;

	if (!text || !*text)
		return def;
	errno = 0;
	v = strtoll(text, &end, 10);
	return errno || *end ? def : (int64_t)v;
}

void out_json_set_int(json_t *obj, const char *key, const char *text)
{
	char *end = NULL;
	long long v;

	if (!text || !*text) {
		json_object_set_new(obj, key, json_null());
		return;
	}
	errno = 0;
	v = strtoll(text, &end, 10);
	json_object_set_new(obj, key, errno || *end ? json_null() : json_integer(v));
}

void out_json_set_str(json_t *obj, const char *key, const char *text)
{
	json_object_set_new(obj, key, text ? json_string(text) : json_null());
}

void out_json_set_parsed(json_t *obj, const char *key, const char *text)
{
	json_t *v;

	if (!text || !*text) {
		json_object_set_new(obj, key, json_null());
		return;
	}
	v = json_loads(text, JSON_DECODE_ANY, NULL);
	if (!v)
		v = json_string(text);
	json_object_set_new(obj, key, v);
}
