/*
 * Private to config/: allocation helpers, error collection with line numbers, the INI lexer shared
 * by the VM and daemon loaders, and the schema tables that turn key = value lines into typed
 * fields.
 */
#ifndef QVMD_CFG_PRIV_H
#define QVMD_CFG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

/* The longest line accepted in any configuration file, without its line break. */
#define CFG_LINE_MAX 4096

/* Out-of-memory is fatal in qvmd. */
void *cfg_xmalloc(size_t n);
void *cfg_xcalloc(size_t n, size_t size);
void *cfg_xrealloc(void *p, size_t n, size_t size);
char *cfg_xstrdup(const char *s);
char *cfg_xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Errors of one file, kept with their line so they can be reported in file order. */
struct cfg_diag_msg {
	int line;
	char *msg;
};
struct cfg_diag {
	const char *file;
	struct cfg_diag_msg *v;
	size_t n, cap;
	size_t dropped; /* messages past CFG_ERRORS_MAX, counted only */
};

void cfg_diag_init(struct cfg_diag *d, const char *file);
/* Adds "FILE:LINE: message" ("FILE: message" for line 0); past CFG_ERRORS_MAX, only counts. */
void cfg_diag_add(struct cfg_diag *d, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Moves the messages, sorted by line (stable), to errs and empties d; a last message says how many
 * were left out.
 */
void cfg_diag_flush(struct cfg_diag *d, struct cfg_errors *errs);

/* cfg_read_file for a loader: returns 0, or -1 with the message in d (line 0). */
int cfg_read_diag(const char *path, char **text, size_t *len, struct cfg_diag *d);

/* The lexed form of an INI file. */
struct ini_entry {
	char *key;
	char *value;
	int line;
	bool bad; /* already reported (control characters): present, but not parsed */
};
struct ini_section {
	char *kind; /* "vm" in [vm], "disk" in [disk root] */
	char *id;   /* "root" in [disk root], NULL when absent */
	int line;
	bool ignored; /* duplicate or malformed: its keys were dropped */
	struct ini_entry *entries;
	size_t n, cap;
};
struct ini_doc {
	struct ini_section *secs;
	size_t n, cap;
};

/*
 * Lexes text with libinih. Syntax problems (malformed or overlong lines, keys outside a section,
 * control characters, duplicate keys, duplicate sections) go to d; everything else is kept.
 */
void ini_lex(const char *text, size_t len, struct ini_doc *doc, struct cfg_diag *d);
void ini_doc_free(struct ini_doc *doc);
/* "[disk root]" or "[vm]", for messages. */
char *ini_section_label(const struct ini_section *s);

/* How a raw line reads, for the writer. */
enum ini_line_kind { INI_LINE_BLANK, INI_LINE_COMMENT, INI_LINE_SECTION, INI_LINE_OTHER };
/* Classifies one line (without its '\n'); for a section, *kind and *id get its parts (or NULL). */
enum ini_line_kind ini_classify_line(const char *line, size_t len, char **kind, char **id);

/* Schema: the known keys of one section kind. */
enum key_type {
	KEY_STRING,   /* printable, may be empty */
	KEY_PATH,     /* absolute path */
	KEY_PATHS,    /* space-separated absolute paths (char ** NULL-terminated) */
	KEY_NAME,     /* VM name */
	KEY_CPU,      /* QEMU -cpu model */
	KEY_IFNAME,   /* Linux interface name */
	KEY_GROUP,    /* Unix group name */
	KEY_SIZE,     /* uint64_t bytes */
	KEY_DURATION, /* uint64_t milliseconds */
	KEY_UINT,     /* unsigned */
	KEY_BOOL,     /* bool */
	KEY_ENUM,     /* an enum stored as int, names indexed by value */
	KEY_MAC,      /* uint8_t[6] */
};

#define KEY_REQUIRED 0x1u /* must be present */
#define KEY_NOCOMMA  0x2u /* paths that end up in QEMU option strings */

struct key_spec {
	const char *name;
	enum key_type type;
	size_t off; /* of the field in the target struct */
	unsigned flags;
	uint64_t min, max;        /* KEY_SIZE, KEY_DURATION, KEY_UINT; max 0 = no limit */
	uint64_t multiple;        /* KEY_SIZE: value must be a multiple of this */
	const char *const *names; /* KEY_ENUM: NULL-terminated */
	const char *hint;         /* KEY_ENUM: "q35 or pc" */
};

/*
 * Applies the entries of one section to target using specs (n of them). lines[i] receives the line
 * where specs[i] was set, 0 when absent. Unknown keys and bad values go to d. Returns the number of
 * errors found.
 */
int cfg_apply_section(const struct ini_section *s, const struct key_spec *specs, size_t n,
                      void *target, int *lines, struct cfg_diag *d);

/*
 * The value of one key of target as a file would spell it (sizes and durations in their largest
 * exact unit, booleans yes/no, enums by name), allocated; NULL when a string key is not set.
 */
char *cfg_key_text(const struct key_spec *spec, const void *target);

/* The schema tables of a definition's sections (cfg_vm.c): their keys, n in *n. */
const struct key_spec *cfg_vm_keys(size_t *n);
const struct key_spec *cfg_disk_keys(size_t *n);
const struct key_spec *cfg_net_keys(size_t *n);
const struct key_spec *cfg_cdrom_keys(size_t *n);
/* A section with every key at its default (cfg_vm_load's). */
void cfg_vm_defaults(struct vm_config *vm);
void cfg_disk_defaults(struct cfg_disk *disk);
void cfg_net_defaults(struct cfg_net *net);
void cfg_cdrom_defaults(struct cfg_cdrom *cdrom);
/* Why readonly = yes and bus = sata do not go together (QEMU's ide-hd refuses a read-only node). */
#define CFG_SATA_READONLY_WHY                                                                      \
	"not with bus = sata (QEMU's ide-hd cannot use a read-only image; use bus = virtio, or a " \
	"[cdrom] for a medium)"
/* SATA/IDE positions of a machine (CFG_SATA_MAX_Q35 or CFG_SATA_MAX_PC). */
unsigned cfg_sata_max(enum cfg_machine machine);

/*
 * Parses a duration and checks min <= ms <= max (max 0: no limit). Returns NULL with *ms set, or
 * why the text is not such a value (allocated): "'x' is not a duration (...)", "'2h' is out of
 * range (1s..1h)".
 */
char *cfg_duration_problem(const char *text, uint64_t min, uint64_t max, uint64_t *ms);
/* Text of a duration with the largest exact unit: 1h, 5m, 90s, 500ms. */
void cfg_duration_format(uint64_t ms, char out[32]);
/* Why a size is not within min..max or not a multiple (allocated), or NULL. text names it. */
char *cfg_size_problem(const char *text, uint64_t v, uint64_t min, uint64_t max, uint64_t multiple);

/* Keys of a [net] section, in the order of the schema table (cfg_vm.c). */
enum cfg_net_key {
	NK_TYPE,
	NK_MAC,
	NK_BRIDGE,
	NK_IFNAME,
	NK_RESTRICT,
	NK_MODEL,
	NK_APPLY,
	NK_COUNT
};
/* One broken rule of a NIC: the key at fault (-1: the section as a whole) and "key: why". */
typedef void (*cfg_net_rule_cb)(void *arg, int key, const char *why);
/*
 * The rules across a [net] section's keys (given[k]: key k is set; for restrict, set to yes). Calls
 * cb for each broken rule, in key order; returns how many there were. cfg_net_check and the loader
 * both apply them.
 */
int cfg_net_rules(const struct cfg_net *net, const bool given[NK_COUNT], cfg_net_rule_cb cb,
                  void *arg);

/* Text of a size with the largest exact unit: 16M, 10G, 1536K, 1000. */
void cfg_size_format(uint64_t bytes, char out[32]);
/* Linux interface name rules: 1..15 bytes, printable, no '/', ':', spaces; not "." or "..". */
bool cfg_valid_ifname(const char *s);
/* Why text is not a usable unicast MAC ("is a multicast address (...)"), or NULL if it is one. */
const char *cfg_mac_problem(const char *text);
/* Enum names indexed by value, NULL-terminated. */
extern const char *const cfg_format_names[];
extern const char *const cfg_cache_names[];
extern const char *const cfg_net_type_names[];
extern const char *const cfg_disk_bus_names[];
extern const char *const cfg_net_model_names[];
extern const char *const cfg_display_names[];
/* True when s has a byte < 0x20 or 0x7f. */
bool cfg_has_control(const char *s);

/* Loads a VM definition from text already in memory; path is used for messages and the name check.
 */
struct vm_config *cfg_vm_load_text(const char *path, const char *text, size_t len,
                                   struct cfg_errors *errs);
/* Loads qvmd.conf from text already in memory; path is used for messages. Returns 0 or -1. */
int cfg_daemon_load_text(const char *path, const char *text, size_t len, struct daemon_config *out,
                         struct cfg_errors *errs);

#endif
