/* expr.c - the small expression language inside ${...}: literals, names, .key, [i], calls,
 * comparisons and the boolean operators of when: conditions. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_internal.h"

enum ex_kind {
	EX_LIT,    /* lit */
	EX_NAME,   /* name */
	EX_MEMBER, /* obj.name */
	EX_INDEX,  /* obj[idx] */
	EX_CALL,   /* name(args) */
	EX_LIST,   /* [args] */
	EX_NOT,    /* !obj */
	EX_BINOP,  /* obj <op> idx */
};

enum ex_op {
	OP_OR,
	OP_AND,
	OP_EQ,
	OP_NE,
	OP_LT,
	OP_LE,
	OP_GT,
	OP_GE,
};

struct sl_expr {
	enum ex_kind kind;
	json_t *lit;
	char *name;
	struct sl_expr *obj;
	struct sl_expr *idx;
	struct sl_expr **args;
	size_t nargs;
	enum ex_op op; /* EX_BINOP: obj is the left operand, idx the right one */
};

enum tok {
	T_END,
	T_INT,
	T_REAL,
	T_STR,
	T_IDENT,
	T_TRUE,
	T_FALSE,
	T_NULL,
	T_DOT,
	T_LBRACK,
	T_RBRACK,
	T_LPAREN,
	T_RPAREN,
	T_COMMA,
	T_DOLLAR, /* "${" */
	T_RBRACE,
	T_NOT,
	T_AND,
	T_OR,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE,
};

struct parser {
	const char *s;
	size_t len;
	size_t pos;    /* next unread byte */
	enum tok tok;  /* current token */
	size_t tstart; /* where it starts */
	size_t tlen;
	json_t *val; /* literal value of T_INT / T_REAL / T_STR, owned */
	int depth;
	char *err;
	size_t errlen;
	int failed;
};

static const struct {
	const char *name;
	size_t min_args;
	size_t max_args;
} functions[] = {
	{"range", 1, 3},
	{"len", 1, 1},
};

static void perr(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void perr(struct parser *p, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int shown = p->len > 80 ? 80 : (int)p->len;

	if (p->failed)
		return;
	p->failed = 1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "bad expression '%.*s%s' at column %zu: %s", shown, p->s,
		 p->len > 80 ? "..." : "", p->tstart + 1, msg);
}

static int is_ident_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(int c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int put_utf8(char *out, size_t *n, unsigned long cp)
{
	if (cp < 0x80) {
		out[(*n)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*n)++] = (char)(0xc0 | (cp >> 6));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[(*n)++] = (char)(0xe0 | (cp >> 12));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x110000) {
		out[(*n)++] = (char)(0xf0 | (cp >> 18));
		out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		return -1;
	}
	return 0;
}

static int read_hex4(struct parser *p, size_t at, unsigned long *cp)
{
	unsigned long v = 0;

	if (at + 4 > p->len)
		return -1;
	for (size_t i = 0; i < 4; i++) {
		int h = hexval((unsigned char)p->s[at + i]);
		if (h < 0)
			return -1;
		v = v * 16 + (unsigned long)h;
	}
	*cp = v;
	return 0;
}

/* Lexes a "..." or '...' literal starting at p->pos into p->val. */
static int lex_string(struct parser *p)
{
	char q = p->s[p->pos];
	size_t i = p->pos + 1;
	size_t n = 0;
	char *buf = malloc(p->len - p->pos + 1); /* decoded text is never longer */

	if (!buf) {
		perr(p, "out of memory");
		return -1;
	}
	for (;;) {
		unsigned char c;

		if (i >= p->len) {
			perr(p, "unterminated string");
			goto fail;
		}
		c = (unsigned char)p->s[i++];
		if (c == (unsigned char)q)
			break;
		if (c != '\\') {
			buf[n++] = (char)c;
			continue;
		}
		if (i >= p->len) {
			perr(p, "unterminated string");
			goto fail;
		}
		c = (unsigned char)p->s[i++];
		switch (c) {
		case '"': case '\'': case '\\': case '/': buf[n++] = (char)c; break;
		case 'n': buf[n++] = '\n'; break;
		case 't': buf[n++] = '\t'; break;
		case 'r': buf[n++] = '\r'; break;
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'u': {
			unsigned long cp;
			if (read_hex4(p, i, &cp) < 0) {
				perr(p, "bad \\u escape");
				goto fail;
			}
			i += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				unsigned long lo;
				if (i + 2 > p->len || p->s[i] != '\\' || p->s[i + 1] != 'u' ||
				    read_hex4(p, i + 2, &lo) < 0 || lo < 0xdc00 || lo >= 0xe000) {
					perr(p, "bad \\u surrogate pair");
					goto fail;
				}
				i += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				perr(p, "bad \\u surrogate pair");
				goto fail;
			}
			if (cp == 0) {
				perr(p, "NUL characters are not allowed");
				goto fail;
			}
			put_utf8(buf, &n, cp);
			break;
		}
		default:
			perr(p, "unknown escape '\\%c'", c);
			goto fail;
		}
	}
	p->val = json_stringn(buf, n);
	free(buf);
	if (!p->val) {
		perr(p, "string is not valid UTF-8");
		return -1;
	}
	p->pos = i;
	return 0;
fail:
	free(buf);
	return -1;
}

static int lex_number(struct parser *p)
{
	size_t i = p->pos;
	int real = 0;
	char tmp[64];
	char *end;

	if (p->s[i] == '-')
		i++;
	while (i < p->len && is_digit((unsigned char)p->s[i]))
		i++;
	if (i < p->len && p->s[i] == '.' && i + 1 < p->len && is_digit((unsigned char)p->s[i + 1])) {
		real = 1;
		i++;
		while (i < p->len && is_digit((unsigned char)p->s[i]))
			i++;
	}
	if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
		size_t j = i + 1;
		if (j < p->len && (p->s[j] == '+' || p->s[j] == '-'))
			j++;
		if (j < p->len && is_digit((unsigned char)p->s[j])) {
			real = 1;
			i = j;
			while (i < p->len && is_digit((unsigned char)p->s[i]))
				i++;
		}
	}
	if (i < p->len && is_ident_char((unsigned char)p->s[i])) {
		perr(p, "bad number");
		return -1;
	}
	if (i - p->pos >= sizeof(tmp)) {
		perr(p, "number too long");
		return -1;
	}
	memcpy(tmp, p->s + p->pos, i - p->pos);
	tmp[i - p->pos] = '\0';
	errno = 0;
	if (real) {
		double d = strtod(tmp, &end);
		if (errno || *end || !isfinite(d)) {
			perr(p, "number out of range");
			return -1;
		}
		p->val = json_real(d);
		p->tok = T_REAL;
	} else {
		long long v = strtoll(tmp, &end, 10);
		if (errno || *end) {
			perr(p, "number out of range");
			return -1;
		}
		p->val = json_integer((json_int_t)v);
		p->tok = T_INT;
	}
	if (!p->val) {
		perr(p, "out of memory");
		return -1;
	}
	p->pos = i;
	return 0;
}

/* Lexes an operator starting with c. Returns 1 when it was one, 0 when c starts no operator,
 * -1 after an error. */
static int lex_operator(struct parser *p, unsigned char c)
{
	char d = p->pos + 1 < p->len ? p->s[p->pos + 1] : '\0';

	switch (c) {
	case '!': p->tok = d == '=' ? T_NE : T_NOT; break;
	case '<': p->tok = d == '=' ? T_LE : T_LT; break;
	case '>': p->tok = d == '=' ? T_GE : T_GT; break;
	case '=':
		if (d != '=') {
			perr(p, "'=' is not an operator (compare with '==')");
			return -1;
		}
		p->tok = T_EQ;
		break;
	case '&':
	case '|':
		if (d != (char)c) {
			perr(p, "'%c' is not an operator (use '%c%c')", c, c, c);
			return -1;
		}
		p->tok = c == '&' ? T_AND : T_OR;
		break;
	default:
		return 0;
	}
	p->pos += (p->tok == T_NOT || p->tok == T_LT || p->tok == T_GT) ? 1 : 2;
	return 1;
}

/* Reads the next token into p->tok. Returns -1 on a lexical error. */
static int next(struct parser *p)
{
	unsigned char c;

	json_decref(p->val);
	p->val = NULL;
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
				   p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
	p->tstart = p->pos;
	if (p->pos >= p->len) {
		p->tok = T_END;
		p->tlen = 0;
		return 0;
	}
	c = (unsigned char)p->s[p->pos];
	if (c == '"' || c == '\'') {
		if (lex_string(p) < 0)
			return -1;
		p->tok = T_STR;
	} else if (is_digit(c) || (c == '-' && p->pos + 1 < p->len &&
				   is_digit((unsigned char)p->s[p->pos + 1]))) {
		if (lex_number(p) < 0)
			return -1;
	} else if (is_ident_start(c)) {
		size_t i = p->pos;
		while (i < p->len && is_ident_char((unsigned char)p->s[i]))
			i++;
		p->tok = T_IDENT;
		if (i - p->pos == 4 && !memcmp(p->s + p->pos, "true", 4))
			p->tok = T_TRUE;
		else if (i - p->pos == 5 && !memcmp(p->s + p->pos, "false", 5))
			p->tok = T_FALSE;
		else if (i - p->pos == 4 && !memcmp(p->s + p->pos, "null", 4))
			p->tok = T_NULL;
		p->pos = i;
	} else if (c == '$' && p->pos + 1 < p->len && p->s[p->pos + 1] == '{') {
		p->tok = T_DOLLAR;
		p->pos += 2;
	} else if (lex_operator(p, c) > 0) {
		/* p->tok and p->pos set */
	} else if (p->failed) {
		return -1;
	} else {
		switch (c) {
		case '.': p->tok = T_DOT; break;
		case '[': p->tok = T_LBRACK; break;
		case ']': p->tok = T_RBRACK; break;
		case '(': p->tok = T_LPAREN; break;
		case ')': p->tok = T_RPAREN; break;
		case ',': p->tok = T_COMMA; break;
		case '}': p->tok = T_RBRACE; break;
		default:
			perr(p, "unexpected character '%c'", c >= 0x20 && c < 0x7f ? c : '?');
			return -1;
		}
		p->pos++;
	}
	p->tlen = p->pos - p->tstart;
	return 0;
}

static const char *tok_name(enum tok t)
{
	switch (t) {
	case T_END: return "end of expression";
	case T_INT: case T_REAL: return "a number";
	case T_STR: return "a string";
	case T_IDENT: return "a name";
	case T_TRUE: case T_FALSE: case T_NULL: return "a literal";
	case T_DOT: return "'.'";
	case T_LBRACK: return "'['";
	case T_RBRACK: return "']'";
	case T_LPAREN: return "'('";
	case T_RPAREN: return "')'";
	case T_COMMA: return "','";
	case T_DOLLAR: return "'${'";
	case T_RBRACE: return "'}'";
	case T_NOT: return "'!'";
	case T_AND: return "'&&'";
	case T_OR: return "'||'";
	case T_EQ: return "'=='";
	case T_NE: return "'!='";
	case T_LT: return "'<'";
	case T_LE: return "'<='";
	case T_GT: return "'>'";
	case T_GE: return "'>='";
	}
	return "?";
}

static int expect(struct parser *p, enum tok t, const char *what)
{
	if (p->tok != t) {
		perr(p, "expected %s, found %s", what, tok_name(p->tok));
		return -1;
	}
	return next(p);
}

void sl_expr_free(struct sl_expr *e)
{
	if (!e)
		return;
	json_decref(e->lit);
	free(e->name);
	sl_expr_free(e->obj);
	sl_expr_free(e->idx);
	for (size_t i = 0; i < e->nargs; i++)
		sl_expr_free(e->args[i]);
	free(e->args);
	free(e);
}

static struct sl_expr *node_new(struct parser *p, enum ex_kind kind)
{
	struct sl_expr *e = calloc(1, sizeof(*e));

	if (!e)
		perr(p, "out of memory");
	else
		e->kind = kind;
	return e;
}

static char *tok_text(struct parser *p)
{
	char *s = strndup(p->s + p->tstart, p->tlen);

	if (!s)
		perr(p, "out of memory");
	return s;
}

static struct sl_expr *parse_expr(struct parser *p);

/* Parses "expr, expr, ..." up to the closing token; the opening one is already consumed. */
static int parse_args(struct parser *p, struct sl_expr *e, enum tok close, const char *what)
{
	size_t cap = 0;

	if (p->tok == close)
		return next(p);
	for (;;) {
		struct sl_expr *a = parse_expr(p);
		if (!a)
			return -1;
		if (e->nargs == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct sl_expr **na = realloc(e->args, ncap * sizeof(*na));
			if (!na) {
				sl_expr_free(a);
				perr(p, "out of memory");
				return -1;
			}
			e->args = na;
			cap = ncap;
		}
		e->args[e->nargs++] = a;
		if (p->tok == T_COMMA) {
			if (next(p) < 0)
				return -1;
			continue;
		}
		return expect(p, close, what);
	}
}

static struct sl_expr *parse_primary(struct parser *p)
{
	struct sl_expr *e = NULL;

	switch (p->tok) {
	case T_INT:
	case T_REAL:
	case T_STR:
		if (!(e = node_new(p, EX_LIT)))
			return NULL;
		e->lit = p->val;
		p->val = NULL;
		break;
	case T_TRUE:
	case T_FALSE:
	case T_NULL:
		if (!(e = node_new(p, EX_LIT)))
			return NULL;
		e->lit = p->tok == T_TRUE ? json_true() : p->tok == T_FALSE ? json_false() : json_null();
		break;
	case T_IDENT:
		if (!(e = node_new(p, EX_NAME)) || !(e->name = tok_text(p)))
			goto fail;
		if (next(p) < 0)
			goto fail;
		if (p->tok == T_LPAREN) {
			size_t i;
			for (i = 0; i < sizeof(functions) / sizeof(functions[0]); i++)
				if (!strcmp(functions[i].name, e->name))
					break;
			if (i == sizeof(functions) / sizeof(functions[0])) {
				perr(p, "unknown function '%s' (known: range, len)", e->name);
				goto fail;
			}
			e->kind = EX_CALL;
			if (next(p) < 0 || parse_args(p, e, T_RPAREN, "',' or ')'") < 0)
				goto fail;
			if (e->nargs < functions[i].min_args || e->nargs > functions[i].max_args) {
				perr(p, "%s() takes %zu to %zu arguments, got %zu", e->name,
				     functions[i].min_args, functions[i].max_args, e->nargs);
				goto fail;
			}
		}
		return e;
	case T_LPAREN:
	case T_DOLLAR: {
		enum tok close = p->tok == T_LPAREN ? T_RPAREN : T_RBRACE;
		if (next(p) < 0 || !(e = parse_expr(p)))
			goto fail;
		if (expect(p, close, close == T_RPAREN ? "')'" : "'}'") < 0)
			goto fail;
		return e;
	}
	case T_LBRACK:
		if (!(e = node_new(p, EX_LIST)))
			return NULL;
		if (next(p) < 0 || parse_args(p, e, T_RBRACK, "',' or ']'") < 0)
			goto fail;
		return e;
	default:
		perr(p, "expected a value, found %s", tok_name(p->tok));
		return NULL;
	}
	if (next(p) < 0)
		goto fail;
	return e;
fail:
	sl_expr_free(e);
	return NULL;
}

static struct sl_expr *parse_postfix(struct parser *p)
{
	struct sl_expr *e;
	int added = 0;

	if (++p->depth > SL_EXPR_MAX_DEPTH) {
		perr(p, "nested too deeply");
		return NULL;
	}
	e = parse_primary(p);
	while (e && (p->tok == T_DOT || p->tok == T_LBRACK)) {
		struct sl_expr *m;
		int dot = p->tok == T_DOT;

		/* Each step nests the tree one level: bound it like parentheses. */
		if (++p->depth > SL_EXPR_MAX_DEPTH) {
			perr(p, "nested too deeply");
			goto fail;
		}
		added++;
		if (!(m = node_new(p, dot ? EX_MEMBER : EX_INDEX)))
			goto fail;
		m->obj = e;
		e = m;
		if (next(p) < 0)
			goto fail;
		if (dot) {
			if (p->tok != T_IDENT && p->tok != T_TRUE && p->tok != T_FALSE &&
			    p->tok != T_NULL) {
				perr(p, "expected a name after '.', found %s", tok_name(p->tok));
				goto fail;
			}
			if (!(e->name = tok_text(p)) || next(p) < 0)
				goto fail;
		} else {
			if (!(e->idx = parse_expr(p)) || expect(p, T_RBRACK, "']'") < 0)
				goto fail;
		}
	}
	p->depth -= added + 1;
	return e;
fail:
	sl_expr_free(e);
	return NULL;
}

static struct sl_expr *binop_new(struct parser *p, enum ex_op op, struct sl_expr *l,
				 struct sl_expr *r)
{
	struct sl_expr *e = node_new(p, EX_BINOP);

	if (!e) {
		sl_expr_free(l);
		sl_expr_free(r);
		return NULL;
	}
	e->op = op;
	e->obj = l;
	e->idx = r;
	return e;
}

/* unary := '!' unary | postfix */
static struct sl_expr *parse_unary(struct parser *p)
{
	struct sl_expr *e, *inner;

	if (p->tok != T_NOT)
		return parse_postfix(p);
	if (++p->depth > SL_EXPR_MAX_DEPTH) {
		perr(p, "nested too deeply");
		return NULL;
	}
	if (next(p) < 0 || !(inner = parse_unary(p)))
		return NULL;
	if (!(e = node_new(p, EX_NOT))) {
		sl_expr_free(inner);
		return NULL;
	}
	e->obj = inner;
	p->depth--;
	return e;
}

/* cmp := unary (('==' | '!=' | '<' | '<=' | '>' | '>=') unary)?  (no chains: a < b < c) */
static struct sl_expr *parse_cmp(struct parser *p)
{
	struct sl_expr *l = parse_unary(p), *r;
	enum ex_op op;

	if (!l)
		return NULL;
	switch (p->tok) {
	case T_EQ: op = OP_EQ; break;
	case T_NE: op = OP_NE; break;
	case T_LT: op = OP_LT; break;
	case T_LE: op = OP_LE; break;
	case T_GT: op = OP_GT; break;
	case T_GE: op = OP_GE; break;
	default: return l;
	}
	if (next(p) < 0 || !(r = parse_unary(p))) {
		sl_expr_free(l);
		return NULL;
	}
	if (p->tok >= T_EQ && p->tok <= T_GE) {
		perr(p, "comparisons do not chain (write a < b && b < c)");
		sl_expr_free(l);
		sl_expr_free(r);
		return NULL;
	}
	return binop_new(p, op, l, r);
}

/* and := cmp ('&&' cmp)* */
static struct sl_expr *parse_and(struct parser *p)
{
	struct sl_expr *e = parse_cmp(p), *r;
	int added = 0;

	while (e && p->tok == T_AND) {
		/* a && b && c nests to the left: each operand is a level */
		if (++p->depth > SL_EXPR_MAX_DEPTH) {
			perr(p, "nested too deeply");
			sl_expr_free(e);
			return NULL;
		}
		added++;
		if (next(p) < 0 || !(r = parse_cmp(p))) {
			sl_expr_free(e);
			return NULL;
		}
		e = binop_new(p, OP_AND, e, r);
	}
	p->depth -= added;
	return e;
}

/* expr := and ('||' and)* */
static struct sl_expr *parse_expr(struct parser *p)
{
	struct sl_expr *e, *r;
	int added = 0;

	if (++p->depth > SL_EXPR_MAX_DEPTH) {
		perr(p, "nested too deeply");
		return NULL;
	}
	e = parse_and(p);
	while (e && p->tok == T_OR) {
		if (++p->depth > SL_EXPR_MAX_DEPTH) {
			perr(p, "nested too deeply");
			sl_expr_free(e);
			return NULL;
		}
		added++;
		if (next(p) < 0 || !(r = parse_and(p))) {
			sl_expr_free(e);
			return NULL;
		}
		e = binop_new(p, OP_OR, e, r);
	}
	p->depth -= added + 1;
	return e;
}

struct sl_expr *sl_expr_parse(const char *s, size_t len, char *err, size_t errlen)
{
	struct parser p = {.s = s, .len = len, .err = err, .errlen = errlen};
	struct sl_expr *e = NULL;

	if (next(&p) < 0)
		goto out;
	if (p.tok == T_END) {
		perr(&p, "empty expression");
		goto out;
	}
	if (!(e = parse_expr(&p)))
		goto out;
	if (p.tok != T_END) {
		perr(&p, "found %s after the expression", tok_name(p.tok));
		sl_expr_free(e);
		e = NULL;
	}
out:
	json_decref(p.val);
	return e;
}

/* ---- checking ---- */

static int has_var(const struct sl_expr_scope *scope, const char *name)
{
	for (size_t i = 0; i < scope->nvars; i++)
		if (!strcmp(scope->vars[i], name))
			return 1;
	return 0;
}

static int is_builtin_name(const struct sl_expr *e, const char *name, json_t *vars,
			   const struct sl_expr_scope *scope)
{
	if (e->kind != EX_NAME || strcmp(e->name, name))
		return 0;
	if (vars && json_object_get(vars, name))
		return 0;
	if (scope && has_var(scope, name))
		return 0;
	return 1;
}

/* tasks.NAME.outputs or tasks.NAME.output (with tasks not shadowed by a map variable). */
static int is_task_ref(const struct sl_expr *e, json_t *vars, const struct sl_expr_scope *scope)
{
	return e->kind == EX_MEMBER && (!strcmp(e->name, "outputs") || !strcmp(e->name, "output")) &&
	       e->obj->kind == EX_MEMBER && is_builtin_name(e->obj->obj, "tasks", vars, scope);
}

static int is_run_field(const char *name)
{
	return !strcmp(name, "id") || !strcmp(name, "flow") || !strcmp(name, "intent");
}

int sl_expr_check(const struct sl_expr *e, const struct sl_expr_scope *scope, char *err,
		  size_t errlen)
{
	switch (e->kind) {
	case EX_LIT:
		return 0;
	case EX_NAME:
		if (has_var(scope, e->name) || !strcmp(e->name, "params") || !strcmp(e->name, "run"))
			return 0;
		if (!strcmp(e->name, "tasks")) {
			snprintf(err, errlen, "'tasks' must be used as tasks.NAME.outputs or "
					      "tasks.NAME.output");
			return -1;
		}
		snprintf(err, errlen,
			 "unknown name '%s' (expected a map key, params.NAME, tasks.NAME.outputs, "
			 "tasks.NAME.output or run.id/flow/intent)",
			 e->name);
		return -1;
	case EX_MEMBER:
		if (is_task_ref(e, NULL, scope)) {
			if (scope->task_ref(scope->ud, e->obj->name) < 0) {
				snprintf(err, errlen, "unknown task '%s'", e->obj->name);
				return -1;
			}
			return 0;
		}
		if (is_builtin_name(e->obj, "tasks", NULL, scope)) {
			snprintf(err, errlen, "tasks.%s must be followed by .outputs or .output",
				 e->name);
			return -1;
		}
		if (is_builtin_name(e->obj, "params", NULL, scope)) {
			if (!scope->has_param(scope->ud, e->name)) {
				snprintf(err, errlen, "unknown param '%s'", e->name);
				return -1;
			}
			return 0;
		}
		if (is_builtin_name(e->obj, "run", NULL, scope)) {
			if (!is_run_field(e->name)) {
				snprintf(err, errlen,
					 "unknown field run.%s (known: run.id, run.flow, run.intent)",
					 e->name);
				return -1;
			}
			return 0;
		}
		return sl_expr_check(e->obj, scope, err, errlen);
	case EX_INDEX:
		if (sl_expr_check(e->obj, scope, err, errlen) < 0)
			return -1;
		return sl_expr_check(e->idx, scope, err, errlen);
	case EX_CALL:
	case EX_LIST:
		for (size_t i = 0; i < e->nargs; i++)
			if (sl_expr_check(e->args[i], scope, err, errlen) < 0)
				return -1;
		return 0;
	case EX_NOT:
		return sl_expr_check(e->obj, scope, err, errlen);
	case EX_BINOP:
		if (sl_expr_check(e->obj, scope, err, errlen) < 0)
			return -1;
		return sl_expr_check(e->idx, scope, err, errlen);
	}
	return 0;
}

/* ---- evaluation ---- */

struct evalenv {
	const struct sl_expand_ctx *ctx;
	json_t *vars;
	enum sl_err *rc;
	char *err;
	size_t errlen;
};

static json_t *eval(const struct sl_expr *e, struct evalenv *env);

static json_t *fail(struct evalenv *env, enum sl_err rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static json_t *fail(struct evalenv *env, enum sl_err rc, const char *fmt, ...)
{
	va_list ap;

	*env->rc = rc;
	va_start(ap, fmt);
	vsnprintf(env->err, env->errlen, fmt, ap);
	va_end(ap);
	return NULL;
}

/* "an int", "a list", ... for messages. */
static const char *type_name(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "a list";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an int";
	case JSON_REAL: return "a float";
	case JSON_TRUE: case JSON_FALSE: return "a bool";
	case JSON_NULL: return "null";
	}
	return "?";
}

static json_t *nomem(struct evalenv *env)
{
	return fail(env, SL_ERR_NOMEM, "out of memory");
}

static json_t *eval_task_ref(const struct sl_expr *e, struct evalenv *env)
{
	const struct sl_expand_ctx *ctx = env->ctx;
	const char *task = e->obj->name;
	ssize_t idx;
	json_t *outs, *v;

	if (!ctx->flowdef)
		return fail(env, SL_ERR_INVALID, "tasks.%s: no flow to look the task up in", task);
	idx = sl_flow_task_index(ctx->flowdef, task);
	if (idx < 0)
		return fail(env, SL_ERR_NOT_FOUND, "unknown task '%s'", task);
	outs = ctx->upstream_outputs ? ctx->upstream_outputs(ctx->ud, (size_t)idx) : NULL;
	if (!outs)
		return fail(env, SL_ERR_NOT_FOUND, "the outputs of task '%s' are not known", task);
	if (!json_is_array(outs)) {
		json_decref(outs);
		return fail(env, SL_ERR_INVALID, "the outputs of task '%s' are not a list", task);
	}
	if (!strcmp(e->name, "outputs") || ctx->flowdef->tasks[idx].nmap > 0)
		return outs;
	v = json_array_get(outs, 0);
	if (!v) {
		json_decref(outs);
		return fail(env, SL_ERR_NOT_FOUND, "task '%s' has no output", task);
	}
	json_incref(v);
	json_decref(outs);
	return v;
}

static json_t *eval_name(const struct sl_expr *e, struct evalenv *env)
{
	const struct sl_expand_ctx *ctx = env->ctx;
	json_t *v = env->vars ? json_object_get(env->vars, e->name) : NULL;

	if (v)
		return json_incref(v);
	if (!strcmp(e->name, "params")) {
		if (!ctx->params)
			return fail(env, SL_ERR_INVALID, "no params bound");
		return json_incref(ctx->params);
	}
	if (!strcmp(e->name, "run")) {
		v = json_pack("{s:s?,s:s?,s:s?}", "id", ctx->run_id, "flow", ctx->flow,
			      "intent", ctx->intent);
		return v ? v : nomem(env);
	}
	if (!strcmp(e->name, "tasks"))
		return fail(env, SL_ERR_INVALID,
			    "'tasks' must be used as tasks.NAME.outputs or tasks.NAME.output");
	return fail(env, SL_ERR_NOT_FOUND, "unknown name '%s'", e->name);
}

static json_t *eval_member(const struct sl_expr *e, struct evalenv *env)
{
	json_t *obj, *v;

	if (is_task_ref(e, env->vars, NULL))
		return eval_task_ref(e, env);
	if (!(obj = eval(e->obj, env)))
		return NULL;
	if (!json_is_object(obj)) {
		v = fail(env, SL_ERR_INVALID, "cannot take .%s of %s", e->name, type_name(obj));
		goto out;
	}
	v = json_object_get(obj, e->name);
	if (!v && is_builtin_name(e->obj, "params", env->vars, NULL)) {
		fail(env, SL_ERR_NOT_FOUND, "unknown param '%s'", e->name);
		goto out;
	}
	if (!v && is_builtin_name(e->obj, "run", env->vars, NULL)) {
		fail(env, SL_ERR_NOT_FOUND, "unknown field run.%s", e->name);
		goto out;
	}
	v = v ? json_incref(v) : json_null();
out:
	json_decref(obj);
	return v;
}

static json_t *eval_index(const struct sl_expr *e, struct evalenv *env)
{
	json_t *obj = NULL, *idx = NULL, *v = NULL;

	if (!(obj = eval(e->obj, env)) || !(idx = eval(e->idx, env)))
		goto out;
	if (json_is_array(obj) && json_is_integer(idx)) {
		json_int_t i = json_integer_value(idx);
		json_int_t n = (json_int_t)json_array_size(obj);
		if (i < 0)
			i += n;
		if (i < 0 || i >= n) {
			fail(env, SL_ERR_INVALID, "index %" JSON_INTEGER_FORMAT
				  " out of range (length %" JSON_INTEGER_FORMAT ")",
			     json_integer_value(idx), n);
			goto out;
		}
		v = json_incref(json_array_get(obj, (size_t)i));
	} else if (json_is_object(obj) && json_is_string(idx)) {
		v = json_object_get(obj, json_string_value(idx));
		v = v ? json_incref(v) : json_null();
	} else {
		fail(env, SL_ERR_INVALID, "cannot index %s with %s", type_name(obj),
		     type_name(idx));
	}
out:
	json_decref(obj);
	json_decref(idx);
	return v;
}

static int int_arg(json_t *v, long long *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (d == floor(d) && fabs(d) < 9.0e15) {
			*out = (long long)d;
			return 0;
		}
	}
	return -1;
}

static json_t *eval_range(json_t **a, size_t n, struct evalenv *env)
{
	long long v[3] = {0, 0, 1};
	long long start, stop, step, count;
	json_t *list;

	for (size_t i = 0; i < n; i++)
		if (int_arg(a[i], &v[i]) < 0)
			return fail(env, SL_ERR_INVALID, "range() takes ints, got %s",
				    type_name(a[i]));
	if (n == 1) {
		start = 0;
		stop = v[0];
		step = 1;
	} else {
		start = v[0];
		stop = v[1];
		step = n == 3 ? v[2] : 1;
	}
	if (step == 0)
		return fail(env, SL_ERR_INVALID, "range() step must not be 0");
	/* Computed in long double so that extreme bounds cannot overflow. */
	if ((step > 0 && stop <= start) || (step < 0 && stop >= start)) {
		count = 0;
	} else {
		long double c = ((long double)stop - (long double)start) / (long double)step;
		long double cc = ceill(c);
		if (cc > (long double)SL_RANGE_MAX)
			return fail(env, SL_ERR_TOO_BIG, "range() would give %.0Lf items (max %lld)",
				    cc, SL_RANGE_MAX);
		count = (long long)cc;
	}
	if (!(list = json_array()))
		return nomem(env);
	for (long long i = 0; i < count; i++) {
		if (json_array_append_new(list, json_integer((json_int_t)(start + i * step))) < 0) {
			json_decref(list);
			return nomem(env);
		}
	}
	return list;
}

static size_t utf8_len(const char *s, size_t n)
{
	size_t chars = 0;

	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			chars++;
	return chars;
}

static json_t *eval_call(const struct sl_expr *e, struct evalenv *env)
{
	json_t *a[3] = {NULL, NULL, NULL};
	json_t *v = NULL;

	if (e->nargs > 3)
		return fail(env, SL_ERR_INVALID, "too many arguments to %s()", e->name);
	for (size_t i = 0; i < e->nargs; i++)
		if (!(a[i] = eval(e->args[i], env)))
			goto out;
	if (!strcmp(e->name, "range")) {
		v = eval_range(a, e->nargs, env);
	} else if (!strcmp(e->name, "len")) {
		if (e->nargs != 1)
			v = fail(env, SL_ERR_INVALID, "len() takes one argument");
		else if (json_is_array(a[0]))
			v = json_integer((json_int_t)json_array_size(a[0]));
		else if (json_is_object(a[0]))
			v = json_integer((json_int_t)json_object_size(a[0]));
		else if (json_is_string(a[0]))
			v = json_integer((json_int_t)utf8_len(json_string_value(a[0]),
							      json_string_length(a[0])));
		else
			v = fail(env, SL_ERR_INVALID, "len() of %s", type_name(a[0]));
		if (!v && *env->rc == SL_OK)
			v = nomem(env);
	} else {
		v = fail(env, SL_ERR_INVALID, "unknown function '%s'", e->name);
	}
out:
	for (size_t i = 0; i < 3; i++)
		json_decref(a[i]);
	return v;
}

int sl_json_truthy(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return json_object_size(v) > 0;
	case JSON_ARRAY: return json_array_size(v) > 0;
	case JSON_STRING: return json_string_length(v) > 0;
	case JSON_INTEGER: return json_integer_value(v) != 0;
	case JSON_REAL: return json_real_value(v) != 0.0;
	case JSON_TRUE: return 1;
	default: return 0;
	}
}

/* -1, 0 or 1 for two numbers; exact for two ints. */
static int num_cmp(json_t *a, json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b);
		return (x > y) - (x < y);
	}
	long double x = json_is_integer(a) ? (long double)json_integer_value(a) : json_real_value(a);
	long double y = json_is_integer(b) ? (long double)json_integer_value(b) : json_real_value(b);
	return (x > y) - (x < y);
}

static json_t *eval_binop(const struct sl_expr *e, struct evalenv *env)
{
	json_t *l = NULL, *r = NULL, *v = NULL;
	int c = 0, res;

	if (!(l = eval(e->obj, env)))
		return NULL;
	/* && and || look at the right side only when they must, and give a bool. */
	if (e->op == OP_AND || e->op == OP_OR) {
		res = sl_json_truthy(l);
		if ((e->op == OP_AND && res) || (e->op == OP_OR && !res)) {
			if (!(r = eval(e->idx, env)))
				goto out;
			res = sl_json_truthy(r);
		}
		v = json_boolean(res);
		goto out;
	}
	if (!(r = eval(e->idx, env)))
		goto out;
	if (json_is_number(l) && json_is_number(r)) {
		c = num_cmp(l, r);
	} else if (e->op == OP_EQ || e->op == OP_NE) {
		c = json_equal(l, r) ? 0 : 1;
	} else if (json_is_string(l) && json_is_string(r)) {
		c = strcmp(json_string_value(l), json_string_value(r));
		c = (c > 0) - (c < 0);
	} else {
		v = fail(env, SL_ERR_INVALID, "cannot compare %s with %s", type_name(l),
			 type_name(r));
		goto out;
	}
	switch (e->op) {
	case OP_EQ: res = c == 0; break;
	case OP_NE: res = c != 0; break;
	case OP_LT: res = c < 0; break;
	case OP_LE: res = c <= 0; break;
	case OP_GT: res = c > 0; break;
	default: res = c >= 0; break;
	}
	v = json_boolean(res);
out:
	json_decref(l);
	json_decref(r);
	return v;
}

static json_t *eval(const struct sl_expr *e, struct evalenv *env)
{
	switch (e->kind) {
	case EX_NOT: {
		json_t *v = eval(e->obj, env);
		int res;
		if (!v)
			return NULL;
		res = !sl_json_truthy(v);
		json_decref(v);
		return json_boolean(res);
	}
	case EX_BINOP:
		return eval_binop(e, env);
	case EX_LIT:
		return json_incref(e->lit);
	case EX_NAME:
		return eval_name(e, env);
	case EX_MEMBER:
		return eval_member(e, env);
	case EX_INDEX:
		return eval_index(e, env);
	case EX_CALL:
		return eval_call(e, env);
	case EX_LIST: {
		json_t *list = json_array();
		if (!list)
			return nomem(env);
		for (size_t i = 0; i < e->nargs; i++) {
			json_t *v = eval(e->args[i], env);
			if (!v || json_array_append_new(list, v) < 0) {
				json_decref(list);
				return v ? nomem(env) : NULL;
			}
		}
		return list;
	}
	}
	return fail(env, SL_ERR_INVALID, "bad expression");
}

json_t *sl_expr_eval(const struct sl_expr *e, const struct sl_expand_ctx *ctx, json_t *vars,
		     enum sl_err *rc, char *err, size_t errlen)
{
	struct evalenv env = {.ctx = ctx, .vars = vars, .rc = rc, .err = err, .errlen = errlen};

	*rc = SL_OK;
	return eval(e, &env);
}
