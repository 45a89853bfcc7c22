// SPDX-License-Identifier: GPL-2.0-only
/*
 * The kernel backend's batches of ioctls, run in one call from Python.
 *
 * A scenario's tight loop (thousands of ACCESS_RW or MAP/UNMAP calls) spends most of its
 * time in the interpreter between syscalls; under TCG that is many times the syscall.
 * Python fills arrays describing the calls, this runs them in order, and Python reads
 * back each return value and errno. A link copies bytes an earlier call left in its
 * argument into a later call's argument just before that call runs (the batch's Link,
 * resolved to addresses by Python). Nothing else happens between the calls.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

struct ih_link {
	void *dst;
	const void *src;
	unsigned long size;
};

/*
 * Runs calls [0, count) until one fails (with stop_on_error) or until one whose argument
 * declares a larger size (its leading u32) than its buffer's length: that call is not
 * run, because the Python path sends it through a guard page. A length of 0 means the
 * argument is no buffer (NULL, an integer, an untyped pointer) and goes as it is.
 * Returns the number of calls run; links[link_start[i] .. link_start[i + 1]) are
 * applied just before call i.
 */
long ih_run_ioctls(long count, const long *fds, const unsigned long *requests,
		   void *const *args, const unsigned long *lengths, const long *link_start,
		   const struct ih_link *links, long *rets, long *errs, int stop_on_error)
{
	long i, j;

	for (i = 0; i < count; i++) {
		unsigned long length = lengths[i];

		if (length) {
			unsigned int size;

			if (length < sizeof(size))
				return i;
			memcpy(&size, args[i], sizeof(size));
			if (size > length)
				return i;
		}
		for (j = link_start[i]; j < link_start[i + 1]; j++)
			memcpy(links[j].dst, links[j].src, links[j].size);
		rets[i] = ioctl((int)fds[i], requests[i], args[i]);
		errs[i] = rets[i] < 0 ? errno : 0;
		if (rets[i] < 0 && stop_on_error)
			return i + 1;
	}
	return count;
}
