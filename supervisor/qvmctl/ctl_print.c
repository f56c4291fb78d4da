/* Human-readable output for qvmctl: units, durations and padded tables. */
#include "ctl_print.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xalloc.h"

void
ctl_fmt_size(uint64_t bytes, char *out, size_t len)
{
	static const char units[] = "BKMGTPE";
	double v = (double)bytes;
	int u = 0;

	if (bytes < 1024) {
		snprintf(out, len, "%" PRIu64 "B", bytes);
		return;
	}
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	/* Round the way printf will, then move up a unit when that reaches 1024 (1023.7M is 1.0G).
	 */
	if (v >= 1023.5 && u < 6) {
		v /= 1024;
		u++;
	}
	if (v < 9.95)
		snprintf(out, len, "%.1f%c", v, units[u]);
	else
		snprintf(out, len, "%.0f%c", v, units[u]);
}

void
ctl_fmt_uptime(uint64_t ms, char *out, size_t len)
{
	uint64_t s = ms / 1000;

	if (s >= 86400)
		snprintf(out, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(out, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
	else if (s >= 60)
		snprintf(out, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else
		snprintf(out, len, "%" PRIu64 "s", s);
}

void
ctl_fmt_seconds(uint64_t ms, char *out, size_t len)
{
	snprintf(out, len, "%.1fs", (double)ms / 1000.0);
}

void
ctl_fmt_time(int64_t unix_ms, char *out, size_t len)
{
	int64_t msec = unix_ms % 1000;
	time_t sec = (time_t)(unix_ms / 1000);
	char when[32];
	struct tm tm;

	if (msec < 0) {
		msec += 1000;
		sec--;
	}
	if (localtime_r(&sec, &tm) == NULL ||
	    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		snprintf(when, sizeof when, "%" PRId64, (int64_t)sec);
	snprintf(out, len, "%s.%03d", when, (int)msec);
}

void
ctl_print_json(FILE *f, struct json_object *obj)
{
	fprintf(f, "%s\n",
	        json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
	                                                JSON_C_TO_STRING_SPACED |
	                                                JSON_C_TO_STRING_NOSLASHESCAPE));
}

const char *
ctl_json_compact(struct json_object *obj)
{
	return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
	                                               JSON_C_TO_STRING_NOSLASHESCAPE);
}

const char *
ctl_json_str(struct json_object *obj, const char *key, const char *dflt)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return dflt;
	return json_object_get_string(v);
}

int64_t
ctl_json_int(struct json_object *obj, const char *key, int64_t dflt)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int))
		return dflt;
	return json_object_get_int64(v);
}

bool
ctl_json_bool(struct json_object *obj, const char *key, bool dflt)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_boolean))
		return dflt;
	return json_object_get_boolean(v);
}

/* The member key of obj when it has type t, else NULL. */
static struct json_object *
ctl_json_typed(struct json_object *obj, const char *key, enum json_type t)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, t))
		return NULL;
	return v;
}

struct json_object *
ctl_json_array(struct json_object *obj, const char *key)
{
	return ctl_json_typed(obj, key, json_type_array);
}

struct json_object *
ctl_json_obj(struct json_object *obj, const char *key)
{
	return ctl_json_typed(obj, key, json_type_object);
}

struct ctl_table {
	size_t ncols, nrows; /* row 0 is the header */
	char **cells;        /* nrows * ncols */
};

struct ctl_table *
ctl_table_new(size_t ncols, const char *const *headers)
{
	struct ctl_table *t = xcalloc(1, sizeof *t);

	t->ncols = ncols;
	ctl_table_add(t, headers);
	return t;
}

void
ctl_table_free(struct ctl_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void
ctl_table_add(struct ctl_table *t, const char *const *cells)
{
	t->cells = xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *t->cells);
	for (size_t c = 0; c < t->ncols; c++)
		t->cells[t->nrows * t->ncols + c] = xstrdup(cells[c] != NULL ? cells[c] : "-");
	t->nrows++;
}

void
ctl_table_print(const struct ctl_table *t, FILE *f)
{
	size_t *width = xcalloc(t->ncols, sizeof *width);

	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			size_t w = strlen(t->cells[r * t->ncols + c]);

			if (w > width[c])
				width[c] = w;
		}
	}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *cell = t->cells[r * t->ncols + c];

			if (c + 1 == t->ncols)
				fprintf(f, "%s\n", cell);
			else
				fprintf(f, "%-*s  ", (int)width[c], cell);
		}
	}
	free(width);
}
