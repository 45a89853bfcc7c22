"""Dirty tracking: the Python side of iommufd_utils.h's dirty helpers.

::

    hwpt_id = hwpt_alloc_iommupt(fd, idev_id, ioas_id, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                                 u.MOCK_IOMMUPT_HUGE)
    set_dirty_tracking(fd, hwpt_id, True)
    check_mock_dirty_bitmaps(fd, hwpt_id, length, iova, page_size, pte_size, bitmap,
                             nbits, flags)

A bitmap lives in the backend's memory: bit ``n`` is bit ``n % 8`` of byte ``n // 8``
(the kernel's ``unsigned long`` bitmaps on little-endian machines).
"""

from __future__ import annotations

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd
from harness.helpers.selftest import hwpt_alloc, run_test_cmd

__all__ = [
    "check_mock_dirty_bitmaps",
    "get_dirty_bitmap",
    "get_hw_capabilities",
    "hwpt_alloc_iommupt",
    "mock_domain_set_dirty",
    "pasid_attach",
    "pasid_detach",
    "set_dirty_tracking",
]


def set_dirty_tracking(fd: Iommufd, hwpt_id: int, enabled: bool) -> None:
    """IOMMU_HWPT_SET_DIRTY_TRACKING on or off (test_cmd_set_dirty_tracking)."""
    flags = u.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if enabled else 0
    fd.ioctl(u.IOMMU_HWPT_SET_DIRTY_TRACKING,
             new_cmd("iommu_hwpt_set_dirty_tracking", {"flags": flags, "hwpt_id": hwpt_id}))


def get_dirty_bitmap(fd: Iommufd, hwpt_id: int, length: int, iova: int, page_size: int,
                     bitmap: int, flags: int = 0) -> None:
    """IOMMU_HWPT_GET_DIRTY_BITMAP of ``[iova, iova+length)`` at ``page_size`` bits into
    the backend bitmap at ``bitmap`` (test_cmd_get_dirty_bitmap)."""
    fd.ioctl(u.IOMMU_HWPT_GET_DIRTY_BITMAP, new_cmd("iommu_hwpt_get_dirty_bitmap", {
        "hwpt_id": hwpt_id, "flags": flags, "iova": iova, "length": length,
        "page_size": page_size, "data": bitmap,
    }))


def mock_domain_set_dirty(fd: Iommufd, hwpt_id: int, length: int, iova: int,
                          page_size: int, bitmap: int) -> int:
    """IOMMU_TEST_OP_DIRTY: mark dirty, in the mock domain, each IOVA whose bit is set in
    the backend bitmap; returns ``out_nr_dirty`` (test_cmd_mock_domain_set_dirty)."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_DIRTY, hwpt_id, dirty={
        "iova": iova, "length": length, "page_size": page_size, "uptr": bitmap})
    return int(cmd.dirty.out_nr_dirty)


def hwpt_alloc_iommupt(fd: Iommufd, dev_id: int, pt_id: int, flags: int,
                       iommupt_type: int) -> int:
    """IOMMU_HWPT_ALLOC with ``struct iommu_hwpt_selftest`` choosing the mock page table
    (MOCK_IOMMUPT_DEFAULT or MOCK_IOMMUPT_HUGE); returns the HWPT ID
    (test_cmd_hwpt_alloc_iommupt)."""
    user_cfg = u.ffi.new("struct iommu_hwpt_selftest *", {"pagetable_type": iommupt_type})
    data = bytes(u.ffi.buffer(user_cfg))
    backend = fd.backend
    uptr = backend.alloc(len(data))
    try:
        backend.poke(uptr, data)
        return hwpt_alloc(fd, dev_id, pt_id, flags, data_type=u.IOMMU_HWPT_DATA_SELFTEST,
                          data_uptr=uptr, data_len=len(data))
    finally:
        backend.munmap(uptr, len(data))


def get_hw_capabilities(fd: Iommufd, dev_id: int) -> int:
    """IOMMU_GET_HW_INFO (type DEFAULT, no data) for ``out_capabilities``
    (test_cmd_get_hw_capabilities)."""
    cmd = new_cmd("iommu_hw_info", {"dev_id": dev_id})
    fd.ioctl(u.IOMMU_GET_HW_INFO, cmd)
    return int(cmd.out_capabilities)


def pasid_attach(fd: Iommufd, stdev_id: int, pasid: int, pt_id: int) -> None:
    """IOMMU_TEST_OP_PASID_ATTACH of the mock device to ``pt_id`` on ``pasid``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_ATTACH, stdev_id,
                 pasid_attach={"pasid": pasid, "pt_id": pt_id})


def pasid_detach(fd: Iommufd, stdev_id: int, pasid: int) -> None:
    """IOMMU_TEST_OP_PASID_DETACH of the mock device's ``pasid``."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_DETACH, stdev_id, pasid_detach={"pasid": pasid})


def _repeat(pattern: int, period: int, count: int) -> int:
    """``pattern`` at bits 0, period, 2*period, ... (``count`` times): the geometric
    series, where a loop of big-int ORs is quadratic in the bitmap's size."""
    return pattern * (((1 << (period * count)) - 1) // ((1 << period) - 1))


def _expect_bits(data: bytes, nbits: int, expected: int, what: str) -> None:
    """Bits ``[0, nbits)`` of the bitmap ``data`` must be those of ``expected``; the
    first bit that differs is the one reported."""
    actual = int.from_bytes(data, "little") & ((1 << nbits) - 1)
    diff = actual ^ expected
    if diff:
        n = (diff & -diff).bit_length() - 1
        raise AssertionError(f"{what}: bit {n} is {actual >> n & 1}, expected "
                             f"{expected >> n & 1}")


def check_mock_dirty_bitmaps(fd: Iommufd, hwpt_id: int, length: int, iova: int,
                             page_size: int, pte_page_size: int, bitmap: int, nbits: int,
                             flags: int) -> None:
    """The kernel's test_mock_dirty_bitmaps(): dirty the first ``page_size`` granule of
    every other PTE-sized run, then GET_DIRTY_BITMAP twice with ``flags``.

    The first read must show each dirtied PTE whole (``pte_page_size / page_size`` bits)
    and nothing else; the second must be empty, or the same again with NO_CLEAR. Every
    bit of each run pair is compared, as the C helper does (the first that differs is
    reported).
    """
    npte = pte_page_size // page_size
    pteset = 2 * npte
    nr = nbits // pteset or 1
    bitmap_size = -(-nbits // 8)
    # The checks walk whole run pairs, which may reach past nbits.
    checked = -(-nbits // pteset) * pteset
    check_size = max(bitmap_size, -(-checked // 8))
    backend = fd.backend

    runs = -(-nbits // pteset)  # the run pairs starting below nbits
    # Bit i of every run pair starting at i < nbits.
    seed = _repeat(1, pteset, runs)
    backend.poke(bitmap, seed.to_bytes(bitmap_size, "little"))
    out_dirty = mock_domain_set_dirty(fd, hwpt_id, length, iova, page_size, bitmap)
    assert out_dirty == nr, f"IOMMU_TEST_OP_DIRTY marked {out_dirty}, expected {nr}"

    # Each run pair: its first npte bits dirty (bit i among them), the rest clean.
    dirty = _repeat((1 << npte) - 1, pteset, runs)

    backend.poke(bitmap, bytes(bitmap_size))
    get_dirty_bitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)
    _expect_bits(backend.peek(bitmap, check_size), checked, dirty, "first read")

    # It was read already: all clear, unless NO_CLEAR left the bits set.
    backend.poke(bitmap, bytes(bitmap_size))
    get_dirty_bitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)
    no_clear = bool(flags & u.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)
    _expect_bits(backend.peek(bitmap, check_size), checked, dirty if no_clear else 0,
                 "second read")
