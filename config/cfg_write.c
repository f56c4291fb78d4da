/*
 * config/cfg_write: persists hot-plugged devices into a VM definition by editing its text line by
 * line (never re-serialising it), so the operator's comments, order and spacing survive. The result
 * is checked with the loader before it replaces the original with an atomic rename. Also writes
 * whole new definitions (qvmctl create): the text an operator would write, never replacing a file.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_priv.h"

/* A growable byte buffer. */
struct buf {
	char *p;
	size_t n, cap;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		while (b->n + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		b->p = cfg_xrealloc(b->p, b->cap, 1);
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s == NULL) {
		fputs("qvmd: out of memory\n", stderr);
		abort();
	}
	buf_add(b, s, strlen(s));
	free(s);
}

/* The original file: its real path (symlinks resolved), text and validated contents. */
struct original {
	char *real;
	char *text;
	size_t len;
	struct vm_config *vm;
};

static void
original_free(struct original *o)
{
	free(o->real);
	free(o->text);
	cfg_vm_free(o->vm);
}

/* Explains the first error of errs in *cause, prefixed by what. */
static void
errs_cause(struct cfg_errors *errs, char **cause, const char *what)
{
	*cause = cfg_xprintf("%s: %s", what, errs->n > 0 ? errs->msgs[0] : "unknown error");
	cfg_errors_free(errs);
}

static int
original_read(const char *path, struct original *o, char **cause)
{
	struct cfg_errors errs;
	struct cfg_diag d;

	memset(o, 0, sizeof(*o));
	cfg_errors_init(&errs);
	o->real = realpath(path, NULL);
	if (o->real == NULL) {
		*cause = cfg_xprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	cfg_diag_init(&d, path);
	if (cfg_read_diag(o->real, &o->text, &o->len, &d) < 0) {
		cfg_diag_flush(&d, &errs);
		errs_cause(&errs, cause, path);
		goto fail;
	}
	o->vm = cfg_vm_load_text(path, o->text, o->len, &errs);
	if (o->vm == NULL) {
		char *what = cfg_xprintf("%s: not changed, the definition has errors", path);

		errs_cause(&errs, cause, what);
		free(what);
		goto fail;
	}
	return 0;
fail:
	original_free(o);
	memset(o, 0, sizeof(*o));
	return -1;
}

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Replaces o->real with text: a temp file in the same directory with the same mode (and owner when
 * we may), fsynced, loaded again to be sure it is valid, renamed over the original, and the
 * directory fsynced so the rename itself is durable.
 */
/* Makes a new directory entry durable: 0, or -1 with *cause (the file itself is in place). */
static int
sync_dir(const char *path, const char *dir, char **cause)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), saved;

	if (dfd >= 0 && fsync(dfd) == 0) {
		close(dfd);
		return 0;
	}
	saved = errno;
	if (dfd >= 0)
		close(dfd);
	*cause = cfg_xprintf("%s: written, but syncing %s failed: %s", path, dir, strerror(saved));
	return -1;
}

static int
replace_file(const char *path, const struct original *o, const char *text, size_t len, char **cause)
{
	char *dircopy = cfg_xstrdup(o->real), *basecopy = cfg_xstrdup(o->real), *tmp, *back;
	const char *dir = dirname(dircopy), *base = basename(basecopy);
	struct cfg_errors errs;
	struct vm_config *vm;
	struct cfg_diag d;
	struct stat st;
	size_t backlen;
	int fd, saved, ret = -1;

	cfg_errors_init(&errs);
	tmp = cfg_xprintf("%s/.%s.tmpXXXXXX", dir, base);
	if (stat(o->real, &st) < 0) {
		*cause = cfg_xprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		*cause = cfg_xprintf("%s: cannot create a temporary file in %s: %s", path, dir,
		                     strerror(errno));
		goto out;
	}
	if (fchmod(fd, st.st_mode & 07777) < 0 ||
	    (geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) < 0) ||
	    write_all(fd, text, len) < 0 || fsync(fd) < 0) {
		saved = errno;
		close(fd);
		*cause = cfg_xprintf("%s: cannot write %s: %s", path, tmp, strerror(saved));
		goto unlink;
	}
	if (close(fd) < 0) {
		*cause = cfg_xprintf("%s: cannot write %s: %s", path, tmp, strerror(errno));
		goto unlink;
	}
	/* What is on disk is what gets renamed: load that, under the final name. */
	cfg_diag_init(&d, tmp);
	if (cfg_read_diag(tmp, &back, &backlen, &d) < 0) {
		cfg_diag_flush(&d, &errs);
		errs_cause(&errs, cause, path);
		goto unlink;
	}
	vm = cfg_vm_load_text(path, back, backlen, &errs);
	free(back);
	if (vm == NULL) {
		char *what = cfg_xprintf("%s: not changed, the result would not load", path);

		errs_cause(&errs, cause, what);
		free(what);
		goto unlink;
	}
	cfg_vm_free(vm);
	if (rename(tmp, o->real) < 0) {
		*cause = cfg_xprintf("%s: cannot replace %s: %s", path, o->real, strerror(errno));
		goto unlink;
	}
	ret = sync_dir(path, dir, cause);
	goto out;
unlink:
	saved = errno;
	unlink(tmp);
	errno = saved;
out:
	free(tmp);
	free(dircopy);
	free(basecopy);
	return ret;
}

static bool
same_opt(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Refuses ids and values that the file could not carry unchanged. */
static int
check_writable(const char *path, const char *kind, const char *id, const char *const *values,
               size_t n, char **cause)
{
	if (!cfg_valid_device_id(id)) {
		*cause = cfg_xprintf("%s: '%s' is not a valid device id", path, id ? id : "");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (values[i] != NULL && cfg_has_control(values[i])) {
			*cause = cfg_xprintf("%s: [%s %s]: a value contains a control character",
			                     path, kind, id);
			return -1;
		}
	}
	return 0;
}

static int
check_absent(const char *path, const struct original *o, const char *id, char **cause)
{
	const char *kind = cfg_vm_disk(o->vm, id) != NULL  ? "disk"
	                   : cfg_vm_net(o->vm, id) != NULL ? "net"
	                                                   : NULL;

	if (kind == NULL)
		return 0;
	*cause = cfg_xprintf("%s: device id '%s' is already defined ([%s %s])", path, id, kind, id);
	return -1;
}

/* The original text, ended by a newline and then one blank line unless it already ends in one. */
static void
start_appending(struct buf *b, const struct original *o)
{
	const char *last;
	bool blank = true;

	buf_add(b, o->text, o->len);
	if (b->n == 0)
		return;
	if (b->p[b->n - 1] != '\n')
		buf_add(b, "\n", 1);
	last = b->p + b->n - 1;
	while (last > b->p && last[-1] != '\n')
		last--;
	for (const char *c = last; *c != '\n'; c++)
		if (*c != ' ' && *c != '\t' && *c != '\r')
			blank = false;
	if (!blank)
		buf_add(b, "\n", 1);
}

/* Loads the new text in memory and hands back the VM, or NULL with *cause. */
static struct vm_config *
load_new(const char *path, const struct buf *b, char **cause)
{
	struct cfg_errors errs;
	struct vm_config *vm;

	cfg_errors_init(&errs);
	vm = cfg_vm_load_text(path, b->p, b->n, &errs);
	if (vm == NULL) {
		char *what = cfg_xprintf("%s: not changed, the result would not load", path);

		errs_cause(&errs, cause, what);
		free(what);
	}
	return vm;
}

/* A section to append: how to print it and how to tell that it reads back as given. */
struct new_section {
	const char *kind; /* "disk" or "net" */
	const char *id;
	const char *const *values; /* free-text values that must survive the round trip */
	size_t nvalues;
	const char *hint; /* appended to the "cannot be written" error */
	const void *dev;
	void (*render)(struct buf *b, const void *dev);
	bool (*reads_back)(const struct vm_config *vm, const void *dev);
};

/* Appends one section, checks the result loads and reads back as given, then replaces the file. */
static int
add_section(const char *path, const struct new_section *ns, char **cause)
{
	struct original o;
	struct vm_config *vm;
	struct buf b = {0};
	int ret = -1;

	if (check_writable(path, ns->kind, ns->id, ns->values, ns->nvalues, cause) < 0)
		return -1;
	if (original_read(path, &o, cause) < 0)
		return -1;
	if (check_absent(path, &o, ns->id, cause) < 0)
		goto out;
	start_appending(&b, &o);
	ns->render(&b, ns->dev);
	vm = load_new(path, &b, cause);
	if (vm == NULL)
		goto out;
	if (!ns->reads_back(vm, ns->dev)) {
		*cause = cfg_xprintf("%s: [%s %s] cannot be written as given%s", path, ns->kind,
		                     ns->id, ns->hint);
		cfg_vm_free(vm);
		goto out;
	}
	cfg_vm_free(vm);
	ret = replace_file(path, &o, b.p, b.n, cause);
out:
	free(b.p);
	original_free(&o);
	return ret;
}

static void
render_disk(struct buf *b, const void *dev)
{
	const struct cfg_disk *disk = dev;
	char size[32];

	buf_printf(b, "[disk %s]\nfile = %s\nformat = %s\n", disk->id, disk->file ? disk->file : "",
	           cfg_format_name(disk->format));
	if (disk->size != 0) {
		cfg_size_format(disk->size, size);
		buf_printf(b, "size = %s\n", size);
	}
	if (disk->readonly)
		buf_printf(b, "readonly = yes\n");
	if (disk->cache != CFG_CACHE_NONE)
		buf_printf(b, "cache = %s\n", cfg_cache_name(disk->cache));
	if (disk->boot)
		buf_printf(b, "boot = yes\n");
	if (disk->bus != CFG_BUS_VIRTIO)
		buf_printf(b, "bus = %s\n", cfg_disk_bus_name(disk->bus));
	if (disk->apply != CFG_APPLY_PENDING)
		buf_printf(b, "apply = replace\n");
}

static bool
disk_reads_back(const struct vm_config *vm, const void *dev)
{
	const struct cfg_disk *disk = dev, *got = cfg_vm_disk(vm, disk->id);

	return got != NULL && same_opt(got->file, disk->file) && got->format == disk->format &&
	       got->size == disk->size && got->readonly == disk->readonly &&
	       got->cache == disk->cache && got->boot == disk->boot && got->bus == disk->bus &&
	       got->apply == disk->apply;
}

/* A device that fails the checks a file gets is never written: "PATH: why". */
static int
refuse(const char *path, char *why, char **cause)
{
	*cause = cfg_xprintf("%s: %s", path, why);
	free(why);
	return -1;
}

int
cfg_write_add_disk(const char *path, const struct cfg_disk *disk, char **cause)
{
	const char *values[] = {disk->file};
	const struct new_section ns = {
	    "disk",
	    disk->id,
	    values,
	    1,
	    " (check the file name for leading or trailing spaces and ' ;')",
	    disk,
	    render_disk,
	    disk_reads_back};

	char *why = NULL;

	if (cfg_disk_check(disk, &why) < 0)
		return refuse(path, why, cause);
	return add_section(path, &ns, cause);
}

/* A [net] section; with_mac: the MAC too (a persisted NIC keeps the one it ran with; a new
 * definition leaves a derived one out). */
static void
render_net_mac(struct buf *b, const struct cfg_net *net, bool with_mac)
{
	char mac[18];

	buf_printf(b, "[net %s]\ntype = %s\n", net->id, cfg_net_type_name(net->type));
	if (with_mac) {
		cfg_mac_format(net->mac, mac);
		buf_printf(b, "mac = %s\n", mac);
	}
	if (net->bridge != NULL)
		buf_printf(b, "bridge = %s\n", net->bridge);
	if (net->ifname != NULL)
		buf_printf(b, "ifname = %s\n", net->ifname);
	if (net->restricted)
		buf_printf(b, "restrict = yes\n");
	if (net->model != CFG_NET_MODEL_VIRTIO)
		buf_printf(b, "model = %s\n", cfg_net_model_name(net->model));
	if (net->apply != CFG_APPLY_PENDING)
		buf_printf(b, "apply = replace\n");
}

static void
render_net(struct buf *b, const void *dev)
{
	render_net_mac(b, dev, true);
}

static bool
net_reads_back(const struct vm_config *vm, const void *dev)
{
	const struct cfg_net *net = dev, *got = cfg_vm_net(vm, net->id);

	return got != NULL && got->type == net->type && memcmp(got->mac, net->mac, 6) == 0 &&
	       same_opt(got->bridge, net->bridge) && same_opt(got->ifname, net->ifname) &&
	       got->restricted == net->restricted && got->model == net->model &&
	       got->apply == net->apply;
}

int
cfg_write_add_net(const char *path, const struct cfg_net *net, char **cause)
{
	const char *values[] = {net->bridge, net->ifname};
	const struct new_section ns = {"net", net->id, values,     2,
	                               "",    net,     render_net, net_reads_back};

	char *why = NULL;

	if (cfg_net_check(net, &why) < 0)
		return refuse(path, why, cause);
	return add_section(path, &ns, cause);
}

/* One line of the original text: where it starts and how it reads. */
struct line {
	size_t start, len; /* len without the '\n' */
	enum ini_line_kind kind;
	bool match; /* the section header of the device being removed */
};

/* The section kinds that cfg_write_remove_device removes. */
static const char *const removable_kinds[] = {"disk", "net", NULL};

static bool
kind_in(const char *kind, const char *const *kinds)
{
	for (size_t i = 0; kind != NULL && kinds[i] != NULL; i++)
		if (strcmp(kind, kinds[i]) == 0)
			return true;
	return false;
}

/* The lines of text; match marks the headers [KIND id] for a KIND in kinds. */
static struct line *
split_lines(const char *text, size_t len, const char *const *kinds, const char *id, size_t *nlines)
{
	struct line *v = NULL;
	size_t n = 0;

	for (size_t pos = 0; pos < len;) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t l = nl != NULL ? (size_t)(nl - (text + pos)) : len - pos;
		char *kind = NULL, *sid = NULL;

		v = cfg_xrealloc(v, n + 1, sizeof(*v));
		v[n].start = pos;
		v[n].len = l;
		v[n].kind = ini_classify_line(text + pos, l, &kind, &sid);
		v[n].match = v[n].kind == INI_LINE_SECTION && sid != NULL && kind_in(kind, kinds) &&
		             strcmp(sid, id) == 0;
		free(kind);
		free(sid);
		n++;
		pos += l + (nl != NULL ? 1 : 0);
	}
	*nlines = n;
	return v;
}

int
cfg_write_remove_device(const char *path, const char *id, char **cause)
{
	struct original o;
	struct line *lines;
	struct vm_config *vm;
	struct buf b = {0};
	size_t n, h, e, t, c, cut_from, cut_to;
	int ret = -1;

	if (id == NULL || !cfg_valid_device_id(id)) {
		*cause = cfg_xprintf("%s: '%s' is not a valid device id", path, id ? id : "");
		return -1;
	}
	if (original_read(path, &o, cause) < 0)
		return -1;
	if (cfg_vm_disk(o.vm, id) == NULL && cfg_vm_net(o.vm, id) == NULL) {
		*cause = cfg_xprintf("%s: no device '%s' is defined", path, id);
		original_free(&o);
		return -1;
	}
	lines = split_lines(o.text, o.len, removable_kinds, id, &n);
	for (h = 0; h < n && !lines[h].match; h++)
		;
	if (h == n) {
		*cause = cfg_xprintf("%s: cannot find the section of device '%s'", path, id);
		free(lines);
		goto out;
	}
	for (e = h + 1; e < n && lines[e].kind != INI_LINE_SECTION; e++)
		;
	/* Comments right above the next header belong to it (blank lines between them too). */
	for (t = e; t > h + 1 &&
	            (lines[t - 1].kind == INI_LINE_BLANK || lines[t - 1].kind == INI_LINE_COMMENT);
	     t--)
		;
	for (c = t; c < e && lines[c].kind != INI_LINE_COMMENT; c++)
		;
	cut_from = lines[h].start;
	cut_to = c < n ? lines[c].start : o.len;
	/* Removing the last section: drop the blank line that separated it from the rest. */
	if (c == n && lines[c - 1].kind != INI_LINE_BLANK && h > 0 &&
	    lines[h - 1].kind == INI_LINE_BLANK)
		cut_from = lines[h - 1].start;
	buf_add(&b, o.text, cut_from);
	buf_add(&b, o.text + cut_to, o.len - cut_to);
	free(lines);
	vm = load_new(path, &b, cause);
	if (vm == NULL)
		goto out;
	if (cfg_vm_disk(vm, id) != NULL || cfg_vm_net(vm, id) != NULL) {
		*cause = cfg_xprintf("%s: device '%s' is still defined after removing its section",
		                     path, id);
		cfg_vm_free(vm);
		goto out;
	}
	cfg_vm_free(vm);
	ret = replace_file(path, &o, b.p, b.n, cause);
out:
	free(b.p);
	original_free(&o);
	return ret;
}

/* Why file cannot be a cdrom's medium in a definition (allocated), or NULL: the loader's rules
 * for [cdrom] file (absolute, no ','), and no control character (the file is line based). */
static char *
medium_problem(const char *id, const char *file)
{
	if (file[0] != '/')
		return cfg_xprintf("[cdrom %s] file: '%s' is not an absolute path", id, file);
	if (strchr(file, ',') != NULL)
		return cfg_xprintf("[cdrom %s] file: '%s' must not contain ',' (it ends up in QEMU "
		                   "option strings)",
		                   id, file);
	if (cfg_has_control(file))
		return cfg_xprintf("[cdrom %s] file: contains a control character", id);
	return NULL;
}

/* The line of key in section [kind id] as the loader's lexer sees it (1-based), or 0. */
static int
key_line(const struct original *o, const char *kind, const char *id, const char *key)
{
	struct cfg_errors errs;
	struct ini_doc doc = {0};
	struct cfg_diag d;
	int line = 0;

	cfg_errors_init(&errs);
	cfg_diag_init(&d, o->real);
	ini_lex(o->text, o->len, &doc, &d);
	cfg_diag_flush(&d, &errs);
	cfg_errors_free(&errs);
	for (size_t i = 0; i < doc.n && line == 0; i++) {
		const struct ini_section *s = &doc.secs[i];

		if (s->ignored || s->id == NULL || strcmp(s->kind, kind) != 0 ||
		    strcmp(s->id, id) != 0)
			continue;
		for (size_t k = 0; k < s->n; k++)
			if (strcmp(s->entries[k].key, key) == 0)
				line = s->entries[k].line;
	}
	ini_doc_free(&doc);
	return line;
}

int
cfg_write_cdrom_medium(const char *path, const char *id, const char *file, char **cause)
{
	static const char *const cdrom_kind[] = {"cdrom", NULL};
	const struct cfg_cdrom *cd, *got;
	struct original o;
	struct line *lines = NULL;
	struct vm_config *vm;
	struct buf b = {0};
	size_t n, at, skip = 0;
	const char *eol;
	char *why;
	int fl, ret = -1;

	if (id == NULL || !cfg_valid_device_id(id)) {
		*cause = cfg_xprintf("%s: '%s' is not a valid device id", path, id ? id : "");
		return -1;
	}
	if (file != NULL && (why = medium_problem(id, file)) != NULL)
		return refuse(path, why, cause);
	if (original_read(path, &o, cause) < 0)
		return -1;
	if ((cd = cfg_vm_cdrom(o.vm, id)) == NULL) {
		*cause = cfg_xprintf("%s: [cdrom %s]: no such section", path, id);
		goto out;
	}
	if (same_opt(cd->file, file)) { /* nothing to change: the file stays as it is */
		ret = 0;
		goto out;
	}
	lines = split_lines(o.text, o.len, cdrom_kind, id, &n);
	fl = key_line(&o, "cdrom", id, "file");
	if (cd->line < 1 || (size_t)cd->line > n || !lines[cd->line - 1].match ||
	    (fl != 0 && (fl <= cd->line || (size_t)fl > n))) {
		*cause = cfg_xprintf("%s: cannot find the section of cdrom '%s'", path, id);
		goto out;
	}
	if (fl != 0) {
		/* The file line goes, or another takes its place. */
		const struct line *f = &lines[fl - 1];

		at = f->start;
		skip = (size_t)fl < n ? lines[fl].start - at : o.len - at;
		eol = f->len > 0 && o.text[at + f->len - 1] == '\r' ? "\r\n" : "\n";
		if (at + f->len == o.len)
			eol = ""; /* the last line, and no newline after it */
	} else {
		/* Right below the header, with the header's line ending. */
		const struct line *h = &lines[cd->line - 1];

		at = h->start + h->len;
		eol = h->len > 0 && o.text[at - 1] == '\r' ? "\r\n" : "\n";
		if (at < o.len)
			at++; /* after its '\n' */
	}
	buf_add(&b, o.text, at);
	if (file != NULL) {
		if (fl == 0 && at == o.len && (at == 0 || o.text[at - 1] != '\n'))
			buf_add(&b, eol, strlen(eol)); /* the header ended the file */
		buf_printf(&b, "file = %s%s", file, eol);
	}
	buf_add(&b, o.text + at + skip, o.len - at - skip);
	vm = load_new(path, &b, cause);
	if (vm == NULL)
		goto out;
	got = cfg_vm_cdrom(vm, id);
	if (got == NULL || !same_opt(got->file, file)) {
		*cause =
		    cfg_xprintf("%s: [cdrom %s] file cannot be written as given (check the file "
		                "name for leading or trailing spaces and ' ;')",
		                path, id);
		cfg_vm_free(vm);
		goto out;
	}
	cfg_vm_free(vm);
	ret = replace_file(path, &o, b.p, b.n, cause);
out:
	free(lines);
	free(b.p);
	original_free(&o);
	return ret;
}

static void
render_cdrom(struct buf *b, const struct cfg_cdrom *cdrom)
{
	buf_printf(b, "[cdrom %s]\n", cdrom->id);
	if (cdrom->file != NULL)
		buf_printf(b, "file = %s\n", cdrom->file);
	if (cdrom->boot)
		buf_printf(b, "boot = yes\n");
}

char *
cfg_vm_format(const struct vm_config *vm, const char *header)
{
	struct vm_config defaults = {0};
	struct buf b = {0};
	size_t n;
	const struct key_spec *specs = cfg_vm_keys(&n);
	char size[32];

	for (const char *h = header; h != NULL && *h != '\0';) {
		size_t len = strcspn(h, "\n");

		buf_printf(&b, "#%s%.*s\n", len > 0 ? " " : "", (int)len, h);
		h += len + (h[len] == '\n');
	}
	cfg_vm_defaults(&defaults);
	if (vm->machine == CFG_MACHINE_PC)
		defaults.hotplug_slots = 0; /* pc has no spare root ports */
	cfg_size_format(vm->memory, size);
	buf_printf(&b, "[vm]\nname = %s\nmemory = %s\n", vm->name != NULL ? vm->name : "", size);
	for (size_t i = 0; i < n; i++) {
		char *v, *d;

		if (strcmp(specs[i].name, "name") == 0 || strcmp(specs[i].name, "memory") == 0)
			continue;
		v = cfg_key_text(&specs[i], vm);
		d = cfg_key_text(&specs[i], &defaults);
		if (v != NULL && !same_opt(v, d))
			buf_printf(&b, "%s = %s\n", specs[i].name, v);
		free(v);
		free(d);
	}
	for (size_t i = 0; i < vm->ndisks; i++) {
		buf_add(&b, "\n", 1);
		render_disk(&b, &vm->disks[i]);
	}
	for (size_t i = 0; i < vm->nnets; i++) {
		buf_add(&b, "\n", 1);
		render_net_mac(&b, &vm->nets[i], vm->nets[i].mac_given);
	}
	for (size_t i = 0; i < vm->ncdroms; i++) {
		buf_add(&b, "\n", 1);
		render_cdrom(&b, &vm->cdroms[i]);
	}
	return b.p;
}

/* Every error of errs ("PATH:LINE: ..."), one per line, in *cause. */
static void
errs_cause_all(struct cfg_errors *errs, char **cause)
{
	struct buf b = {0};

	for (size_t i = 0; i < errs->n; i++)
		buf_printf(&b, "%s%s", i > 0 ? "\n" : "", errs->msgs[i]);
	*cause = b.p != NULL ? b.p : cfg_xstrdup("unknown error");
	cfg_errors_free(errs);
}

int
cfg_write_create(const char *path, const char *text, char **cause)
{
	char *dircopy = cfg_xstrdup(path), *basecopy = cfg_xstrdup(path), *tmp = NULL;
	const char *dir = dirname(dircopy), *base = basename(basecopy);
	size_t len = strlen(text);
	struct cfg_errors errs;
	struct vm_config *vm;
	struct stat st;
	int fd, saved, ret = -1;

	cfg_errors_init(&errs);
	/* The same loader as a reload: what is written is a definition qvmd accepts. */
	vm = cfg_vm_load_text(path, text, len, &errs);
	if (vm == NULL) {
		errs_cause_all(&errs, cause);
		goto out;
	}
	cfg_vm_free(vm);
	if (lstat(path, &st) == 0) {
		*cause = cfg_xprintf("%s: already exists", path);
		goto out;
	}
	if (errno != ENOENT) {
		*cause = cfg_xprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	tmp = cfg_xprintf("%s/.%s.tmpXXXXXX", dir, base);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		*cause = cfg_xprintf("%s: cannot create a temporary file in %s: %s", path, dir,
		                     strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0644) < 0 || write_all(fd, text, len) < 0 || fsync(fd) < 0) {
		saved = errno;
		close(fd);
		*cause = cfg_xprintf("%s: cannot write %s: %s", path, tmp, strerror(saved));
		goto unlink;
	}
	if (close(fd) < 0) {
		*cause = cfg_xprintf("%s: cannot write %s: %s", path, tmp, strerror(errno));
		goto unlink;
	}
	/* link(2), unlike rename(2), never replaces: a file created meanwhile stays as it is. */
	if (link(tmp, path) < 0) {
		*cause = errno == EEXIST ? cfg_xprintf("%s: already exists", path)
		                         : cfg_xprintf("%s: %s", path, strerror(errno));
		goto unlink;
	}
	unlink(tmp);
	ret = sync_dir(path, dir, cause);
	goto out;
unlink:
	saved = errno;
	unlink(tmp);
	errno = saved;
out:
	free(tmp);
	free(dircopy);
	free(basecopy);
	return ret;
}
