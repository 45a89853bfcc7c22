"""IOMMU_TEST_CMD: the selftest mock driver's test multiplexer (drivers/iommu/iommufd/selftest.c).

The Python side of iommufd_utils.h's ``_test_cmd_*`` helpers. Every call takes the open
:class:`~harness.helpers.core.Iommufd` first (the kernel's ``self->fd``) and raises
``OSError`` with the kernel's errno on failure, so ``with expect_errno(ENOENT):`` wraps any
of them::

    dom = mock_domain(fd, ioas_id)            # stdev_id, hwpt_id, idev_id
    check_map(fd, dom.hwpt_id, iova, length, buf)
    check_refs(fd, buf, length, 1)

Hot loops (iommufd_mock_domain.all_aligns runs hundreds of checks) use :class:`MockChecks`,
which keeps its command structs and only rewrites the fields that change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple

import uapi_headers as u
from backends.contract import MAP_SHARED, PROT_READ, PROT_WRITE, Backend
from harness.helpers.core import Iommufd, new_cmd

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "MockChecks",
    "MockDomain",
    "add_reserved",
    "check_map",
    "check_refs",
    "dev_check_cache",
    "dev_check_cache_all",
    "hwpt_alloc",
    "hwpt_check_iotlb",
    "hwpt_check_iotlb_all",
    "memfd_mmap",
    "mock_domain",
    "mock_domain_flags",
    "mock_domain_replace",
    "run_test_cmd",
    "set_default_memory_limit",
    "set_temp_memory_limit",
    "test_cmd",
]

#: selftest.c's iommufd_test_memory_limit at load: the bytes of scratch memory pages.c may
#: use per pinning batch (restored by test_ioctl_set_default_memory_limit()).
DEFAULT_MEMORY_LIMIT = 65536


class MockDomain(NamedTuple):
    """What IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS) returns: the selftest device object (destroying
    it unplugs the mock device), the HWPT it got attached to, and its iommufd device ID."""

    stdev_id: int
    hwpt_id: int
    idev_id: int


def test_cmd(op: int, id: int = 0, **union: dict[str, Any]) -> Any:
    """A ``struct iommu_test_cmd`` for ``op`` on object ``id``, size preset.

    Each keyword names the union member of the op with its fields, as a C designated
    initializer would: ``test_cmd(OP_MD_CHECK_MAP, hwpt, check_map={"iova": i, ...})``.
    """
    return new_cmd("iommu_test_cmd", {"op": op, "id": id, **union})


# Helpers named test_* would otherwise be collected by pytest in modules importing them.
test_cmd.__test__ = False  # type: ignore[attr-defined]


def run_test_cmd(fd: Iommufd, op: int, id: int = 0, **union: dict[str, Any]) -> Any:
    """Build a :func:`test_cmd`, issue IOMMU_TEST_CMD and return the command (its out fields)."""
    cmd = test_cmd(op, id, **union)
    fd.ioctl(u.IOMMU_TEST_CMD, cmd)
    return cmd


def dmabuf_get(fd: Iommufd, length: int) -> int:
    """DMABUF_GET: a test dma-buf of ``length`` bytes; returns what the ioctl returns,
    which is the new dma-buf fd (test_cmd_get_dmabuf)."""
    cmd = test_cmd(u.IOMMU_TEST_OP_DMABUF_GET,
                   dmabuf_get={"length": length, "open_flags": os.O_CLOEXEC})
    return fd.ioctl(u.IOMMU_TEST_CMD, cmd)


def dmabuf_revoke(fd: Iommufd, dmabuf_fd: int, revoked: bool) -> None:
    """DMABUF_REVOKE: revoke (or restore) the test dma-buf ``dmabuf_fd``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_DMABUF_REVOKE,
                 dmabuf_revoke={"dmabuf_fd": dmabuf_fd, "revoked": int(revoked)})


# -- mock devices and their domains ------------------------------------------

def mock_domain(fd: Iommufd, pt_id: int) -> MockDomain:
    """Plug a mock device and attach it to IOAS or HWPT ``pt_id`` (test_cmd_mock_domain).

    Attaching to an IOAS makes the kernel auto-allocate a paging HWPT for the device.
    """
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_MOCK_DOMAIN, pt_id)
    out = cmd.mock_domain
    return MockDomain(out.out_stdev_id, out.out_hwpt_id, out.out_idev_id)


def mock_domain_flags(fd: Iommufd, pt_id: int, dev_flags: int) -> MockDomain:
    """:func:`mock_domain` with ``MOCK_FLAGS_DEVICE_*`` (no dirty tracking, PASID capable)."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt_id,
                       mock_domain_flags={"dev_flags": dev_flags})
    out = cmd.mock_domain_flags
    return MockDomain(out.out_stdev_id, out.out_hwpt_id, out.out_idev_id)


def mock_domain_replace(fd: Iommufd, stdev_id: int, pt_id: int) -> int:
    """Replace the mock device's attachment with IOAS/HWPT ``pt_id``; returns the HWPT now
    attached (the kernel writes it back into ``mock_domain_replace.pt_id``)."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev_id,
                       mock_domain_replace={"pt_id": pt_id})
    return int(cmd.mock_domain_replace.pt_id)


def hwpt_alloc(fd: Iommufd, dev_id: int, pt_id: int, flags: int = 0, *,
               data_type: int = u.IOMMU_HWPT_DATA_NONE, data_uptr: int = 0,
               data_len: int = 0, fault_id: int = 0) -> int:
    """IOMMU_HWPT_ALLOC for device ``dev_id`` on IOAS/HWPT ``pt_id``; returns the HWPT ID.

    With the defaults it is a paging HWPT (test_cmd_hwpt_alloc); ``data_*`` carry the
    driver data of a nested HWPT, ``fault_id`` a fault queue for IOPF-capable HWPTs.
    """
    cmd = new_cmd("iommu_hwpt_alloc", {
        "flags": flags, "dev_id": dev_id, "pt_id": pt_id, "data_type": data_type,
        "data_len": data_len, "data_uptr": data_uptr, "fault_id": fault_id,
    })
    fd.ioctl(u.IOMMU_HWPT_ALLOC, cmd)
    return int(cmd.out_hwpt_id)


# -- checks the mock driver does on its own state ------------------------------

def check_map(fd: Iommufd, hwpt_id: int, iova: int, length: int, uptr: int) -> None:
    """MD_CHECK_MAP: the mock domain maps [iova, iova+length) to the pages now at ``uptr``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_MD_CHECK_MAP, hwpt_id,
                 check_map={"iova": iova, "length": length, "uptr": uptr})


def check_refs(fd: Iommufd, uptr: int, length: int, refs: int) -> None:
    """MD_CHECK_REFS: every page of [uptr, uptr+length) is pinned exactly ``refs`` times."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_MD_CHECK_REFS,
                 check_refs={"length": length, "uptr": uptr, "refs": refs})


def hwpt_check_iotlb(fd: Iommufd, hwpt_id: int, iotlb_id: int, expected: int) -> None:
    """MD_CHECK_IOTLB: entry ``iotlb_id`` of a nested mock HWPT holds ``expected``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_MD_CHECK_IOTLB, hwpt_id,
                 check_iotlb={"id": iotlb_id, "iotlb": expected})


def hwpt_check_iotlb_all(fd: Iommufd, hwpt_id: int, expected: int) -> None:
    """:func:`hwpt_check_iotlb` on every entry of the mock IOTLB."""
    for iotlb_id in range(u.MOCK_NESTED_DOMAIN_IOTLB_NUM):
        hwpt_check_iotlb(fd, hwpt_id, iotlb_id, expected)


def dev_check_cache(fd: Iommufd, idev_id: int, cache_id: int, expected: int) -> None:
    """DEV_CHECK_CACHE: entry ``cache_id`` of the mock device's cache holds ``expected``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_DEV_CHECK_CACHE, idev_id,
                 check_dev_cache={"id": cache_id, "cache": expected})


def dev_check_cache_all(fd: Iommufd, idev_id: int, expected: int) -> None:
    """:func:`dev_check_cache` on every entry of the mock device's cache."""
    for cache_id in range(u.MOCK_DEV_CACHE_NUM):
        dev_check_cache(fd, idev_id, cache_id, expected)


class MockChecks:
    """check_mock_iova / check_refs of iommufd.c with reused command structs.

    ``iova()`` asks every non-zero HWPT ID in the list ``hwpt_ids`` (the kernel's macro
    checks ``hwpt_ids[0]`` and, when set, ``hwpt_ids[1]``); tests may assign its slots
    between calls. Each call is one ioctl per HWPT and no allocation, which matters on
    QEMU where every ioctl is a round trip.
    """

    def __init__(self, fd: Iommufd, hwpt_ids: Iterable[int] = ()) -> None:
        self.hwpt_ids = list(hwpt_ids)
        self._ioctl = fd.ioctl
        self._map = test_cmd(u.IOMMU_TEST_OP_MD_CHECK_MAP)
        self._refs = test_cmd(u.IOMMU_TEST_OP_MD_CHECK_REFS)

    def iova(self, uptr: int, iova: int, length: int) -> None:
        """MD_CHECK_MAP on each HWPT: [iova, iova+length) maps the pages at ``uptr``."""
        cmd = self._map
        cmd.check_map.iova = iova
        cmd.check_map.length = length
        cmd.check_map.uptr = uptr
        for hwpt_id in self.hwpt_ids:
            if not hwpt_id:
                continue
            cmd.id = hwpt_id
            self._ioctl(u.IOMMU_TEST_CMD, cmd)

    def refs(self, uptr: int, length: int, refs: int) -> None:
        """MD_CHECK_REFS: every page of [uptr, uptr+length) is pinned ``refs`` times."""
        cmd = self._refs
        cmd.check_refs.uptr = uptr
        cmd.check_refs.length = length
        cmd.check_refs.refs = refs
        self._ioctl(u.IOMMU_TEST_CMD, cmd)


# -- IOAS-wide knobs of the test driver -----------------------------------------

def add_reserved(fd: Iommufd, ioas_id: int, start: int, length: int) -> None:
    """ADD_RESERVED: reserve [start, start+length) in the IOAS as a driver would (MSI windows)."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_ADD_RESERVED, ioas_id,
                 add_reserved={"start": start, "length": length})


def set_temp_memory_limit(fd: Iommufd, limit: int) -> None:
    """SET_TEMP_MEMORY_LIMIT: shrink pages.c's batch scratch memory to ``limit`` bytes, so
    small maps already take the multi-batch paths; below sizeof(long)+sizeof(u32) is EINVAL."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, memory_limit={"limit": limit})


def set_default_memory_limit(fd: Iommufd) -> None:
    """Restore :data:`DEFAULT_MEMORY_LIMIT` (test_ioctl_set_default_memory_limit)."""
    set_temp_memory_limit(fd, DEFAULT_MEMORY_LIMIT)


# -- user memory the way the kernel's tests make it ---------------------------------

def memfd_mmap(backend: Backend, length: int, prot: int = PROT_READ | PROT_WRITE,
               flags: int = MAP_SHARED) -> tuple[int, int]:
    """iommufd_utils.h's memfd_mmap(): a memfd of ``length`` bytes mapped at once.

    Returns ``(mfd, addr)``; the caller unmaps and closes both. The memfd is closed again
    if the mmap fails, as in the kernel helper.
    """
    mfd = backend.memfd(length, "buffer")
    try:
        return mfd, backend.mmap(mfd, length, 0, prot, flags)
    except BaseException:
        backend.close(mfd)
        raise
