"""Dirty tracking on a paging HWPT: the two ioctls (hw_pagetable.c) and the IOAS walks
behind them (io_pagetable.c).

- IOMMU_HWPT_SET_DIRTY_TRACKING: flags other than ENABLE are EOPNOTSUPP; a domain
  allocated without IOMMU_HWPT_ALLOC_DIRTY_TRACKING has no dirty ops: EOPNOTSUPP.
  Enabling first reads-and-clears every area, so tracking starts from a clean slate.
- IOMMU_HWPT_GET_DIRTY_BITMAP: flags other than NO_CLEAR, or ``__reserved``, are
  EOPNOTSUPP; then iommufd_check_iova_range(); a domain without dirty ops is EOPNOTSUPP.
  The walk covers the areas mapped back to back from ``iova``; its own errors (a hole,
  a bitmap page that will not pin) are not reported: 7.3 drops the walk's return value,
  so the ioctl succeeds with whatever bits it could set.
"""

from __future__ import annotations

from errno import EINVAL, EOPNOTSUPP, EOVERFLOW
from typing import TYPE_CHECKING, cast

import uapi_headers as u
from backends.mock import domain_dirty
from backends.mock.errors import kerr
from backends.mock.interval_tree import U64_MAX
from backends.mock.iommu import PagingDomain
from backends.mock.iova_bitmap import IovaBitmap
from backends.mock.objects import ObjType

if TYPE_CHECKING:
    from backends.mock.hw_pagetable import HwptPaging
    from backends.mock.io_pagetable import IoPagetable
    from backends.mock.private import Ucmd

def _paging_domain(hwpt: HwptPaging) -> PagingDomain:
    domain = hwpt.domain
    assert isinstance(domain, PagingDomain)
    return domain


def iopt_clear_dirty_data(iopt: IoPagetable, domain: PagingDomain) -> None:
    """iopt_clear_dirty_data(): read-and-clear every area that has pages, into no bitmap."""
    for area in iopt.areas:
        if area.pages is None:
            continue
        domain_dirty.read_and_clear_dirty(domain, area.start, area.length, 0, None)


def iopt_set_dirty_tracking(iopt: IoPagetable, domain: PagingDomain, enable: bool) -> None:
    """iopt_set_dirty_tracking(): EOPNOTSUPP without dirty ops; enabling clears first."""
    if not domain.dirty_ops:
        raise kerr(EOPNOTSUPP)
    if enable:
        iopt_clear_dirty_data(iopt, domain)
    domain_dirty.mock_domain_set_dirty_tracking(domain, enable)


def iommufd_check_iova_range(iopt: IoPagetable, iova: int, length: int,
                             page_size: int) -> None:
    """iommufd_check_iova_range(): a non-empty range that does not wrap, aligned to the
    IOAS's IOVA alignment and to the bitmap's ``page_size`` at both ends."""
    pgsize = iopt.iova_alignment
    if not length:
        raise kerr(EINVAL)
    last_iova = iova + length - 1
    if last_iova > U64_MAX:
        raise kerr(EOVERFLOW)
    if iova & (pgsize - 1) or (last_iova + 1) & (pgsize - 1):
        raise kerr(EINVAL)
    if not page_size:
        raise kerr(EINVAL)
    if iova & (page_size - 1) or (last_iova + 1) & (page_size - 1):
        raise kerr(EINVAL)


def _read_and_clear_range(iopt: IoPagetable, domain: PagingDomain, bitmap: IovaBitmap,
                          iova: int, length: int, flags: int) -> None:
    """__iommu_read_and_clear_dirty(): each contiguous area's share of the range."""
    last_iova = iova + length - 1
    areas, _done = iopt.contig_areas(iova, last_iova)
    for area, cur_iova in areas:
        last = min(last_iova, area.last)
        domain_dirty.read_and_clear_dirty(domain, cur_iova, last - cur_iova + 1, flags,
                                          bitmap)
    # A hole is EINVAL here, which iommu_read_and_clear_dirty() then drops.


def iopt_read_and_clear_dirty_data(iopt: IoPagetable, domain: PagingDomain, flags: int,
                                   iova: int, length: int, page_size: int,
                                   data: int) -> None:
    """iopt_read_and_clear_dirty_data() with iommu_read_and_clear_dirty()."""
    iommufd_check_iova_range(iopt, iova, length, page_size)
    if not domain.dirty_ops:
        raise kerr(EOPNOTSUPP)
    bitmap = IovaBitmap(iopt.kernel, iova, length, page_size, data)
    try:
        _read_and_clear_range(iopt, domain, bitmap, iova, length, flags)
    finally:
        bitmap.free()


def _get_hwpt_paging(ucmd: Ucmd, hwpt_id: int) -> HwptPaging:
    return cast("HwptPaging", ucmd.ictx.get_object(hwpt_id, ObjType.HWPT_PAGING))


def iommufd_hwpt_set_dirty_tracking(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_SET_DIRTY_TRACKING."""
    cmd = ucmd.cmd
    if cmd.flags & ~u.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
        raise kerr(EOPNOTSUPP)
    hwpt = _get_hwpt_paging(ucmd, int(cmd.hwpt_id))
    try:
        enable = bool(cmd.flags & u.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
        iopt_set_dirty_tracking(hwpt.ioas.iopt, _paging_domain(hwpt), enable)
    finally:
        ucmd.ictx.put_object(hwpt)
    return 0


def iommufd_hwpt_get_dirty_bitmap(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_GET_DIRTY_BITMAP."""
    cmd = ucmd.cmd
    if cmd.flags & ~u.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    hwpt = _get_hwpt_paging(ucmd, int(cmd.hwpt_id))
    try:
        iopt_read_and_clear_dirty_data(hwpt.ioas.iopt, _paging_domain(hwpt), int(cmd.flags),
                                       int(cmd.iova), int(cmd.length), int(cmd.page_size),
                                       int(cmd.data))
    finally:
        ucmd.ictx.put_object(hwpt)
    return 0
