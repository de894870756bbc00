/* template.c - "${expr}" templates: compiling, evaluating, rendering values as argv text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_internal.h"

struct seg {
	char *text; /* literal text, or NULL for an expression */
	size_t len;
	struct sl_expr *expr;
};

struct sl_tmpl {
	json_t *literal;      /* a map source that is a JSON array */
	struct sl_expr *whole; /* the template is exactly one expression */
	struct seg *segs;     /* otherwise: text with embedded expressions */
	size_t nsegs;
};

/* A growable buffer with a hard maximum. */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
	size_t max;
	enum sl_err rc;
};

static int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->rc != SL_OK)
		return -1;
	if (n > b->max || b->len > b->max - n) {
		b->rc = SL_ERR_TOO_BIG;
		return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 64;
		char *np;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if (!(np = realloc(b->p, ncap))) {
			b->rc = SL_ERR_NOMEM;
			return -1;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
	return sbuf_add(data, buffer, size);
}

/* The shortest text that reads back as the same double, always with a '.' or exponent. */
static int add_real(struct sbuf *b, double d)
{
	char tmp[40];

	int prec;

	for (prec = 1; prec < 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
	/* %g writes 100 as 1e+02; keep exponents for very large or small numbers only. */
	if (strchr(tmp, 'e') && fabs(d) >= 1e-4 && fabs(d) < 1e16) {
		int dec = prec - 1 - (int)floor(log10(fabs(d)));
		snprintf(tmp, sizeof(tmp), "%.*f", dec > 0 ? dec : 0, d);
	}
	if (!strpbrk(tmp, ".eEn"))
		strcat(tmp, ".0");
	return sbuf_add(b, tmp, strlen(tmp));
}

/* Strings raw, floats in their shortest form, everything else as compact JSON. */
static int add_text(struct sbuf *b, json_t *v)
{
	if (!v)
		return sbuf_add(b, "null", 4);
	if (json_is_string(v))
		return sbuf_add(b, json_string_value(v), json_string_length(v));
	if (json_is_real(v) && isfinite(json_real_value(v)))
		return add_real(b, json_real_value(v));
	if (json_dump_callback(v, dump_cb, b, JSON_ENCODE_ANY | JSON_COMPACT) < 0) {
		if (b->rc == SL_OK)
			b->rc = SL_ERR_NOMEM;
		return -1;
	}
	return 0;
}

char *sl_value_to_text(json_t *v)
{
	struct sbuf b = {.max = SL_FLOW_MAX_TEXT};

	if (add_text(&b, v) < 0 || sbuf_add(&b, "", 0) < 0) {
		free(b.p);
		return NULL;
	}
	if (!b.p)
		return strdup("");
	return b.p;
}

char *sl_json_dump_capped(json_t *v, size_t max, enum sl_err *rc)
{
	struct sbuf b = {.max = max};

	*rc = SL_OK;
	if (json_dump_callback(v, dump_cb, &b, JSON_ENCODE_ANY | JSON_COMPACT) < 0 ||
	    sbuf_add(&b, "", 0) < 0) {
		*rc = b.rc != SL_OK ? b.rc : SL_ERR_NOMEM;
		free(b.p);
		return NULL;
	}
	return b.p;
}

void sl_tmpl_free(struct sl_tmpl *t)
{
	if (!t)
		return;
	json_decref(t->literal);
	sl_expr_free(t->whole);
	for (size_t i = 0; i < t->nsegs; i++) {
		free(t->segs[i].text);
		sl_expr_free(t->segs[i].expr);
	}
	free(t->segs);
	free(t);
}

static int add_seg(struct sl_tmpl *t, size_t *cap, char *text, size_t len, struct sl_expr *expr)
{
	if (t->nsegs == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		struct seg *ns = realloc(t->segs, ncap * sizeof(*ns));
		if (!ns)
			return -1;
		t->segs = ns;
		*cap = ncap;
	}
	t->segs[t->nsegs].text = text;
	t->segs[t->nsegs].len = len;
	t->segs[t->nsegs].expr = expr;
	t->nsegs++;
	return 0;
}

/* Index of the '}' closing the "${" whose body starts at s[i], skipping string literals and
 * nested braces; or (size_t)-1. */
static size_t find_close(const char *s, size_t n, size_t i)
{
	int depth = 1;

	while (i < n) {
		char c = s[i];
		if (c == '"' || c == '\'') {
			i++;
			while (i < n && s[i] != c) {
				if (s[i] == '\\')
					i++;
				i++;
			}
			if (i >= n)
				return (size_t)-1;
		} else if (c == '{') {
			depth++;
		} else if (c == '}' && --depth == 0) {
			return i;
		}
		i++;
	}
	return (size_t)-1;
}

/* A map source written as an expression: "range(...)", "len(...)" or "[...]". */
static int looks_like_expr(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '[')
		return 1;
	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
	       (*s >= '0' && *s <= '9'))
		s++;
	while (*s == ' ' || *s == '\t')
		s++;
	return *s == '(';
}

struct sl_tmpl *sl_tmpl_compile(const char *s, int as_source, char *err, size_t errlen)
{
	struct sl_tmpl *t = calloc(1, sizeof(*t));
	size_t n = strlen(s), i = 0, cap = 0;
	char *text = NULL;
	size_t tlen = 0;

	if (!t || !(text = malloc(n + 1))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (as_source && !strstr(s, "${")) {
		json_t *v = json_loads(s, 0, NULL);
		if (json_is_array(v)) {
			t->literal = v;
			free(text);
			return t;
		}
		json_decref(v);
	}
	if (as_source && looks_like_expr(s)) {
		if (!(t->whole = sl_expr_parse(s, n, err, errlen)))
			goto fail;
		free(text);
		return t;
	}
	while (i < n) {
		if (s[i] == '$' && i + 2 < n && s[i + 1] == '$' && s[i + 2] == '{') {
			text[tlen++] = '$';
			text[tlen++] = '{';
			i += 3;
		} else if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
			size_t end = find_close(s, n, i + 2);
			struct sl_expr *e;
			if (end == (size_t)-1) {
				snprintf(err, errlen, "unterminated '${' in '%.80s'", s);
				goto fail;
			}
			if (tlen) {
				char *lit = strndup(text, tlen);
				if (!lit || add_seg(t, &cap, lit, tlen, NULL) < 0) {
					free(lit);
					snprintf(err, errlen, "out of memory");
					goto fail;
				}
				tlen = 0;
			}
			if (!(e = sl_expr_parse(s + i + 2, end - (i + 2), err, errlen)))
				goto fail;
			if (add_seg(t, &cap, NULL, 0, e) < 0) {
				sl_expr_free(e);
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			i = end + 1;
		} else {
			text[tlen++] = s[i++];
		}
	}
	if (tlen || t->nsegs == 0) {
		char *lit = strndup(text, tlen);
		if (!lit || add_seg(t, &cap, lit, tlen, NULL) < 0) {
			free(lit);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	if (t->nsegs == 1 && t->segs[0].expr) {
		t->whole = t->segs[0].expr;
		t->segs[0].expr = NULL;
		free(t->segs);
		t->segs = NULL;
		t->nsegs = 0;
	}
	free(text);
	return t;
fail:
	free(text);
	sl_tmpl_free(t);
	return NULL;
}

int sl_tmpl_is_text(const struct sl_tmpl *t)
{
	return !t->literal && !t->whole && t->nsegs <= 1;
}

int sl_tmpl_check(const struct sl_tmpl *t, const struct sl_expr_scope *scope, char *err,
		  size_t errlen)
{
	if (t->whole && sl_expr_check(t->whole, scope, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < t->nsegs; i++)
		if (t->segs[i].expr && sl_expr_check(t->segs[i].expr, scope, err, errlen) < 0)
			return -1;
	return 0;
}

enum sl_err sl_tmpl_eval(const struct sl_tmpl *t, const struct sl_expand_ctx *ctx, json_t *vars,
			 json_t **out, char *err, size_t errlen)
{
	struct sbuf b = {.max = SL_FLOW_MAX_TEXT};
	enum sl_err rc = SL_OK;

	*out = NULL;
	if (t->literal) {
		*out = json_incref(t->literal);
		return SL_OK;
	}
	if (t->whole) {
		*out = sl_expr_eval(t->whole, ctx, vars, &rc, err, errlen);
		return rc;
	}
	for (size_t i = 0; i < t->nsegs; i++) {
		const struct seg *sg = &t->segs[i];
		json_t *v;

		if (sg->text) {
			sbuf_add(&b, sg->text, sg->len);
		} else {
			if (!(v = sl_expr_eval(sg->expr, ctx, vars, &rc, err, errlen)))
				goto out;
			add_text(&b, v);
			json_decref(v);
		}
		if (b.rc != SL_OK) {
			rc = b.rc;
			if (rc == SL_ERR_TOO_BIG)
				snprintf(err, errlen, "template result over %u bytes",
					 SL_FLOW_MAX_TEXT);
			else
				snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	if (!(*out = json_stringn(b.p ? b.p : "", b.len))) {
		rc = SL_ERR_INVALID;
		snprintf(err, errlen, "template result is not valid UTF-8");
	}
out:
	free(b.p);
	return rc;
}

enum sl_err sl_tmpl_eval_list(const struct sl_tmpl *t, const struct sl_expand_ctx *ctx,
			      json_t **out, char *err, size_t errlen)
{
	json_t *v = NULL;
	enum sl_err rc = sl_tmpl_eval(t, ctx, NULL, &v, err, errlen);

	*out = NULL;
	if (rc != SL_OK)
		return rc;
	if (json_is_string(v)) {
		json_t *parsed = json_loadb(json_string_value(v), json_string_length(v), 0, NULL);
		if (json_is_array(parsed)) {
			json_decref(v);
			*out = parsed;
			return SL_OK;
		}
		json_decref(parsed);
		snprintf(err, errlen, "expected a list, got the string \"%.60s%s\"",
			 json_string_value(v), json_string_length(v) > 60 ? "..." : "");
		json_decref(v);
		return SL_ERR_INVALID;
	}
	if (!json_is_array(v)) {
		char *text = sl_value_to_text(v);
		snprintf(err, errlen, "expected a list, got %.60s", text ? text : "?");
		free(text);
		json_decref(v);
		return SL_ERR_INVALID;
	}
	*out = v;
	return SL_OK;
}

enum sl_err sl_template_eval(const char *tmpl, const struct sl_expand_ctx *ctx, json_t *vars,
			     json_t **out, char *errstr, size_t errlen)
{
	struct sl_tmpl *t;
	enum sl_err rc;

	static const struct sl_expand_ctx no_ctx;

	*out = NULL;
	if (!tmpl) {
		snprintf(errstr, errlen, "no template");
		return SL_ERR_INVALID;
	}
	if (!ctx)
		ctx = &no_ctx;
	if (!(t = sl_tmpl_compile(tmpl, 0, errstr, errlen)))
		return SL_ERR_PARSE;
	rc = sl_tmpl_eval(t, ctx, vars, out, errstr, errlen);
	sl_tmpl_free(t);
	return rc;
}
