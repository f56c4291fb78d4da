/*
 * supervisor/qvmctl/ctl_print: qvmctl's human output: sizes, durations, times, aligned tables, and
 * typed reads of reply fields that tolerate absent or mistyped members.
 */
#ifndef QVMD_CTL_PRINT_H
#define QVMD_CTL_PRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

/* "512M", "1.0G", "16G": one decimal below 10 units, like ls -h. */
void ctl_fmt_size(uint64_t bytes, char *out, size_t len);
/* "3d04h", "2h05m", "5m03s", "42s". */
void ctl_fmt_uptime(uint64_t ms, char *out, size_t len);
/* "2.0s", "0.5s". */
void ctl_fmt_seconds(uint64_t ms, char *out, size_t len);
/* A unix time in ms as local "2024-05-01T12:00:00.123". */
void ctl_fmt_time(int64_t unix_ms, char *out, size_t len);

/* Prints obj as indented JSON followed by a newline. */
void ctl_print_json(FILE *f, struct json_object *obj);
/* obj as one compact line, borrowed until obj changes or is freed. */
const char *ctl_json_compact(struct json_object *obj);

/* Member key of obj as a string / integer / boolean, or dflt when absent or of another type. */
const char *ctl_json_str(struct json_object *obj, const char *key, const char *dflt);
int64_t ctl_json_int(struct json_object *obj, const char *key, int64_t dflt);
bool ctl_json_bool(struct json_object *obj, const char *key, bool dflt);
/* Member key of obj if it is an array, else NULL. */
struct json_object *ctl_json_array(struct json_object *obj, const char *key);
/* An object member, or NULL (absent, null or another type). */
struct json_object *ctl_json_obj(struct json_object *obj, const char *key);

/* A table printed with columns padded to their widest cell. */
struct ctl_table;

struct ctl_table *ctl_table_new(size_t ncols, const char *const *headers);
void ctl_table_free(struct ctl_table *t);
/* Adds one row of ncols cells (copied). */
void ctl_table_add(struct ctl_table *t, const char *const *cells);
void ctl_table_print(const struct ctl_table *t, FILE *f);

#endif
