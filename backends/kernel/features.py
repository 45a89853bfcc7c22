"""Honest detection of what this kernel offers the iommufd tests.

Every probe asks the running kernel (an ioctl answer, a sysfs/procfs file), never
the kernel's config, so a feature is reported only where a test can really use it.
Plain sysfs reads, no libudev: the same code runs in the guest initramfs.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import struct

from backends.contract import Features
from backends.kernel import faultinject, libc

# Written out rather than imported from uapi_headers so the guest agent does not
# load the whole uAPI cdef at start; tests check them against uapi_headers.
# iommufd and VFIO numbers are _IO(';', nr): no size, no direction.
IOMMU_TEST_CMD = 0x3BA0          # _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)
VFIO_CHECK_EXTENSION = 0x3B65    # _IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_TYPE1v2_IOMMU = 3
CAP_SYS_RESOURCE = 24
# Larger than struct iommu_test_cmd: copy_struct_from_user accepts a zero tail,
# so the ioctl reaches iommufd_test()'s op switch, where op 0 is unknown.
_TEST_CMD_PROBE_SIZE = 512

SYSFS_IOMMU = "/sys/class/iommu"
# intel-iommu registers "dmar<N>", arm-smmu-v3 "smmu3.<base address>".
_VTD_NAME = re.compile(r"dmar\d+$")
_SMMUV3_NAME = re.compile(r"smmu3\.")


def probe_selftest(fd: int) -> bool:
    """IOMMU_TEST_CMD with op 0 on an iommufd fd.

    With CONFIG_IOMMUFD_TEST the command exists and the unknown op is
    EOPNOTSUPP; without it the nr is outside iommufd's table and falls through
    to the VFIO compat ioctls, which answer ENOTTY.
    """
    buf = libc.ffi.new("char[]", _TEST_CMD_PROBE_SIZE)
    libc.ffi.memmove(buf, struct.pack("<I", _TEST_CMD_PROBE_SIZE), 4)
    try:
        libc.ioctl(fd, IOMMU_TEST_CMD, buf)
    except OSError as exc:
        return exc.errno != errno.ENOTTY
    return True


def probe_vfio_compat(fd: int) -> bool:
    """The iommufd fd answers VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) with 1."""
    try:
        return libc.ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0
    except OSError:
        return False


def iommu_names(root: str = SYSFS_IOMMU) -> list[str]:
    """The kernel's registered IOMMU instances (/sys/class/iommu/*)."""
    try:
        return sorted(os.listdir(root))
    except OSError:
        return []


def hugetlb_pool() -> int:
    """How many huge pages of the default size are reserved (HugePages_Total), the
    pool MAP_HUGETLB maps from."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Total:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def hugepage_size(default: int = 2 * 1024 * 1024) -> int:
    """THP's PMD size (hpage_pmd_size)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return default


def has_capability(cap: int) -> bool:
    """The capability is in this process's effective set (/proc/self/status CapEff)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return False


def memfd_works() -> bool:
    """memfd_create(2) succeeds (CONFIG_MEMFD_CREATE)."""
    try:
        os.close(libc.memfd_create("iommufd-probe"))
        return True
    except OSError:
        return False


def host_features() -> set[str]:
    """What this kernel offers without an iommufd fd."""
    found = {Features.FORK, Features.MM_EXIT}  # a real process can fork and exit
    if faultinject.available():
        found.add(Features.FAIL_NTH)
    if glob.glob("/dev/vfio/devices/*"):
        found.add(Features.VFIO_CDEV)
    names = iommu_names()
    if any(_VTD_NAME.match(n) for n in names):
        found.add(Features.INTEL_VTD)
    if any(_SMMUV3_NAME.match(n) for n in names):
        found.add(Features.SMMUV3)
    if hugetlb_pool():
        found.add(Features.HUGEPAGES)
    if memfd_works():
        found.add(Features.MEMFD)
    if has_capability(CAP_SYS_RESOURCE):
        found.add(Features.CAP_SYS_RESOURCE)
    return found


def detect(iommufd_fd: int) -> frozenset[str]:
    """Every feature this kernel offers; ``iommufd_fd`` is an open /dev/iommu."""
    found = host_features()
    if probe_selftest(iommufd_fd):
        found.add(Features.SELFTEST)
        # IOMMUFD_TEST selects DMA_SHARED_BUFFER: its dma-buf exporter comes with it.
        found.add(Features.DMABUF)
        # The 7.3 selftest driver has IOPF delivery to fault queues and a vIOMMU type.
        found.add(Features.FAULT_QUEUE)
        found.add(Features.VIOMMU)
    if probe_vfio_compat(iommufd_fd):
        found.add(Features.VFIO_COMPAT)
    return frozenset(found)
