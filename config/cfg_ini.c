/*
 * config/cfg_ini: INI lexing on top of libinih. Our reader hands inih one line at a time, so every
 * key = value the handler sees is tied to a line number, and every line that inih rejects (no
 * handler call for a line that is neither blank, comment nor section) is reported as malformed.
 * Section headers are split into kind and id here, since inih gives the handler no header events.
 */
#include <ini.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

#define SEC_NONE -1 /* no section header seen yet */
#define SEC_SINK -2 /* inside a broken header: keys are dropped silently */

struct lexer {
	const char *p, *end;
	int lineno;
	bool expect_kv; /* the current line must produce a handler call */
	bool got_kv;
	long cur; /* index in doc->secs, or SEC_NONE / SEC_SINK */
	/*
	 * What one file may hold is bounded (CFG_SECTIONS_MAX, CFG_KEYS_MAX), which also keeps the
	 * duplicate checks below (a scan of what came before) linear in the size of the file.
	 */
	bool sections_full; /* "too many sections" reported: the rest are dropped */
	long keys_full;     /* the section whose "too many keys" was reported, or -1 */
	struct ini_doc *doc;
	struct cfg_diag *d;
};

static bool
is_blank_char(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *
xstrndup(const char *s, size_t n)
{
	char *p = cfg_xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

enum ini_line_kind
ini_classify_line(const char *line, size_t len, char **kind, char **id)
{
	const char *p = line, *end = line + len, *close, *w[3], *we[3];
	size_t nw = 0;

	if (kind != NULL)
		*kind = NULL;
	if (id != NULL)
		*id = NULL;
	while (p < end && is_blank_char(*p))
		p++;
	if (p == end)
		return INI_LINE_BLANK;
	if (*p == ';' || *p == '#')
		return INI_LINE_COMMENT;
	if (*p != '[')
		return INI_LINE_OTHER;

	close = memchr(p, ']', (size_t)(end - p));
	if (close == NULL)
		return INI_LINE_SECTION;
	for (const char *q = close + 1; q < end; q++) {
		if (*q == ';' || *q == '#')
			break;
		if (!is_blank_char(*q))
			return INI_LINE_SECTION;
	}
	for (const char *q = p + 1; q < close; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			if (*q != '\t')
				return INI_LINE_SECTION;
	for (const char *q = p + 1; q < close;) {
		while (q < close && is_blank_char(*q))
			q++;
		if (q == close)
			break;
		if (nw == 3)
			return INI_LINE_SECTION;
		w[nw] = q;
		while (q < close && !is_blank_char(*q))
			q++;
		we[nw++] = q;
	}
	if (nw == 0 || nw > 2)
		return INI_LINE_SECTION;
	if (kind != NULL)
		*kind = xstrndup(w[0], (size_t)(we[0] - w[0]));
	if (id != NULL && nw == 2)
		*id = xstrndup(w[1], (size_t)(we[1] - w[1]));
	return INI_LINE_SECTION;
}

char *
ini_section_label(const struct ini_section *s)
{
	if (s->id != NULL)
		return cfg_xprintf("[%s %s]", s->kind, s->id);
	return cfg_xprintf("[%s]", s->kind);
}

static bool
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
lexer_section(struct lexer *lx, const char *line, size_t len)
{
	struct ini_doc *doc = lx->doc;
	struct ini_section *s;
	char *kind, *id;

	ini_classify_line(line, len, &kind, &id);
	if (kind == NULL) {
		cfg_diag_add(
		    lx->d, lx->lineno,
		    "malformed section header (use [kind] or [kind id], e.g. [disk root])");
		lx->cur = SEC_SINK;
		return;
	}
	if (doc->n == CFG_SECTIONS_MAX) {
		if (!lx->sections_full)
			cfg_diag_add(lx->d, lx->lineno,
			             "too many sections (at most %d in one file): this one and the "
			             "rest are ignored",
			             CFG_SECTIONS_MAX);
		lx->sections_full = true;
		lx->cur = SEC_SINK;
		free(kind);
		free(id);
		return;
	}
	if (doc->n == doc->cap) {
		doc->cap = doc->cap ? doc->cap * 2 : 8;
		doc->secs = cfg_xrealloc(doc->secs, doc->cap, sizeof(*doc->secs));
	}
	s = &doc->secs[doc->n];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->id = id;
	s->line = lx->lineno;
	for (size_t i = 0; i < doc->n; i++) {
		if (!doc->secs[i].ignored && same_str(doc->secs[i].kind, kind) &&
		    same_str(doc->secs[i].id, id)) {
			char *label = ini_section_label(s);

			cfg_diag_add(lx->d, lx->lineno, "%s: duplicate section (first on line %d)",
			             label, doc->secs[i].line);
			free(label);
			s->ignored = true;
			break;
		}
	}
	lx->cur = (long)doc->n++;
}

/* Ends the previous line: a key = value line that inih did not hand to us was malformed. */
static void
lexer_finish_line(struct lexer *lx)
{
	if (lx->expect_kv && !lx->got_kv)
		cfg_diag_add(lx->d, lx->lineno,
		             "malformed line (use key = value, [section] or a ; comment)");
	lx->expect_kv = false;
	lx->got_kv = false;
}

static char *
lexer_read(char *str, int num, void *stream)
{
	struct lexer *lx = stream;
	const char *line, *eol;
	size_t len;

	lexer_finish_line(lx);
	if (lx->p >= lx->end)
		return NULL;
	line = lx->p;
	eol = memchr(line, '\n', (size_t)(lx->end - line));
	if (eol == NULL)
		eol = lx->end;
	lx->p = eol < lx->end ? eol + 1 : eol;
	lx->lineno++;
	len = (size_t)(eol - line);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (lx->lineno == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3;
		len -= 3;
	}
	str[0] = '\0';
	if (memchr(line, '\0', len) != NULL) {
		cfg_diag_add(lx->d, lx->lineno, "line contains a NUL byte");
		return str;
	}
	if (len > CFG_LINE_MAX || len + 1 > (size_t)num) {
		enum ini_line_kind k = ini_classify_line(line, len, NULL, NULL);

		cfg_diag_add(lx->d, lx->lineno, "line too long (at most %d characters)",
		             CFG_LINE_MAX);
		if (k == INI_LINE_SECTION)
			lx->cur = SEC_SINK;
		return str;
	}
	switch (ini_classify_line(line, len, NULL, NULL)) {
	case INI_LINE_BLANK:
	case INI_LINE_COMMENT:
		return str;
	case INI_LINE_SECTION:
		lexer_section(lx, line, len);
		break;
	case INI_LINE_OTHER:
		lx->expect_kv = true;
		break;
	}
	memcpy(str, line, len);
	str[len] = '\0';
	return str;
}

static bool
valid_key_name(const char *k)
{
	if (*k == '\0')
		return false;
	for (; *k != '\0'; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || *k == '_' || *k == '-' || *k == '.'))
			return false;
	return true;
}

static int
lexer_handler(void *user, const char *section, const char *name, const char *value)
{
	struct lexer *lx = user;
	struct ini_section *s;
	struct ini_entry *e;
	char *label;

	(void)section; /* tracked by lexer_section, which also knows the header's line */
	if (!lx->expect_kv)
		return 1;
	lx->got_kv = true;
	if (!valid_key_name(name)) {
		cfg_diag_add(lx->d, lx->lineno,
		             "malformed line (a key is letters, digits, '_' or '-', then = value)");
		return 1;
	}
	if (lx->cur == SEC_NONE) {
		cfg_diag_add(lx->d, lx->lineno,
		             "%s: key outside of any section (put it below a [section] header)",
		             name);
		return 1;
	}
	if (lx->cur == SEC_SINK)
		return 1;
	s = &lx->doc->secs[lx->cur];
	if (s->ignored)
		return 1;
	label = ini_section_label(s);
	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->entries[i].key, name) == 0) {
			cfg_diag_add(lx->d, lx->lineno,
			             "%s %s: duplicate key (first set on line %d)", label, name,
			             s->entries[i].line);
			free(label);
			return 1;
		}
	}
	if (s->n == CFG_KEYS_MAX) {
		if (lx->keys_full != lx->cur)
			cfg_diag_add(lx->d, lx->lineno,
			             "%s: too many keys (at most %d in one section): this one and "
			             "the rest are ignored",
			             label, CFG_KEYS_MAX);
		lx->keys_full = lx->cur;
		free(label);
		return 1;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 8;
		s->entries = cfg_xrealloc(s->entries, s->cap, sizeof(*s->entries));
	}
	e = &s->entries[s->n++];
	e->key = cfg_xstrdup(name);
	e->value = cfg_xstrdup(value);
	e->line = lx->lineno;
	e->bad = false;
	for (const char *c = value; *c != '\0'; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			cfg_diag_add(lx->d, lx->lineno,
			             "%s %s: value contains a control character (0x%02x)", label,
			             name, (unsigned)(unsigned char)*c);
			e->bad = true;
			break;
		}
	}
	free(label);
	return 1;
}

void
ini_lex(const char *text, size_t len, struct ini_doc *doc, struct cfg_diag *d)
{
	struct lexer lx = {
	    .p = text,
	    .end = text + len,
	    .cur = SEC_NONE,
	    .keys_full = -1,
	    .doc = doc,
	    .d = d,
	};

	memset(doc, 0, sizeof(*doc));
	/*
	 * Debian's libinih makes its build options runtime globals. Lines are ours to split (one
	 * reader call = one line, so inih's line count matches ours); the heap buffer is sized so
	 * that any line we accept fits, and continuation lines are not a feature of our files.
	 */
	ini_allow_multiline = false;
	ini_allow_bom = false;
	ini_allow_inline_comments = true;
	ini_allow_no_value = false;
	ini_stop_on_first_error = false;
	ini_use_stack = false;
	ini_allow_realloc = false;
	ini_max_line = CFG_LINE_MAX + 3;
	ini_initial_alloc = CFG_LINE_MAX + 3;
	if (ini_parse_stream(lexer_read, &lx, lexer_handler, &lx) == -2)
		cfg_diag_add(d, 0, "out of memory while parsing");
}

void
ini_doc_free(struct ini_doc *doc)
{
	for (size_t i = 0; i < doc->n; i++) {
		struct ini_section *s = &doc->secs[i];

		for (size_t j = 0; j < s->n; j++) {
			free(s->entries[j].key);
			free(s->entries[j].value);
		}
		free(s->entries);
		free(s->kind);
		free(s->id);
	}
	free(doc->secs);
	memset(doc, 0, sizeof(*doc));
}
