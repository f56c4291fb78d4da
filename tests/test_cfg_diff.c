/* Tests of config/cfg_diff: what `apply` and `diff` see between a running VM and its file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_priv.h" /* cfg_vm_load_text */

#define PATH "/etc/qvmd/vms/web1.ini"
#define BASE                                                                                       \
	"[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n[disk root]\n"                  \
	"file = /var/lib/qvmd/r.qcow2\n\n[net lan0]\ntype = user\nrestrict = yes\n"

static struct vm_config *
load_text(const char *text)
{
	struct cfg_errors errs;
	struct vm_config *vm;

	cfg_errors_init(&errs);
	vm = cfg_vm_load_text(PATH, text, strlen(text), &errs);
	if (vm == NULL)
		fail_msg("%s", errs.n ? errs.msgs[0] : "no error given");
	cfg_errors_free(&errs);
	return vm;
}

/* The diff from text a (running) to text b (file). */
static void
diff_texts(const char *a, const char *b, struct vm_config **va, struct vm_config **vb,
           struct cfg_diff *diff)
{
	*va = load_text(a);
	*vb = load_text(b);
	cfg_diff_vm(*va, *vb, diff);
}

static void
diff_done(struct vm_config *va, struct vm_config *vb, struct cfg_diff *diff)
{
	cfg_diff_free(diff);
	cfg_vm_free(va);
	cfg_vm_free(vb);
}

static const struct cfg_change *
find_change(const struct cfg_diff *diff, const char *what)
{
	for (size_t i = 0; i < diff->n; i++)
		if (strcmp(diff->v[i].what, what) == 0)
			return &diff->v[i];
	fail_msg("no change of %s", what);
	return NULL;
}

static void
test_cfg_diff_comment_is_no_change(void **state)
{
	/* Comments, key order, 1G spelled 1024M, a disk's size (creation only), autostart. */
	const char *same =
	    "; managed by ansible\n[vm]\nvcpus = 2\nname = web1\nmemory = 1024M\naccel = tcg\n"
	    "autostart = yes\n# root disk\n[disk root]\nfile = /var/lib/qvmd/r.qcow2\nsize = 4G\n"
	    "apply = replace\n[net lan0]\nrestrict = on\ntype = user\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;

	(void)state;
	diff_texts(BASE, same, &va, &vb, &diff);
	assert_int_equal(diff.n, 0);
	diff_done(va, vb, &diff);
}

/* `apply` says how to change a device, not what it is: no difference to apply, but an edit of the
 * definition (a reload takes it, so that the next apply sees it). */
static void
test_cfg_diff_apply_key_is_an_edit_not_a_change(void **state)
{
	const char *replace = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n"
	                      "[disk root]\nfile = /var/lib/qvmd/r.qcow2\napply = replace\n\n"
	                      "[net lan0]\ntype = user\nrestrict = yes\napply = pending\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;

	(void)state;
	diff_texts(BASE, replace, &va, &vb, &diff);
	assert_int_equal(diff.n, 0);
	assert_false(cfg_vm_equal(va, vb));
	assert_int_equal(cfg_vm_disk(vb, "root")->apply, CFG_APPLY_REPLACE);
	assert_int_equal(cfg_vm_net(vb, "lan0")->apply, CFG_APPLY_PENDING);
	diff_done(va, vb, &diff);
}

static void
test_cfg_diff_added_devices_are_live(void **state)
{
	const char *more = BASE "\n[disk data1]\nfile = /var/lib/qvmd/d1.qcow2\n"
	                        "\n[disk data2]\nfile = /var/lib/qvmd/d2.img\nformat = raw\n"
	                        "readonly = yes\n\n[net lan1]\ntype = user\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;
	const struct cfg_change *c;

	(void)state;
	diff_texts(BASE, more, &va, &vb, &diff);
	assert_int_equal(diff.n, 3);
	c = find_change(&diff, "disk data1");
	assert_int_equal(c->action, CFG_CHANGE_ADD);
	assert_true(c->live);
	assert_null(c->old_text);
	assert_string_equal(c->new_text, "file=/var/lib/qvmd/d1.qcow2");
	assert_ptr_equal(c->new_disk, cfg_vm_disk(vb, "data1"));
	c = find_change(&diff, "disk data2");
	assert_string_equal(c->new_text, "file=/var/lib/qvmd/d2.img format=raw readonly=yes");
	c = find_change(&diff, "net lan1");
	assert_int_equal(c->action, CFG_CHANGE_ADD);
	assert_ptr_equal(c->new_net, cfg_vm_net(vb, "lan1"));
	assert_non_null(strstr(c->new_text, "type=user mac=52:54:00:"));
	assert_string_equal(cfg_change_action_name(c->action), "add");
	diff_done(va, vb, &diff);
}

static void
test_cfg_diff_removed_devices_come_first(void **state)
{
	const char *without = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n"
	                      "[net lan1]\ntype = user\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;

	(void)state;
	diff_texts(BASE, without, &va, &vb, &diff);
	assert_int_equal(diff.n, 3);
	assert_int_equal(diff.v[0].action, CFG_CHANGE_REMOVE);
	assert_string_equal(diff.v[0].what, "disk root");
	assert_string_equal(diff.v[0].old_text, "file=/var/lib/qvmd/r.qcow2");
	assert_null(diff.v[0].new_text);
	assert_ptr_equal(diff.v[0].old_disk, cfg_vm_disk(va, "root"));
	assert_int_equal(diff.v[1].action, CFG_CHANGE_REMOVE);
	assert_string_equal(diff.v[1].what, "net lan0");
	assert_int_equal(diff.v[2].action, CFG_CHANGE_ADD);
	assert_string_equal(diff.v[2].what, "net lan1");
	diff_done(va, vb, &diff);
}

static void
test_cfg_diff_vm_keys_wait_for_restart(void **state)
{
	const char *bigger = "[vm]\nname = web1\nmemory = 2G\nvcpus = 4\naccel = kvm\n"
	                     "cpu = host\nkernel = /boot/vmlinuz\nfirmware = uefi\nmachine = pc\n"
	                     "shutdown_timeout = 2m\n\n[disk root]\nfile = /var/lib/qvmd/r.qcow2\n"
	                     "\n[net lan0]\ntype = user\nrestrict = yes\n";
	static const char *const keys[][3] = {
	    {"memory", "1G", "2G"},       {"vcpus", "2", "4"},
	    {"machine", "q35", "pc"},     {"accel", "tcg", "kvm"},
	    {"firmware", "bios", "uefi"}, {"shutdown_timeout", "1m", "2m"},
	    {"hotplug_slots", "4", "0"},
	};
	struct vm_config *va, *vb;
	struct cfg_diff diff;
	const struct cfg_change *c;

	(void)state;
	diff_texts(BASE, bigger, &va, &vb, &diff);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		c = find_change(&diff, keys[i][0]);
		assert_int_equal(c->action, CFG_CHANGE_CHANGE);
		assert_false(c->live);
		assert_string_equal(c->old_text, keys[i][1]);
		assert_string_equal(c->new_text, keys[i][2]);
		assert_string_equal(c->reason, "restart needed");
	}
	c = find_change(&diff, "cpu");
	assert_null(c->old_text);
	assert_string_equal(c->new_text, "host");
	c = find_change(&diff, "kernel");
	assert_string_equal(c->new_text, "/boot/vmlinuz");
	assert_int_equal(diff.n, 9);
	/* [vm] keys in the schema's order. */
	assert_string_equal(diff.v[0].what, "memory");
	assert_string_equal(diff.v[1].what, "vcpus");
	diff_done(va, vb, &diff);
}

static void
test_cfg_diff_changed_device_replace_or_pending(void **state)
{
	const char *cache = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n"
	                    "[disk root]\nfile = /var/lib/qvmd/r.qcow2\ncache = writeback\n\n"
	                    "[net lan0]\ntype = user\n";
	const char *replace = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n"
	                      "[disk root]\nfile = /var/lib/qvmd/r.qcow2\ncache = writeback\n"
	                      "apply = replace\n\n[net lan0]\ntype = user\napply = replace\n";
	const char *boot = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n"
	                   "[disk root]\nfile = /var/lib/qvmd/r.qcow2\nboot = yes\n"
	                   "apply = replace\n\n[net lan0]\ntype = user\nrestrict = yes\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;
	const struct cfg_change *c;

	(void)state;
	diff_texts(BASE, cache, &va, &vb, &diff);
	assert_int_equal(diff.n, 2);
	c = find_change(&diff, "disk root");
	assert_int_equal(c->action, CFG_CHANGE_CHANGE);
	assert_false(c->live);
	assert_string_equal(c->old_text, "cache=none");
	assert_string_equal(c->new_text, "cache=writeback");
	assert_non_null(strstr(c->reason, "apply = replace"));
	c = find_change(&diff, "net lan0");
	assert_string_equal(c->old_text, "restrict=yes");
	assert_string_equal(c->new_text, "restrict=no");
	diff_done(va, vb, &diff);

	diff_texts(BASE, replace, &va, &vb, &diff);
	assert_int_equal(diff.n, 2);
	c = find_change(&diff, "disk root");
	assert_int_equal(c->action, CFG_CHANGE_REPLACE);
	assert_true(c->live);
	assert_null(c->reason);
	assert_ptr_equal(c->old_disk, cfg_vm_disk(va, "root"));
	assert_ptr_equal(c->new_disk, cfg_vm_disk(vb, "root"));
	assert_int_equal(find_change(&diff, "net lan0")->action, CFG_CHANGE_REPLACE);
	diff_done(va, vb, &diff);

	/* The boot order is the firmware's, read at start: replacing cannot apply it. */
	diff_texts(BASE, boot, &va, &vb, &diff);
	assert_int_equal(diff.n, 1);
	assert_int_equal(diff.v[0].action, CFG_CHANGE_CHANGE);
	assert_string_equal(diff.v[0].reason, "restart needed (boot order)");
	diff_done(va, vb, &diff);
}

static void
test_cfg_diff_disk_renamed_is_pending(void **state)
{
	const char *renamed = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n\n"
	                      "[disk system]\nfile = /var/lib/qvmd/r.qcow2\n\n"
	                      "[net lan0]\ntype = user\nrestrict = yes\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;

	(void)state;
	diff_texts(BASE, renamed, &va, &vb, &diff);
	assert_int_equal(diff.n, 1);
	assert_string_equal(diff.v[0].what, "disk system");
	assert_int_equal(diff.v[0].action, CFG_CHANGE_CHANGE);
	assert_false(diff.v[0].live);
	assert_string_equal(diff.v[0].old_text, "id=root");
	assert_string_equal(diff.v[0].new_text, "id=system");
	assert_string_equal(diff.v[0].reason, "restart needed (a disk's device id)");
	diff_done(va, vb, &diff);
}

/* What --persist writes (cfg_write_add_*) and the same devices written by hand are one state; so
 * is a running NIC whose derived MAC the attach recorded as given. */
static void
test_cfg_diff_persisted_equals_hand_edit(void **state)
{
	char dir[] = "/tmp/qvmd-test-cfg-diff.XXXXXX", path[128];
	const char *hand = BASE "\n[disk data1]\nfile = /var/lib/qvmd/d1.qcow2\ncache = none\n"
	                        "\n[net lan1]\n";
	struct cfg_disk disk;
	struct cfg_net net;
	struct cfg_errors errs;
	struct vm_config *persisted, *edited;
	struct cfg_diff diff;
	char *cause = NULL;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/web1.ini", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(BASE, f);
	fclose(f);
	cfg_disk_defaults(&disk);
	disk.id = "data1";
	disk.file = "/var/lib/qvmd/d1.qcow2";
	assert_int_equal(cfg_write_add_disk(path, &disk, &cause), 0);
	cfg_net_defaults(&net);
	net.id = "lan1";
	cfg_mac_derive("web1", "lan1", net.mac);
	net.mac_given = true; /* as vm_attach_net persists it */
	assert_int_equal(cfg_write_add_net(path, &net, &cause), 0);
	cfg_errors_init(&errs);
	persisted = cfg_vm_load(path, &errs);
	assert_non_null(persisted);
	cfg_errors_free(&errs);
	edited = load_text(hand);
	cfg_diff_vm(persisted, edited, &diff);
	assert_int_equal(diff.n, 0);
	cfg_diff_vm(edited, persisted, &diff);
	assert_int_equal(diff.n, 0);
	cfg_vm_free(persisted);
	cfg_vm_free(edited);
	unlink(path);
	rmdir(dir);
}

/* Devices on the SATA/IDE controller and the display: pending until a restart, with why. */
static void
test_cfg_diff_install_media_pending(void **state)
{
	const char *running = BASE "\n[disk sd0]\nfile = /var/lib/qvmd/s.qcow2\nbus = sata\n"
	                           "\n[cdrom cd0]\nfile = /srv/a.iso\n\n[cdrom cd1]\n";
	const char *file = "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\ndisplay = vnc\n"
	                   "[disk root]\nfile = /var/lib/qvmd/r.qcow2\nbus = sata\n"
	                   "apply = replace\n"
	                   "[disk new]\nfile = /var/lib/qvmd/n.qcow2\nbus = sata\n"
	                   "[net lan0]\ntype = user\nrestrict = yes\nmodel = e1000\n"
	                   "[cdrom cd0]\nfile = /srv/b.iso\n[cdrom cd2]\nboot = yes\n";
	struct vm_config *va, *vb;
	struct cfg_diff diff;
	const struct cfg_change *c;
	const char *sata = "restart needed (sata/ide devices cannot be hot-plugged)";

	(void)state;
	diff_texts(running, file, &va, &vb, &diff);
	assert_int_equal(diff.n, 8);
	c = find_change(&diff, "display");
	assert_false(c->live);
	assert_string_equal(c->old_text, "none");
	assert_string_equal(c->new_text, "vnc");
	assert_string_equal(c->reason, "restart needed");
	/* apply = replace does not make a move to sata live. */
	c = find_change(&diff, "disk root");
	assert_int_equal(c->action, CFG_CHANGE_CHANGE);
	assert_false(c->live);
	assert_string_equal(c->new_text, "bus=sata");
	assert_string_equal(c->reason, sata);
	c = find_change(&diff, "disk sd0");
	assert_int_equal(c->action, CFG_CHANGE_REMOVE);
	assert_false(c->live);
	assert_string_equal(c->reason, sata);
	c = find_change(&diff, "disk new");
	assert_int_equal(c->action, CFG_CHANGE_ADD);
	assert_false(c->live);
	assert_string_equal(c->reason, sata);
	c = find_change(&diff, "net lan0");
	assert_false(c->live);
	assert_string_equal(c->old_text, "model=virtio");
	assert_string_equal(c->new_text, "model=e1000");
	assert_string_equal(c->reason, "restart needed (or apply = replace in its section)");
	c = find_change(&diff, "cdrom cd0");
	assert_int_equal(c->action, CFG_CHANGE_CHANGE);
	assert_false(c->live);
	assert_string_equal(c->old_text, "file=/srv/a.iso");
	assert_string_equal(c->new_text, "file=/srv/b.iso");
	assert_string_equal(c->reason, sata);
	c = find_change(&diff, "cdrom cd1");
	assert_int_equal(c->action, CFG_CHANGE_REMOVE);
	assert_false(c->live);
	assert_string_equal(c->old_text, "file=(none)");
	c = find_change(&diff, "cdrom cd2");
	assert_int_equal(c->action, CFG_CHANGE_ADD);
	assert_false(c->live);
	assert_string_equal(c->new_text, "file=(none) boot=yes");
	assert_string_equal(c->reason, sata);
	diff_done(va, vb, &diff);

	/* A virtio NIC's model with apply = replace is replaced live. */
	diff_texts(BASE,
	           "[vm]\nname = web1\nmemory = 1G\nvcpus = 2\naccel = tcg\n[disk root]\n"
	           "file = /var/lib/qvmd/r.qcow2\n[net lan0]\ntype = user\nrestrict = yes\n"
	           "model = e1000e\napply = replace\n",
	           &va, &vb, &diff);
	assert_int_equal(diff.n, 1);
	assert_int_equal(diff.v[0].action, CFG_CHANGE_REPLACE);
	assert_true(diff.v[0].live);
	diff_done(va, vb, &diff);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cfg_diff_comment_is_no_change),
	    cmocka_unit_test(test_cfg_diff_apply_key_is_an_edit_not_a_change),
	    cmocka_unit_test(test_cfg_diff_added_devices_are_live),
	    cmocka_unit_test(test_cfg_diff_removed_devices_come_first),
	    cmocka_unit_test(test_cfg_diff_vm_keys_wait_for_restart),
	    cmocka_unit_test(test_cfg_diff_changed_device_replace_or_pending),
	    cmocka_unit_test(test_cfg_diff_disk_renamed_is_pending),
	    cmocka_unit_test(test_cfg_diff_persisted_equals_hand_edit),
	    cmocka_unit_test(test_cfg_diff_install_media_pending),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
