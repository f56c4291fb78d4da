/*
 * jget PATH: prints one value of the JSON document on stdin, for shell tests. PATH is like
 * .state, .vms[2].name or .result.return.status ("" or "." for the whole document). Strings print
 * raw, other values as compact JSON, a missing value prints nothing and exits 1.
 */
#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
main(int argc, char **argv)
{
	static char buf[16 * 1024 * 1024];
	size_t len = fread(buf, 1, sizeof buf - 1, stdin);
	struct json_object *o;
	const char *p = argc > 1 ? argv[1] : ".";

	buf[len] = '\0';
	o = json_tokener_parse(buf);
	if (o == NULL)
		return 1;
	struct json_object *cur = o;
	while (*p && cur) {
		if (*p == '.') {
			char key[256];
			size_t k = 0;

			p++;
			while (*p && *p != '.' && *p != '[' && k < sizeof key - 1)
				key[k++] = *p++;
			key[k] = '\0';
			if (k == 0)
				continue;
			if (!json_object_object_get_ex(cur, key, &cur))
				cur = NULL;
		} else if (*p == '[') {
			long i = strtol(p + 1, (char **)&p, 10);

			if (*p == ']')
				p++;
			cur = json_object_is_type(cur, json_type_array)
			          ? json_object_array_get_idx(cur, (size_t)i)
			          : NULL;
		} else {
			cur = NULL;
		}
	}
	if (cur == NULL) {
		json_object_put(o);
		return 1;
	}
	if (json_object_is_type(cur, json_type_string))
		printf("%s\n", json_object_get_string(cur));
	else
		printf("%s\n", json_object_to_json_string_ext(
		                   cur, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return 0;
}
