/* The helpers every reproducer shares (iommufd-harness, harness/reproducer). */
#define UNUSED __attribute__((unused))
static int step_no, failures;

static UNUSED void report(const char *call, int ok, long ret, int err, long want_ret, int want_err)
{
	step_no++;
	if (ok) {
		printf("ok %d %s\n", step_no, call);
		return;
	}
	failures++;
	printf("not ok %d %s: got ", step_no, call);
	if (ret < 0)
		printf("errno %d (%s)", err, strerror(err));
	else
		printf("ok, returned %ld", ret);
	if (want_err)
		printf(", expected errno %d (%s)\n", want_err, strerror(want_err));
	else
		printf(", expected ok, returning %ld\n", want_ret);
}

/* ret < 0 with errno: the call failed. check_ret: the return value matters too. */
static UNUSED void check(const char *call, long ret, int want_err, int check_ret, long want_ret)
{
	int err = ret < 0 ? errno : 0;
	int ok = want_err ? (ret < 0 && err == want_err)
			  : (ret >= 0 && (!check_ret || ret == want_ret));

	report(call, ok, ret, err, want_ret, want_err);
}

static UNUSED void check_field(const char *name, unsigned long long got, unsigned long long want)
{
	if (got != want) {
		failures++;
		printf("# %s is 0x%llx, expected 0x%llx\n", name, got, want);
	}
}

static UNUSED void check_bytes(const char *what, const void *got, const void *want, size_t len)
{
	if (memcmp(got, want, len)) {
		failures++;
		printf("# %s: %zu bytes differ from the expected ones\n", what, len);
	}
}

/* len bytes at an odd multiple of align: the same address alignment as in the run. */
static UNUSED char *alloc_mem(size_t len, size_t align, int shared, int huge)
{
	char *p = mmap(NULL, len + 2 * align, PROT_READ | PROT_WRITE,
		       (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	p = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (!(((uintptr_t)p / align) & 1))
		p += align;
	if (huge)
		madvise(p, len, MADV_HUGEPAGE);
	return p;
}

static UNUSED void fill(char *dst, const unsigned char *pattern, size_t period, size_t len)
{
	for (size_t i = 0; i < len; i++)
		dst[i] = pattern[i % period];
}

static UNUSED void put(unsigned char *arg, size_t offset, size_t size, unsigned long long value)
{
	memcpy(arg + offset, &value, size);	/* little endian, as the guests are */
}

static UNUSED unsigned long long get(const unsigned char *arg, size_t offset, size_t size)
{
	unsigned long long value = 0;

	memcpy(&value, arg + offset, size);	/* little endian, as the guests are */
	return value;
}

static UNUSED long fail_nth(const char *value)
{
	int fd = open("/proc/thread-self/fail-nth", O_RDWR);
	long ret;

	if (fd < 0)
		return -1;
	ret = write(fd, value, strlen(value));
	close(fd);
	return ret;
}

/*
 * The ioctl with its argument copied to the very end of a page followed by an
 * inaccessible one (and copied back after): a kernel read past the caller's
 * buffer faults (EFAULT) instead of reading whatever lies after it.
 */
static UNUSED long guarded_ioctl(int fd, unsigned long request, void *arg, size_t len)
{
	static char *area;
	static size_t pages;
	size_t page = sysconf(_SC_PAGESIZE), need = (len + page - 1) / page;
	char *at;
	long ret;
	int err;

	if (!need)
		need = 1;
	if (need > pages) {
		if (area)
			munmap(area, (pages + 1) * page);
		area = mmap(NULL, (need + 1) * page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (area == MAP_FAILED) {
			area = NULL;
			pages = 0;
			return -1;
		}
		mprotect(area + need * page, page, PROT_NONE);
		pages = need;
	}
	at = area + pages * page - len;
	memcpy(at, arg, len);
	ret = ioctl(fd, request, at);
	err = errno;
	memcpy(arg, at, len);
	errno = err;
	return ret;
}
