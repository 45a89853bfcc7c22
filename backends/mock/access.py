"""In-kernel IOAS users: ``struct iommufd_access`` (device.c, the access half).

An access is what an emulated device (an mdev, or the selftest's access fd) uses to
read an IOAS without DMA: pin pages (needs an ``unmap`` callback, and PAGE_SIZE IOVA
alignment) or copy bytes. Before an area it pinned can be unmapped, IOAS_UNMAP calls
every access's ``unmap`` op (``iommufd_access_notify_unmap``), which must unpin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from errno import EBUSY, EINVAL, ENOENT, EOVERFLOW, EPERM
from typing import TYPE_CHECKING, Any, cast

from backends.mock.errors import kerr
from backends.mock.interval_tree import U64_MAX
from backends.mock.iommu import IOMMU_READ, IOMMU_WRITE
from backends.mock.mm import PAGE_SIZE, PhysPage
from backends.mock.objects import IommufdObject, ObjType
from backends.mock.pages import IOMMUFD_ACCESS_RW_WRITE

if TYPE_CHECKING:
    from backends.mock.io_pagetable import IoPagetable, IoptArea
    from backends.mock.ioas import IommufdIoas
    from backends.mock.private import IommufdCtx


@dataclass(frozen=True)
class AccessOps:
    """``struct iommufd_access_ops``."""

    needs_pin_pages: bool
    unmap: Callable[[Any, int, int], None] | None


class IommufdAccess(IommufdObject):
    """``struct iommufd_access``."""

    obj_type = ObjType.ACCESS

    def __init__(self, ictx: IommufdCtx, ops: AccessOps, data: Any,
                 internal: bool = False) -> None:
        super().__init__()
        self.ictx = ictx
        self.ops = ops
        self.data = data
        self.internal = internal
        """An access of the core itself (a HW queue's pin): no driver ops, no context
        reference, and its pins lock the area against unmap."""
        self.ioas: IommufdIoas | None = None
        self.ioas_unpin: IommufdIoas | None = None
        self.iova_alignment = PAGE_SIZE if ops.needs_pin_pages else 1
        self.iopt_access_list_id = 0

    def destroy(self) -> None:
        """iommufd_access_destroy_object(): detach, then drop the ctx reference."""
        if self.ioas is not None:
            try:
                iommufd_access_change_ioas(self, None)
            except OSError:
                self.ictx.kernel.warn_on(True, "iommufd_access_destroy_object")
        if not self.internal:
            self.ictx.ctx_put()


def iommufd_access_create(ictx: IommufdCtx, ops: AccessOps, data: Any) -> IommufdAccess:
    """iommufd_access_create(): the creating driver holds a users reference."""
    access = ictx.object_alloc(IommufdAccess(ictx, ops, data))
    access.users += 1
    ictx.ctx_get()
    ictx.object_finalize(access)
    return access


_INTERNAL_OPS = AccessOps(needs_pin_pages=True, unmap=None)


def iommufd_access_create_internal(ictx: IommufdCtx) -> IommufdAccess:
    """iommufd_access_create_internal(): a published access object the core pins
    through; it takes no context reference."""
    access = ictx.object_alloc(IommufdAccess(ictx, _INTERNAL_OPS, None, internal=True))
    access.users += 1
    access.iova_alignment = PAGE_SIZE
    ictx.object_finalize(access)
    return access


def iommufd_access_attach_internal(access: IommufdAccess, ioas: IommufdIoas) -> None:
    """iommufd_access_attach_internal()."""
    if access.ictx.kernel.warn_on(access.ioas is not None, "access already attached"):
        raise kerr(EINVAL)
    iommufd_access_change_ioas(access, ioas)


def iommufd_access_destroy(access: IommufdAccess) -> None:
    """iommufd_access_destroy()."""
    access.ictx.destroy_user(access)


def iommufd_access_change_ioas(access: IommufdAccess, new_ioas: IommufdIoas | None) -> None:
    """iommufd_access_change_ioas(): move the access (None detaches); the old IOAS's
    pins are released through the unmap op first."""
    # Saved first: adding the access to the new IOAS gives it a new list ID.
    iopt_access_list_id = access.iopt_access_list_id
    cur_ioas = access.ioas
    if cur_ioas is not access.ioas_unpin:
        raise kerr(EBUSY)
    if cur_ioas is new_ioas:
        return
    access.ioas = None
    if new_ioas is not None:
        try:
            new_ioas.iopt.add_access(access)
        except OSError:
            access.ioas = cur_ioas
            raise
        new_ioas.users += 1
    if cur_ioas is not None:
        if access.ops.unmap is not None:
            access.ops.unmap(access.data, 0, U64_MAX)
        cur_ioas.iopt.remove_access(access, iopt_access_list_id)
        cur_ioas.users -= 1
    access.ioas = new_ioas
    access.ioas_unpin = new_ioas


def _change_ioas_id(access: IommufdAccess, ioas_id: int) -> None:
    ioas = cast("IommufdIoas", access.ictx.get_object(ioas_id, ObjType.IOAS))
    try:
        iommufd_access_change_ioas(access, ioas)
    finally:
        access.ictx.put_object(ioas)


def iommufd_access_attach(access: IommufdAccess, ioas_id: int) -> None:
    """iommufd_access_attach()."""
    if access.ictx.kernel.warn_on(access.ioas is not None, "access already attached"):
        raise kerr(EINVAL)
    _change_ioas_id(access, ioas_id)


def iommufd_access_replace(access: IommufdAccess, ioas_id: int) -> None:
    """iommufd_access_replace(): ENOENT when not attached."""
    if access.ioas is None:
        raise kerr(ENOENT)
    _change_ioas_id(access, ioas_id)


def iommufd_access_detach(access: IommufdAccess) -> None:
    """iommufd_access_detach()."""
    if access.ictx.kernel.warn_on(access.ioas is None, "access not attached"):
        return
    iommufd_access_change_ioas(access, None)


def iommufd_access_notify_unmap(iopt: IoPagetable, iova: int, length: int) -> None:
    """iommufd_access_notify_unmap(): ask every access of ``iopt`` to unpin the range."""
    for index in sorted(iopt.access_list):
        access = iopt.access_list.get(index)
        if access is None or access.users == 0 or access.ops.unmap is None:
            continue
        access.users += 1
        try:
            access.ops.unmap(access.data, iova, length)
        finally:
            access.users -= 1


def _area_remove(area: IoptArea, start_index: int, last_index: int,
                 unlock_area: bool) -> None:
    assert area.pages is not None
    if unlock_area:
        area.num_locks -= 1
    area.num_accesses -= 1
    area.pages.remove_access(start_index, last_index)


def iommufd_access_unpin_pages(access: IommufdAccess, iova: int, length: int) -> None:
    """iommufd_access_unpin_pages(): undo exactly one iommufd_access_pin_pages()."""
    kernel = access.ictx.kernel
    if kernel.warn_on(not length or iova + length - 1 > U64_MAX, "unpin: bad range"):
        return
    last_iova = iova + length - 1
    ioas = access.ioas_unpin
    if kernel.warn_on(ioas is None, "unpin without an IOAS"):
        return
    assert ioas is not None
    walk, done = ioas.iopt.contig_areas(iova, last_iova)
    for area, cur in walk:
        _area_remove(area, area.iova_to_index(cur),
                     area.iova_to_index(min(last_iova, area.last)), access.internal)
    kernel.warn_on(not done, "iommufd_access_unpin_pages: not contiguous")


def _contig_is_aligned(area: IoptArea, cur: int, last_iova: int) -> bool:
    """iopt_area_contig_is_aligned()."""
    if area.start_byte(cur) % PAGE_SIZE:
        return False
    return not (last_iova > area.last
                and area.start_byte(area.last) % PAGE_SIZE != PAGE_SIZE - 1)


def _check_area_prot(area: IoptArea, flags: int) -> bool:
    if flags & IOMMUFD_ACCESS_RW_WRITE:
        return bool(area.iommu_prot & IOMMU_WRITE)
    return bool(area.iommu_prot & IOMMU_READ)


def _access_range(access: IommufdAccess, iova: int, length: int) -> tuple[IommufdIoas, int]:
    # The checks iommufd_access_pin_pages() and iommufd_access_rw() both open with:
    # the access's IOAS and the last IOVA of a non-empty, non-wrapping range.
    if not length:
        raise kerr(EINVAL)
    if iova + length - 1 > U64_MAX:
        raise kerr(EOVERFLOW)
    ioas = access.ioas
    if ioas is None:
        raise kerr(ENOENT)
    return ioas, iova + length - 1


def iommufd_access_pin_pages(access: IommufdAccess, iova: int, length: int,
                             flags: int) -> list[PhysPage]:
    """iommufd_access_pin_pages(): the pages under ``[iova, iova+length)``, pinned."""
    kernel = access.ictx.kernel
    internal = access.internal
    if kernel.warn_on(access.iova_alignment != PAGE_SIZE
                      or (not internal and access.ops.unmap is None),
                      "pin_pages without pin ops"):
        raise kerr(EINVAL)
    ioas, last_iova = _access_range(access, iova, length)
    out: list[PhysPage] = []
    added: list[tuple[IoptArea, int, int]] = []
    try:
        walk, done = ioas.iopt.contig_areas(iova, last_iova)
        for area, cur in walk:
            last = min(last_iova, area.last)
            index = area.iova_to_index(cur)
            last_index = area.iova_to_index(last)
            if area.prevent_access or not _contig_is_aligned(area, cur, last_iova):
                raise kerr(EINVAL)
            if not _check_area_prot(area, flags):
                raise kerr(EPERM)
            assert area.pages is not None
            out.extend(area.pages.add_access(index, last_index, flags))
            area.num_accesses += 1
            if internal:
                area.num_locks += 1
            added.append((area, index, last_index))
        if not done:
            raise kerr(ENOENT)
    except OSError:
        for area, index, last_index in added:
            _area_remove(area, index, last_index, internal)
        raise
    return out


def iommufd_access_rw(access: IommufdAccess, iova: int, buf: bytearray, length: int,
                      flags: int) -> None:
    """iommufd_access_rw(): copy ``length`` bytes between ``buf`` and the IOAS."""
    ioas, last_iova = _access_range(access, iova, length)
    walk, done = ioas.iopt.contig_areas(iova, last_iova)
    if not walk:
        raise kerr(ENOENT)
    pos = 0
    for area, cur in walk:
        last = min(last_iova, area.last)
        nbytes = last - cur + 1
        if area.prevent_access:
            raise kerr(EINVAL)
        if not _check_area_prot(area, flags):
            raise kerr(EPERM)
        assert area.pages is not None
        area.pages.rw_access(area.start_byte(cur), buf, pos, nbytes, flags)
        pos += nbytes
    if not done:
        raise kerr(ENOENT)
