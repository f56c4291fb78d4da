/* config/cfg_units: value parsers (sizes, durations, booleans, MACs), names and enum tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_priv.h"

/* Parses a non-empty run of decimal digits; *end points past it. Returns -1 on overflow. */
static int
parse_digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned digit = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - digit) / 10)
			return -1;
		v = v * 10 + digit;
	}
	*out = v;
	*end = p;
	return 0;
}

int
cfg_parse_size(const char *text, uint64_t *bytes)
{
	uint64_t v, mult = 1;
	const char *p;

	if (text == NULL || parse_digits(text, &v, &p) < 0)
		return -1;
	switch (*p) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1ULL << 10;
		break;
	case 'm':
	case 'M':
		mult = 1ULL << 20;
		break;
	case 'g':
	case 'G':
		mult = 1ULL << 30;
		break;
	case 't':
	case 'T':
		mult = 1ULL << 40;
		break;
	default:
		return -1;
	}
	if (*p != '\0' && p[1] != '\0')
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*bytes = v * mult;
	return 0;
}

int
cfg_parse_duration(const char *text, uint64_t *ms)
{
	uint64_t v, mult;
	const char *p;

	if (text == NULL || parse_digits(text, &v, &p) < 0)
		return -1;
	if (strcmp(p, "") == 0 || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 60 * 60 * 1000;
	else
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*ms = v * mult;
	return 0;
}

void
cfg_duration_format(uint64_t ms, char out[32])
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(out, 32, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(out, 32, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(out, 32, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, 32, "%llums", (unsigned long long)ms);
}

char *
cfg_duration_problem(const char *text, uint64_t min, uint64_t max, uint64_t *ms)
{
	char a[32], b[32];
	uint64_t v;

	if (cfg_parse_duration(text, &v) < 0)
		return cfg_xprintf("'%s' is not a duration (use e.g. 90s, 500ms, 5m or 1h)",
		                   text != NULL ? text : "");
	if (v < min || (max != 0 && v > max)) {
		cfg_duration_format(min, a);
		cfg_duration_format(max, b);
		return cfg_xprintf("'%s' is out of range (%s..%s)", text, a, b);
	}
	*ms = v;
	return NULL;
}

int
cfg_parse_timeout(const char *s, uint64_t *ms, char **cause)
{
	char *why =
	    cfg_duration_problem(s, CFG_SHUTDOWN_TIMEOUT_MIN_MS, CFG_SHUTDOWN_TIMEOUT_MAX_MS, ms);

	if (why == NULL)
		return 0;
	*cause = why;
	return -1;
}

char *
cfg_size_problem(const char *text, uint64_t v, uint64_t min, uint64_t max, uint64_t multiple)
{
	char a[32];

	if (v < min) {
		cfg_size_format(min, a);
		return cfg_xprintf("'%s' is too small (at least %s)", text, a);
	}
	if (max != 0 && v > max) {
		cfg_size_format(max, a);
		return cfg_xprintf("'%s' is too large (at most %s)", text, a);
	}
	if (multiple > 1 && v % multiple != 0) {
		cfg_size_format(multiple, a);
		return cfg_xprintf("'%s' is not a multiple of %s", text, a);
	}
	return NULL;
}

int
cfg_parse_bool(const char *text, bool *value)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	if (text == NULL)
		return -1;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(text, yes[i]) == 0) {
			*value = true;
			return 0;
		}
		if (strcmp(text, no[i]) == 0) {
			*value = false;
			return 0;
		}
	}
	return -1;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Only the syntax: six ':'-separated pairs of hex digits. */
static int
parse_mac_syntax(const char *text, uint8_t mac[6])
{
	uint8_t m[6];

	if (text == NULL || strlen(text) != 17)
		return -1;
	for (int i = 0; i < 6; i++) {
		int hi = hex_value(text[i * 3]), lo = hex_value(text[i * 3 + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && text[i * 3 + 2] != ':'))
			return -1;
		m[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(mac, m, 6);
	return 0;
}

int
cfg_parse_mac(const char *text, uint8_t mac[6])
{
	static const uint8_t zero[6];
	uint8_t m[6];

	if (parse_mac_syntax(text, m) < 0 || (m[0] & 1) || memcmp(m, zero, 6) == 0)
		return -1;
	memcpy(mac, m, 6);
	return 0;
}

const char *
cfg_mac_problem(const char *text)
{
	static const uint8_t zero[6];
	uint8_t m[6];

	if (parse_mac_syntax(text, m) < 0)
		return "is not a MAC address (use six hex pairs, e.g. 52:54:00:12:34:56)";
	if (m[0] & 1)
		return "is a multicast address (the first byte must be even, e.g. 52:54:00:...)";
	if (memcmp(m, zero, 6) == 0)
		return "is the all-zero address (use e.g. 52:54:00:12:34:56)";
	return NULL;
}

void
cfg_mac_derive(const char *vm, const char *id, uint8_t mac[6])
{
	/* FNV-1a (32 bit) of "vm/id"; its low three bytes follow QEMU's 52:54:00 prefix. */
	uint32_t h = 2166136261u;
	const char *parts[3] = {vm, "/", id};

	for (int i = 0; i < 3; i++) {
		for (const unsigned char *p = (const unsigned char *)parts[i]; *p != '\0'; p++) {
			h ^= *p;
			h *= 16777619u;
		}
	}
	mac[0] = 0x52;
	mac[1] = 0x54;
	mac[2] = 0x00;
	mac[3] = (uint8_t)(h >> 16);
	mac[4] = (uint8_t)(h >> 8);
	mac[5] = (uint8_t)h;
}

void
cfg_mac_format(const uint8_t mac[6], char out[18])
{
	snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
	         mac[5]);
}

static bool
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

char *
cfg_name_problem(const char *name)
{
	size_t n = 0;
	bool ok;

	if (name == NULL)
		return cfg_xstrdup("no name given");
	/* A first letter or digit also rules out "." and "..", and names read as options. */
	ok = is_alnum(*name);
	for (const char *p = name; ok && *p != '\0'; p++, n++)
		ok = is_alnum(*p) || *p == '_' || *p == '.' || *p == '-';
	if (!ok || n > CFG_NAME_MAX)
		return cfg_xprintf("'%s' is not a valid name (a letter or digit, then up to %d "
		                   "letters, digits, '_', '.' or '-')",
		                   name, CFG_NAME_MAX - 1);
	if (strncmp(name, CFG_NAME_RESERVED, strlen(CFG_NAME_RESERVED)) == 0)
		return cfg_xprintf("'%s' is reserved (names starting with '" CFG_NAME_RESERVED
		                   "' are qvmd's own files in run_dir)",
		                   name);
	return NULL;
}

bool
cfg_valid_name(const char *name)
{
	char *why = cfg_name_problem(name);

	free(why);
	return why == NULL;
}

bool
cfg_valid_device_id(const char *id)
{
	size_t n = 0;

	if (id == NULL || !((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z')))
		return false;
	for (const char *p = id; *p != '\0'; p++, n++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			return false;
	return n <= CFG_ID_MAX;
}

bool
cfg_valid_ifname(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 15 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '/' ||
		    *s == ':')
			return false;
	return true;
}

bool
cfg_has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

void
cfg_size_format(uint64_t bytes, char out[32])
{
	static const char units[] = "KMGT";
	int u = -1;

	while (u < 3 && bytes != 0 && bytes % 1024 == 0) {
		bytes /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(out, 32, "%llu", (unsigned long long)bytes);
	else
		snprintf(out, 32, "%llu%c", (unsigned long long)bytes, units[u]);
}

const char *const cfg_format_names[] = {"qcow2", "raw", NULL};
const char *const cfg_cache_names[] = {"none",       "writeback", "writethrough",
                                       "directsync", "unsafe",    NULL};
const char *const cfg_net_type_names[] = {"user", "tap", "bridge", NULL};
const char *const cfg_disk_bus_names[] = {"virtio", "sata", NULL};
const char *const cfg_net_model_names[] = {"virtio", "e1000", "e1000e", NULL};
const char *const cfg_display_names[] = {"none", "vnc", NULL};

static int
lookup(const char *const *names, const char *text)
{
	for (int i = 0; text != NULL && names[i] != NULL; i++)
		if (strcmp(names[i], text) == 0)
			return i;
	return -1;
}

const char *
cfg_format_name(enum cfg_format f)
{
	return (unsigned)f < 2 ? cfg_format_names[f] : "?";
}

const char *
cfg_cache_name(enum cfg_cache c)
{
	return (unsigned)c < 5 ? cfg_cache_names[c] : "?";
}

const char *
cfg_net_type_name(enum cfg_net_type t)
{
	return (unsigned)t < 3 ? cfg_net_type_names[t] : "?";
}

const char *
cfg_disk_bus_name(enum cfg_disk_bus b)
{
	return (unsigned)b <= CFG_BUS_SATA ? cfg_disk_bus_names[b] : "?";
}

const char *
cfg_net_model_name(enum cfg_net_model m)
{
	return (unsigned)m <= CFG_NET_MODEL_E1000E ? cfg_net_model_names[m] : "?";
}

const char *
cfg_display_name(enum cfg_display d)
{
	return (unsigned)d <= CFG_DISPLAY_VNC ? cfg_display_names[d] : "?";
}

int
cfg_format_parse(const char *text, enum cfg_format *f)
{
	int i = lookup(cfg_format_names, text);

	if (i < 0)
		return -1;
	*f = (enum cfg_format)i;
	return 0;
}

int
cfg_cache_parse(const char *text, enum cfg_cache *c)
{
	int i = lookup(cfg_cache_names, text);

	if (i < 0)
		return -1;
	*c = (enum cfg_cache)i;
	return 0;
}

int
cfg_net_type_parse(const char *text, enum cfg_net_type *t)
{
	int i = lookup(cfg_net_type_names, text);

	if (i < 0)
		return -1;
	*t = (enum cfg_net_type)i;
	return 0;
}
