// SPDX-License-Identifier: GPL-2.0-only
/*
 * The kernel backend's batches of ioctls, run in one call from Python.
 *
 * A scenario's tight loop (thousands of ACCESS_RW or MAP/UNMAP calls) spends most of its
 * time in the interpreter between syscalls; under TCG that is many times the syscall.
 * Python fills arrays describing the calls, this runs them in order, and Python reads
 * back each return value and errno. A link copies bytes an earlier call left in its
 * argument into a later call's argument just before that call runs (the batch's Link).
 * Nothing else happens between the calls.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

/* Before call `call` runs: copy `size` bytes at `src_offset` of call `src`'s argument to
 * `dst_offset` of its own. Links come in call order. */
struct ih_link {
	long call;
	long dst_offset;
	long src;
	long src_offset;
	long size;
};

static int link_fits(const struct ih_link *link, const unsigned long *lengths)
{
	unsigned long dst_len, src_len;

	if (link->src < 0 || link->src >= link->call || link->size < 0 ||
	    link->dst_offset < 4 || link->src_offset < 0)
		return 0;
	dst_len = lengths[link->call];
	src_len = lengths[link->src];
	return dst_len && src_len &&
	       (unsigned long)link->dst_offset + link->size <= dst_len &&
	       (unsigned long)link->src_offset + link->size <= src_len;
}

/*
 * Runs calls [0, count) in order and returns how many ran. It stops after a failed call
 * with stop_on_error, and before a call that the Python path must take instead:
 *  - its argument declares a larger size (its leading u32) than its buffer's length
 *    (Python sends it through a guard page); a length of 0 means the argument is no
 *    buffer (NULL, an integer, an untyped pointer) and goes as it is;
 *  - one of its links reaches outside either buffer, rewrites the size field, or comes
 *    from a call that is not an earlier buffer of this run.
 */
long ih_run_ioctls(long count, const long *fds, const unsigned long *requests,
		   void *const *args, const unsigned long *lengths, long nlinks,
		   const struct ih_link *links, long *rets, long *errs, int stop_on_error)
{
	long i, next = 0, j;

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
		for (j = next; j < nlinks && links[j].call == i; j++)
			if (!link_fits(&links[j], lengths))
				return i;
		for (; next < j; next++)
			memcpy((char *)args[i] + links[next].dst_offset,
			       (const char *)args[links[next].src] + links[next].src_offset,
			       links[next].size);
		rets[i] = ioctl((int)fds[i], requests[i], args[i]);
		errs[i] = rets[i] < 0 ? errno : 0;
		if (rets[i] < 0 && stop_on_error)
			return i + 1;
	}
	return count;
}
