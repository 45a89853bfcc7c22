// SPDX-License-Identifier: GPL-2.0-only
/*
 * The C side of bench_qemu.py's per-ioctl figure: one page mapped into an IOAS at a
 * fixed IOVA and unmapped again, LOOPS times; prints the mean microseconds per ioctl.
 * Built statically by the benchmark against the guest kernel's own uAPI headers.
 */
#include <fcntl.h>
#include <linux/iommufd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	long loops = argc > 1 ? atol(argv[1]) : 5000;
	long page = sysconf(_SC_PAGESIZE);
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_ioas_map map = { .size = sizeof(map) };
	struct iommu_ioas_unmap unmap = { .size = sizeof(unmap) };
	double start, took;
	char *buf;
	int fd;

	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0 || ioctl(fd, IOMMU_IOAS_ALLOC, &alloc)) {
		perror("iommufd");
		return 1;
	}
	buf = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	buf[0] = 1; /* fault the page in once, outside the loop */
	map.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
		    IOMMU_IOAS_MAP_WRITEABLE;
	map.ioas_id = unmap.ioas_id = alloc.out_ioas_id;
	map.user_va = (uintptr_t)buf;
	map.length = unmap.length = page;
	map.iova = unmap.iova = 1UL << 24;

	start = now_us();
	for (long i = 0; i < loops; i++) {
		if (ioctl(fd, IOMMU_IOAS_MAP, &map) || ioctl(fd, IOMMU_IOAS_UNMAP, &unmap)) {
			perror("map/unmap");
			return 1;
		}
	}
	took = now_us() - start;
	printf("%.3f\n", took / (2.0 * loops));
	return 0;
}
