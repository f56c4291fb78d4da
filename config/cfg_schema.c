/*
 * config/cfg_schema: applies the key = value entries of one section to a struct, driven by a table
 * of key specs (type, field offset, range, enum names). Every bad entry is reported; good ones are
 * stored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

/* Edit distance, for "did you mean" on unknown keys (keys are short). */
static size_t
distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), prev[33], cur[33];

	if (la > 32 || lb > 32)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;

			cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
		memcpy(prev, cur, sizeof(prev));
	}
	return prev[lb];
}

static bool
valid_cpu(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("_.,=+-", *s) != NULL))
			return false;
	return true;
}

static bool
valid_group(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32 || *s == '-')
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
			return false;
	return true;
}

/* Checks one absolute path; returns why it is bad, or NULL. */
static char *
path_problem(const char *v, unsigned flags)
{
	if (v[0] != '/')
		return cfg_xprintf("'%s' is not an absolute path", v);
	if ((flags & KEY_NOCOMMA) && strchr(v, ',') != NULL)
		return cfg_xprintf("'%s' must not contain ',' (it ends up in QEMU option strings)",
		                   v);
	return NULL;
}

static void
set_string(void *field, const char *v)
{
	char **p = field;

	free(*p);
	*p = cfg_xstrdup(v);
}

static void
free_strv(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* Parses value according to spec into field; returns why it is bad (allocated), or NULL. */
static char *
parse_value(const struct key_spec *spec, const char *v, void *field)
{
	char *why;
	uint64_t u;
	bool bv;
	int i;

	if (*v == '\0' && spec->type != KEY_STRING) {
		switch (spec->type) {
		case KEY_PATH:
		case KEY_PATHS:
			return cfg_xstrdup("empty value (use an absolute path)");
		case KEY_ENUM:
			return cfg_xprintf("empty value (use %s)", spec->hint);
		default:
			if (spec->flags & KEY_REQUIRED)
				return cfg_xstrdup("empty value");
			return cfg_xstrdup("empty value (remove the line for the default)");
		}
	}
	switch (spec->type) {
	case KEY_STRING:
		set_string(field, v);
		return NULL;
	case KEY_PATH:
		if ((why = path_problem(v, spec->flags)) != NULL)
			return why;
		set_string(field, v);
		return NULL;
	case KEY_PATHS: {
		char *copy = cfg_xstrdup(v), *save = NULL, **list = NULL;
		size_t n = 0;

		for (char *w = strtok_r(copy, " \t", &save); w != NULL;
		     w = strtok_r(NULL, " \t", &save)) {
			if ((why = path_problem(w, spec->flags)) != NULL) {
				free(copy);
				free_strv(list);
				return why;
			}
			list = cfg_xrealloc(list, n + 2, sizeof(*list));
			list[n++] = cfg_xstrdup(w);
			list[n] = NULL;
		}
		free(copy);
		free_strv(*(char ***)field);
		*(char ***)field = list;
		return NULL;
	}
	case KEY_NAME:
		if ((why = cfg_name_problem(v)) != NULL)
			return why;
		set_string(field, v);
		return NULL;
	case KEY_CPU:
		if (!valid_cpu(v))
			return cfg_xprintf("'%s' is not a CPU model (letters, digits and _.,=+- "
			                   "only, e.g. host)",
			                   v);
		set_string(field, v);
		return NULL;
	case KEY_IFNAME:
		if (!cfg_valid_ifname(v))
			return cfg_xprintf("'%s' is not an interface name (1-15 characters, no "
			                   "spaces, '/' or ':')",
			                   v);
		set_string(field, v);
		return NULL;
	case KEY_GROUP:
		if (!valid_group(v))
			return cfg_xprintf("'%s' is not a group name (up to 32 letters, digits, "
			                   "'_', '.' or '-')",
			                   v);
		set_string(field, v);
		return NULL;
	case KEY_SIZE:
		if (cfg_parse_size(v, &u) < 0)
			return cfg_xprintf("'%s' is not a size (use e.g. 512M or 2G)", v);
		if ((why = cfg_size_problem(v, u, spec->min, spec->max, spec->multiple)) != NULL)
			return why;
		*(uint64_t *)field = u;
		return NULL;
	case KEY_DURATION:
		/* cfg_parse_timeout's check when the table gives its range (shutdown_timeout). */
		if ((why = cfg_duration_problem(v, spec->min, spec->max, &u)) != NULL)
			return why;
		*(uint64_t *)field = u;
		return NULL;
	case KEY_UINT: {
		const char *end;

		/* Plain decimal only: no sign, no suffix. */
		u = 0;
		for (end = v; *end >= '0' && *end <= '9' && u <= spec->max; end++)
			u = u * 10 + (uint64_t)(*end - '0');
		if (*end != '\0' && !(*end >= '0' && *end <= '9'))
			return cfg_xprintf("'%s' is not a number (use %llu..%llu)", v,
			                   (unsigned long long)spec->min,
			                   (unsigned long long)spec->max);
		if (*end != '\0' || u < spec->min || u > spec->max)
			return cfg_xprintf("'%s' is out of range (%llu..%llu)", v,
			                   (unsigned long long)spec->min,
			                   (unsigned long long)spec->max);
		*(unsigned *)field = (unsigned)u;
		return NULL;
	}
	case KEY_BOOL:
		if (cfg_parse_bool(v, &bv) < 0)
			return cfg_xprintf("'%s' is not a boolean (use yes/no, true/false, on/off "
			                   "or 1/0)",
			                   v);
		*(bool *)field = bv;
		return NULL;
	case KEY_ENUM:
		for (i = 0; spec->names[i] != NULL; i++) {
			if (strcmp(spec->names[i], v) == 0) {
				*(int *)field = i;
				return NULL;
			}
		}
		return cfg_xprintf("'%s' is not valid (use %s)", v, spec->hint);
	case KEY_MAC: {
		const char *problem = cfg_mac_problem(v);

		if (problem != NULL)
			return cfg_xprintf("'%s' %s", v, problem);
		cfg_parse_mac(v, field);
		return NULL;
	}
	}
	return cfg_xstrdup("unsupported key type");
}

int
cfg_apply_section(const struct ini_section *s, const struct key_spec *specs, size_t n, void *target,
                  int *lines, struct cfg_diag *d)
{
	char *label = ini_section_label(s);
	int nerr = 0;

	for (size_t i = 0; i < n; i++)
		lines[i] = 0;
	for (size_t k = 0; k < s->n; k++) {
		const struct ini_entry *e = &s->entries[k];
		size_t i, best = n, bestd = 3;
		char *why;

		for (i = 0; i < n; i++)
			if (strcmp(specs[i].name, e->key) == 0)
				break;
		if (i == n) {
			for (size_t j = 0; j < n; j++) {
				size_t dist = distance(e->key, specs[j].name);

				if (dist < bestd) {
					bestd = dist;
					best = j;
				}
			}
			if (best < n)
				cfg_diag_add(d, e->line, "%s %s: unknown key (did you mean %s?)",
				             label, e->key, specs[best].name);
			else
				cfg_diag_add(d, e->line, "%s %s: unknown key", label, e->key);
			nerr++;
			continue;
		}
		lines[i] = e->line;
		if (e->bad) {
			nerr++;
			continue;
		}
		why = parse_value(&specs[i], e->value, (char *)target + specs[i].off);
		if (why != NULL) {
			cfg_diag_add(d, e->line, "%s %s: %s", label, e->key, why);
			free(why);
			nerr++;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if ((specs[i].flags & KEY_REQUIRED) && lines[i] == 0) {
			cfg_diag_add(d, s->line, "%s %s: required key missing", label,
			             specs[i].name);
			nerr++;
		}
	}
	free(label);
	return nerr;
}

char *
cfg_key_text(const struct key_spec *spec, const void *target)
{
	const char *field = (const char *)target + spec->off;
	char buf[32];

	switch (spec->type) {
	case KEY_STRING:
	case KEY_PATH:
	case KEY_NAME:
	case KEY_CPU:
	case KEY_IFNAME:
	case KEY_GROUP: {
		const char *v = *(char *const *)(const void *)field;

		return v != NULL ? cfg_xstrdup(v) : NULL;
	}
	case KEY_PATHS: {
		char *const *v = *(char *const *const *)(const void *)field, *out = NULL, *next;

		for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
			next = out == NULL ? cfg_xstrdup(v[i]) : cfg_xprintf("%s %s", out, v[i]);
			free(out);
			out = next;
		}
		return out;
	}
	case KEY_SIZE:
		cfg_size_format(*(const uint64_t *)(const void *)field, buf);
		return cfg_xstrdup(buf);
	case KEY_DURATION:
		cfg_duration_format(*(const uint64_t *)(const void *)field, buf);
		return cfg_xstrdup(buf);
	case KEY_UINT:
		return cfg_xprintf("%u", *(const unsigned *)(const void *)field);
	case KEY_BOOL:
		return cfg_xstrdup(*(const bool *)(const void *)field ? "yes" : "no");
	case KEY_ENUM: {
		int v = *(const int *)(const void *)field;

		for (int i = 0; spec->names[i] != NULL; i++)
			if (i == v)
				return cfg_xstrdup(spec->names[i]);
		return cfg_xprintf("%d", v);
	}
	case KEY_MAC:
		cfg_mac_format((const uint8_t *)field, buf);
		return cfg_xstrdup(buf);
	}
	return NULL;
}
