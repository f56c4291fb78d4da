/*
 * The manual pages cannot drift from the code: every verb of qvmctl's verb table (linked in, so it
 * is the table qvmctl runs) has an item in qvmctl(1) naming each of its options, and every key of
 * the schema tables in config/ (read from the sources, where the tables are static) has an item in
 * its section of qvmd.ini(5) or qvmd.conf(5) whose head names each of its values. The other way
 * round too: a page documents no verb or key the code does not have.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl_verbs.h"

#ifndef QVMD_SRC_DIR
#error QVMD_SRC_DIR must name the source tree
#endif

/*
 * Daemon keys documented before their code lands (issue 12): allowed in qvmd.conf(5) without a
 * schema entry. Once the keys are in config/cfg_daemon.c they are checked like every other key,
 * and the names can be removed from here.
 */
static const char *const conf_keys_ahead[] = {"qemu_uid_range", "qemu_user", NULL};

/* A list of strings. */
struct strs {
	char **v;
	size_t n;
};

static void
strs_add(struct strs *s, const char *p, size_t len)
{
	s->v = realloc(s->v, (s->n + 1) * sizeof(*s->v));
	assert_non_null(s->v);
	s->v[s->n] = strndup(p, len);
	assert_non_null(s->v[s->n]);
	s->n++;
}

static void
strs_free(struct strs *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Reads a file below the source tree as lines. */
static void
read_lines(const char *rel, struct strs *lines)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", QVMD_SRC_DIR, rel);
	f = fopen(path, "r");
	if (f == NULL)
		fail_msg("%s: cannot open", path);
	memset(lines, 0, sizeof(*lines));
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		strs_add(lines, line, (size_t)n);
	}
	free(line);
	fclose(f);
}

/* Splits an mdoc line into its whitespace-separated words ("quoted words" kept whole). */
static void
words(const char *line, struct strs *w)
{
	const char *p = line, *start;

	memset(w, 0, sizeof(*w));
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			return;
		if (*p == '"') {
			start = ++p;
			while (*p != '\0' && *p != '"')
				p++;
			strs_add(w, start, (size_t)(p - start));
			if (*p == '"')
				p++;
			continue;
		}
		start = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		strs_add(w, start, (size_t)(p - start));
	}
}

/* One top-level item of a list: the first Cm word of its head, its head and all its lines. */
struct item {
	char *name;
	char *head; /* the .It line (from .It Xo to .Xc joined) */
	struct strs body;
};

struct items {
	struct item *v;
	size_t n;
};

static void
items_free(struct items *it)
{
	for (size_t i = 0; i < it->n; i++) {
		free(it->v[i].name);
		free(it->v[i].head);
		strs_free(&it->v[i].body);
	}
	free(it->v);
	memset(it, 0, sizeof(*it));
}

/* The text of a section title line (".Sh KEYS", ".Ss \"The [vm] section\""), unquoted. */
static bool
title_is(const char *line, const char *macro, const char *title)
{
	size_t m = strlen(macro), t = strlen(title);

	if (strncmp(line, macro, m) != 0 || line[m] != ' ')
		return false;
	line += m + 1;
	if (*line == '"')
		return strncmp(line + 1, title, t) == 0 && line[1 + t] == '"' &&
		       line[2 + t] == '\0';
	return strcmp(line, title) == 0;
}

/*
 * Collects the items of the first list (and only its own items, not those of nested lists) under
 * .Sh sh, and under .Ss ss inside it when ss is not NULL.
 */
static void
page_items(const char *page, const char *sh, const char *ss, struct items *out)
{
	struct strs lines;
	bool in_sh = false, in_ss = ss == NULL, done = false, in_head = false;
	int depth = 0;
	struct item *cur = NULL;

	memset(out, 0, sizeof(*out));
	read_lines(page, &lines);
	for (size_t i = 0; i < lines.n && !done; i++) {
		const char *l = lines.v[i];

		if (strncmp(l, ".Sh ", 4) == 0) {
			if (in_sh && in_ss && out->n > 0)
				break;
			in_sh = title_is(l, ".Sh", sh);
			in_ss = ss == NULL;
			continue;
		}
		if (!in_sh)
			continue;
		if (strncmp(l, ".Ss ", 4) == 0) {
			if (in_ss && out->n > 0)
				break;
			in_ss = ss == NULL || title_is(l, ".Ss", ss);
			continue;
		}
		if (!in_ss)
			continue;
		if (strncmp(l, ".Bl ", 4) == 0 || strcmp(l, ".Bl") == 0) {
			depth++;
		} else if (strncmp(l, ".El", 3) == 0) {
			if (--depth == 0)
				done = true;
		} else if (depth == 1 && strncmp(l, ".It ", 4) == 0) {
			struct strs w;

			out->v = realloc(out->v, (out->n + 1) * sizeof(*out->v));
			assert_non_null(out->v);
			cur = &out->v[out->n++];
			memset(cur, 0, sizeof(*cur));
			cur->head = strdup(l);
			words(l, &w);
			for (size_t k = 0; k + 1 < w.n; k++) {
				if (strcmp(w.v[k], "Cm") == 0) {
					cur->name = strdup(w.v[k + 1]);
					break;
				}
			}
			in_head = w.n > 1 && strcmp(w.v[1], "Xo") == 0;
			strs_free(&w);
			if (cur->name == NULL)
				fail_msg("%s: item without a Cm name: %s", page, l);
		} else if (cur != NULL && in_head && depth == 1) {
			size_t len = strlen(cur->head) + strlen(l) + 2;
			char *h = malloc(len);

			assert_non_null(h);
			snprintf(h, len, "%s %s", cur->head, l);
			free(cur->head);
			cur->head = h;
			if (strncmp(l, ".Xc", 3) == 0)
				in_head = false;
		}
		if (cur != NULL && depth >= 1)
			strs_add(&cur->body, l, strlen(l));
	}
	strs_free(&lines);
	if (out->n == 0)
		fail_msg("%s: no list of items under .Sh %s%s%s", page, sh, ss ? " / .Ss " : "",
		         ss ? ss : "");
}

/* Whether the words "Fl -opt" follow each other on some line of lines. */
static bool
lines_have_flag(const struct strs *lines, const char *opt)
{
	char want[128];

	snprintf(want, sizeof want, "-%s", opt);
	for (size_t i = 0; i < lines->n; i++) {
		struct strs w;
		bool found = false;

		words(lines->v[i], &w);
		for (size_t k = 0; k + 1 < w.n && !found; k++)
			found = strcmp(w.v[k], "Fl") == 0 && strcmp(w.v[k + 1], want) == 0;
		strs_free(&w);
		if (found)
			return true;
	}
	return false;
}

/* Whether value is one word of the head, after Cm or Ns/| separators ("Cm q35 | pc"). */
static bool
head_has_word(const char *head, const char *value)
{
	struct strs w;
	bool found = false;

	words(head, &w);
	for (size_t k = 0; k < w.n && !found; k++)
		found = strcmp(w.v[k], value) == 0;
	strs_free(&w);
	return found;
}

static void
test_man_qvmctl_every_verb_and_option(void **state)
{
	struct items it;
	int missing = 0;

	(void)state;
	page_items("contrib/man/qvmctl.1", "COMMANDS", NULL, &it);
	for (size_t i = 0; ctl_verbs[i] != NULL; i++) {
		const struct ctl_verb *v = ctl_verbs[i];
		struct strs body = {0};
		bool found = false;

		/* A verb may have several items (powerdown NAME | powerdown --all). */
		for (size_t j = 0; j < it.n; j++) {
			if (strcmp(it.v[j].name, v->name) != 0)
				continue;
			found = true;
			for (size_t k = 0; k < it.v[j].body.n; k++)
				strs_add(&body, it.v[j].body.v[k], strlen(it.v[j].body.v[k]));
		}
		if (!found) {
			print_error("qvmctl.1: verb %s has no item under COMMANDS\n", v->name);
			missing++;
		}
		for (int k = 0; found && v->opts != NULL && v->opts[k].name != NULL; k++) {
			if (!lines_have_flag(&body, v->opts[k].name)) {
				print_error("qvmctl.1: verb %s: option --%s is not documented\n",
				            v->name, v->opts[k].name);
				missing++;
			}
		}
		strs_free(&body);
	}
	items_free(&it);
	assert_int_equal(missing, 0);
}

/* qvmctl help comes from the verb table: every verb has its summary line, every option its help. */
static void
test_man_qvmctl_help_is_complete(void **state)
{
	int missing = 0;

	(void)state;
	for (size_t i = 0; ctl_verbs[i] != NULL; i++) {
		const struct ctl_verb *v = ctl_verbs[i];

		if (v->summary == NULL || v->summary[0] == '\0') {
			print_error("qvmctl: verb %s has no summary for help\n", v->name);
			missing++;
		}
		for (int k = 0; v->opts != NULL && v->opts[k].name != NULL; k++) {
			if (v->opts[k].help == NULL || v->opts[k].help[0] == '\0') {
				print_error("qvmctl: verb %s: option --%s has no help\n", v->name,
				            v->opts[k].name);
				missing++;
			}
		}
	}
	assert_int_equal(missing, 0);
}

static void
test_man_qvmctl_no_verb_the_table_lacks(void **state)
{
	struct items it;
	int stale = 0;

	(void)state;
	page_items("contrib/man/qvmctl.1", "COMMANDS", NULL, &it);
	for (size_t j = 0; j < it.n; j++) {
		if (ctl_verb_find(it.v[j].name) == NULL) {
			print_error("qvmctl.1: %s is documented but not a verb\n", it.v[j].name);
			stale++;
		}
	}
	items_free(&it);
	assert_int_equal(stale, 0);
}

/* A key of a schema table: its name and, for an enum, the names of its values. */
struct key {
	char *name;
	char *names_ident; /* .names = IDENT, NULL when none */
};

/* A schema table read from a source file: "static const struct key_spec vm_keys[...] = {". */
struct table {
	char *ident;
	struct key *keys;
	size_t n;
};

struct tables {
	struct table *v;
	size_t n;
};

/* The string after "field = \"" on a line, or NULL. */
static char *
quoted_after(const char *line, const char *field)
{
	const char *p = strstr(line, field), *end;

	if (p == NULL)
		return NULL;
	p = strchr(p + strlen(field), '"');
	if (p == NULL)
		return NULL;
	end = strchr(++p, '"');
	return end != NULL ? strndup(p, (size_t)(end - p)) : NULL;
}

/* The identifier after ".names = " on a line, or NULL. */
static char *
ident_after(const char *line, const char *field)
{
	const char *p = strstr(line, field), *end;

	if (p == NULL)
		return NULL;
	p += strlen(field);
	while (*p == ' ' || *p == '=')
		p++;
	for (end = p; isalnum((unsigned char)*end) || *end == '_'; end++)
		;
	return end > p ? strndup(p, (size_t)(end - p)) : NULL;
}

static void
read_tables(const char *rel, struct tables *out)
{
	static const char intro[] = "static const struct key_spec ";
	struct strs lines;
	struct table *t = NULL;
	struct key *k = NULL;

	memset(out, 0, sizeof(*out));
	read_lines(rel, &lines);
	for (size_t i = 0; i < lines.n; i++) {
		const char *l = lines.v[i];
		char *s;

		if (strncmp(l, intro, sizeof intro - 1) == 0 && strchr(l, '[') != NULL) {
			const char *id = l + sizeof intro - 1;

			out->v = realloc(out->v, (out->n + 1) * sizeof(*out->v));
			assert_non_null(out->v);
			t = &out->v[out->n++];
			memset(t, 0, sizeof(*t));
			t->ident = strndup(id, (size_t)(strchr(id, '[') - id));
			k = NULL;
			continue;
		}
		if (t == NULL)
			continue;
		if (strcmp(l, "};") == 0) {
			t = NULL;
			continue;
		}
		if ((s = quoted_after(l, ".name =")) != NULL) {
			t->keys = realloc(t->keys, (t->n + 1) * sizeof(*t->keys));
			assert_non_null(t->keys);
			k = &t->keys[t->n++];
			k->name = s;
			k->names_ident = NULL;
		}
		if (k != NULL && (s = ident_after(l, ".names")) != NULL) {
			free(k->names_ident);
			k->names_ident = s;
		}
	}
	strs_free(&lines);
	if (out->n == 0)
		fail_msg("%s: no key_spec table found", rel);
}

static void
tables_free(struct tables *ts)
{
	for (size_t i = 0; i < ts->n; i++) {
		for (size_t j = 0; j < ts->v[i].n; j++) {
			free(ts->v[i].keys[j].name);
			free(ts->v[i].keys[j].names_ident);
		}
		free(ts->v[i].keys);
		free(ts->v[i].ident);
	}
	free(ts->v);
	memset(ts, 0, sizeof(*ts));
}

/*
 * The strings of "const char *const ident[] = {"a", "b", NULL};" in any config/ source (the array
 * may span lines).
 */
static void
enum_names(const char *ident, struct strs *out)
{
	static const char *const files[] = {"config/cfg_vm.c", "config/cfg_daemon.c",
	                                    "config/cfg_units.c", "config/cfg_schema.c", NULL};
	char want[128];

	snprintf(want, sizeof want, "const char *const %s[] = {", ident);
	memset(out, 0, sizeof(*out));
	for (int f = 0; files[f] != NULL && out->n == 0; f++) {
		struct strs lines;
		bool in = false;

		read_lines(files[f], &lines);
		for (size_t i = 0; i < lines.n; i++) {
			const char *p = lines.v[i], *end;

			if (!in) {
				if ((p = strstr(p, want)) == NULL)
					continue;
				in = true;
				p += strlen(want);
			}
			while ((p = strchr(p, '"')) != NULL && (end = strchr(p + 1, '"')) != NULL) {
				strs_add(out, p + 1, (size_t)(end - p - 1));
				p = end + 1;
			}
			if (strstr(lines.v[i], "};") != NULL)
				break;
		}
		strs_free(&lines);
	}
	if (out->n == 0)
		fail_msg("no names found for %s in config/", ident);
}

/*
 * Checks that every key of table has an item in items whose head names each of its enum values,
 * and that every item is a key of table (or listed in ahead). Returns the number of problems,
 * printed unless quiet.
 */
static int
check_keys(const char *page, const char *where, const struct table *t, const struct items *it,
           const char *const *ahead, bool quiet)
{
	int bad = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];
		const struct item *found = NULL;

		for (size_t j = 0; j < it->n && found == NULL; j++) {
			if (strcmp(it->v[j].name, k->name) == 0)
				found = &it->v[j];
		}
		if (found == NULL) {
			if (!quiet)
				print_error("%s: %s: key %s is not documented\n", page, where,
				            k->name);
			bad++;
			continue;
		}
		if (k->names_ident != NULL) {
			struct strs values;

			enum_names(k->names_ident, &values);
			for (size_t v = 0; v < values.n; v++) {
				if (!head_has_word(found->head, values.v[v])) {
					if (!quiet)
						print_error(
						    "%s: %s: key %s: value %s is not in its item's "
						    "head\n",
						    page, where, k->name, values.v[v]);
					bad++;
				}
			}
			strs_free(&values);
		}
	}
	for (size_t j = 0; j < it->n; j++) {
		bool known = false;

		for (size_t i = 0; i < t->n && !known; i++)
			known = strcmp(t->keys[i].name, it->v[j].name) == 0;
		for (size_t a = 0; ahead != NULL && ahead[a] != NULL && !known; a++)
			known = strcmp(ahead[a], it->v[j].name) == 0;
		if (!known) {
			if (!quiet)
				print_error("%s: %s: %s is documented but not a key\n", page, where,
				            it->v[j].name);
			bad++;
		}
	}
	return bad;
}

/* Which subsection of qvmd.ini(5) documents a table of config/cfg_vm.c. */
static const char *
ini_subsection(const char *ident)
{
	if (strcmp(ident, "vm_keys") == 0)
		return "The [vm] section";
	if (strcmp(ident, "disk_keys") == 0)
		return "The [disk id] section";
	if (strcmp(ident, "net_keys") == 0)
		return "The [net id] section";
	if (strcmp(ident, "cdrom_keys") == 0)
		return "The [cdrom id] section";
	return NULL;
}

static void
test_man_ini_every_key(void **state)
{
	struct tables ts;
	int bad = 0;

	(void)state;
	read_tables("config/cfg_vm.c", &ts);
	for (size_t i = 0; i < ts.n; i++) {
		const char *ss = ini_subsection(ts.v[i].ident);
		struct items it;

		if (ss == NULL) {
			print_error(
			    "config/cfg_vm.c: table %s: which section of qvmd.ini(5) "
			    "documents it? (add it to ini_subsection in tests/test_man.c)\n",
			    ts.v[i].ident);
			bad++;
			continue;
		}
		page_items("contrib/man/qvmd.ini.5", "DESCRIPTION", ss, &it);
		bad += check_keys("qvmd.ini.5", ss, &ts.v[i], &it, NULL, false);
		items_free(&it);
	}
	tables_free(&ts);
	assert_int_equal(bad, 0);
}

static void
test_man_conf_every_key(void **state)
{
	struct tables ts;
	struct items it;
	int bad = 0;

	(void)state;
	read_tables("config/cfg_daemon.c", &ts);
	assert_int_equal(ts.n, 1);
	page_items("contrib/man/qvmd.conf.5", "KEYS", NULL, &it);
	bad = check_keys("qvmd.conf.5", "KEYS", &ts.v[0], &it, conf_keys_ahead, false);
	items_free(&it);
	tables_free(&ts);
	assert_int_equal(bad, 0);
}

/* The parsers above find what they must: a page without a key, a table without a key. */
static void
test_man_checks_see_a_missing_key(void **state)
{
	struct table t = {.ident = "vm_keys"};
	struct key keys[] = {{.name = "memory"}, {.name = "nosuchkey"}};
	struct items it;

	(void)state;
	t.keys = keys;
	t.n = 2;
	page_items("contrib/man/qvmd.ini.5", "DESCRIPTION", "The [vm] section", &it);
	assert_true(it.n > 2);
	/* nosuchkey is missing, and every other documented key is not in this table. */
	assert_int_equal(check_keys("qvmd.ini.5", "test", &t, &it, NULL, true), 1 + (int)it.n - 1);
	items_free(&it);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_man_qvmctl_every_verb_and_option),
	    cmocka_unit_test(test_man_qvmctl_help_is_complete),
	    cmocka_unit_test(test_man_qvmctl_no_verb_the_table_lacks),
	    cmocka_unit_test(test_man_ini_every_key),
	    cmocka_unit_test(test_man_conf_every_key),
	    cmocka_unit_test(test_man_checks_see_a_missing_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
