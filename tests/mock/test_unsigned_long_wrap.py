"""Sums the kernel keeps in an unsigned long wrap at 2^64 instead of overflowing.

Expectations are what 7.3.4's code gives for these inputs: io_pagetable.c adds each
unmapped area's length to an unsigned long, so two 2^63 areas report 0 bytes; the
syzkaller IOVA conversion of selftest.c adds an offset to an area's IOVA the same way.
"""

from __future__ import annotations

from errno import ENOENT

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, RW, Fd, errno_of, new

HALF = 1 << 63


def _two_halves(be: MockBackend, fd: Fd) -> int:
    """An IOAS whose two 2^63-byte areas cover the whole IOVA space (nothing is pinned
    without a domain, so the user VA only has to not wrap)."""
    ioas = fd.ioas()
    buf = be.alloc(PAGE_SIZE)
    assert fd.map(ioas, buf, HALF, iova=0) == 0
    assert fd.map(ioas, buf, HALF, iova=HALF) == HALF
    return ioas


def test_ioas_unmap_all_of_two_halves_reports_zero(be: MockBackend, fd: Fd) -> None:
    ioas = _two_halves(be, fd)
    cmd = new("iommu_ioas_unmap", ioas_id=ioas, iova=0, length=U64_MAX)
    assert fd.ioctl(u.IOMMU_IOAS_UNMAP, cmd) == 0
    assert cmd.length == 0
    # Both areas are gone all the same.
    assert errno_of(fd.unmap, ioas, 0, PAGE_SIZE) == ENOENT
    fd.close()


def test_vfio_unmap_dma_all_of_two_halves_reports_zero(be: MockBackend, fd: Fd) -> None:
    ioas = _two_halves(be, fd)
    fd.ioctl(u.IOMMU_VFIO_IOAS, new("iommu_vfio_ioas", op=u.IOMMU_VFIO_IOAS_SET,
                                    ioas_id=ioas))
    unmap = u.ffi.new("struct vfio_iommu_type1_dma_unmap *",
                      {"argsz": u.ffi.sizeof("struct vfio_iommu_type1_dma_unmap"),
                       "flags": u.VFIO_DMA_UNMAP_FLAG_ALL, "size": 0})
    assert fd.ioctl(u.VFIO_IOMMU_UNMAP_DMA, unmap) == 0
    assert unmap.size == 0
    assert errno_of(fd.unmap, ioas, HALF, PAGE_SIZE) == ENOENT
    fd.close()


def test_syz_copy_from_an_area_near_the_top_wraps_and_leaks_nothing(be: MockBackend,
                                                                    fd: Fd) -> None:
    src, dst = fd.ioas(), fd.ioas()
    buf = be.alloc(PAGE_SIZE)
    top = U64_MAX + 1 - 2 * PAGE_SIZE
    fd.map(src, buf, PAGE_SIZE, iova=top)
    # {nth_area 0, offset 0xfffff000}: top + offset wraps to 0xffffd000, unmapped.
    cmd = new("iommu_ioas_copy", dst_ioas_id=dst, src_ioas_id=src,
              src_iova=0xFFFFF000 << 32, length=PAGE_SIZE,
              flags=RW | u.MOCK_FLAGS_ACCESS_SYZ)
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_COPY, cmd) == ENOENT
    # The conversion is the kernel's own copy of the command: none of it comes back.
    assert cmd.src_iova == 0xFFFFF000 << 32
    # No users reference was left on the source IOAS.
    fd.unmap(src, top, PAGE_SIZE)
    fd.destroy(src)
    fd.destroy(dst)
    fd.close()
