/*
 * Scratch space for cmocka tests that work on real files: formatted strings, a private directory
 * under /tmp removed afterwards, and programs run without a shell. Every failure fails the test.
 */
#ifndef QVMD_TEST_SCRATCH_H
#define QVMD_TEST_SCRATCH_H

/* A formatted string (caller frees). */
char *scratch_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A new empty directory /tmp/qvmd-TAG-XXXXXX (caller frees the name; scratch_dir_remove). */
char *scratch_dir_new(const char *tag);

/* Removes dir and everything in it, and frees the name. */
void scratch_dir_remove(char *dir);

/* Runs argv[0] (a path) with argv, stdout into the file out (NULL: /dev/null); returns its exit
 * status (128 when it did not exit). */
int scratch_run(char *const argv[], const char *out);

#endif
