/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Shared by the guest programs (inxpect-vm-test.c, inxpect-vm-bench.c). */
#ifndef INXPECT_VM_UTIL_H
#define INXPECT_VM_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file at `path` in a malloc'd buffer; -errno, or -EINVAL when
 * it is empty. */
static int read_file(const char *path, unsigned char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		return -errno;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	*buf = malloc(n > 0 ? n : 1);
	*len = n > 0 && *buf ? fread(*buf, 1, n, f) : 0;
	fclose(f);
	return *len ? 0 : -EINVAL;
}

#endif
