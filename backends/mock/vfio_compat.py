"""VFIO type1 / type1v2 container emulation on the iommufd fd (vfio_compat.c).

The container ioctls have no IOAS ID: they act on the context's compat IOAS, set with
IOMMU_VFIO_IOAS (ENODEV while there is none). TYPE1 differs from TYPE1v2 only in that
it may unmap part of a mapping: selecting it disables large pages, and UNMAP_DMA first
cuts the areas at the range's ends.
"""

from __future__ import annotations

from errno import EFAULT, EINVAL, ENODEV, EOPNOTSUPP, EPERM
from typing import TYPE_CHECKING, Any

import uapi_headers as u
from backends.mock.errors import ENOIOCTLCMD, kerr
from backends.mock.iommu import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from backends.mock.mm import PAGE_MASK, PAGE_SIZE
from backends.mock.private import iommufd_get_ioas

if TYPE_CHECKING:
    from backends.mock.ioas import IommufdIoas
    from backends.mock.private import IommufdCtx, Ucmd

U32_MAX = (1 << 32) - 1
_MAP_MINSZ = u.offsetofend("struct vfio_iommu_type1_dma_map", "size")
_UNMAP_MINSZ = u.offsetofend("struct vfio_iommu_type1_dma_unmap", "size")
_INFO_MINSZ = u.offsetofend("struct vfio_iommu_type1_info", "iova_pgsizes")
_INFO_SIZE = int(u.ffi.sizeof("struct vfio_iommu_type1_info"))
_RANGE_SIZE = int(u.ffi.sizeof("struct vfio_iova_range"))
_IOVA_CAP_SIZE = int(u.ffi.sizeof("struct vfio_iommu_type1_info_cap_iova_range"))
_DMA_AVAIL_SIZE = int(u.ffi.sizeof("struct vfio_iommu_type1_info_dma_avail"))


def get_compat_ioas(ictx: IommufdCtx) -> IommufdIoas:
    """get_compat_ioas(): the compat IOAS with a users reference, else ENODEV."""
    ioas = ictx.vfio_ioas
    if ioas is None or ioas.users == 0:
        raise kerr(ENODEV)
    ioas.users += 1
    return ioas


def iommufd_vfio_ioas(ucmd: Ucmd) -> int:
    """IOMMU_VFIO_IOAS: GET (ENODEV without one), SET (ENOENT for a bad ID), CLEAR."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    if cmd.op == u.IOMMU_VFIO_IOAS_GET:
        ioas = get_compat_ioas(ictx)
        cmd.ioas_id = ioas.id
        ictx.put_object(ioas)
        ucmd.respond(u.ffi.sizeof(cmd[0]))
        return 0
    if cmd.op == u.IOMMU_VFIO_IOAS_SET:
        ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
        ictx.vfio_ioas = ioas
        ictx.put_object(ioas)
        return 0
    if cmd.op == u.IOMMU_VFIO_IOAS_CLEAR:
        ictx.vfio_ioas = None
        return 0
    raise kerr(EOPNOTSUPP)


def _struct_from_user(ictx: IommufdCtx, ctype: str, arg: int, minsz: int) -> Any:
    cmd = u.ffi.new(f"{ctype} *")
    u.ffi.memmove(cmd, ictx.kernel.uaccess.copy_from_user(arg, minsz), minsz)
    return cmd


def _map_dma(ictx: IommufdCtx, arg: int) -> int:
    """VFIO_IOMMU_MAP_DMA: argsz/flags EINVAL, then a fixed-IOVA map."""
    m = _struct_from_user(ictx, "struct vfio_iommu_type1_dma_map", arg, _MAP_MINSZ)
    if m.argsz < _MAP_MINSZ or m.flags & ~(u.VFIO_DMA_MAP_FLAG_READ
                                           | u.VFIO_DMA_MAP_FLAG_WRITE):
        raise kerr(EINVAL)
    prot = IOMMU_CACHE
    if m.flags & u.VFIO_DMA_MAP_FLAG_READ:
        prot |= IOMMU_READ
    if m.flags & u.VFIO_DMA_MAP_FLAG_WRITE:
        prot |= IOMMU_WRITE
    ioas = get_compat_ioas(ictx)
    try:
        ioas.iopt.map_user_pages(ictx, int(m.iova), int(m.vaddr), int(m.size), prot, 0)
    finally:
        ictx.put_object(ioas)
    return 0


def _unmap_dma(ictx: IommufdCtx, arg: int) -> int:
    """VFIO_IOMMU_UNMAP_DMA: FLAG_ALL needs iova = size = 0; TYPE1 cuts areas first.
    The unmapped byte count is written back, also on failure."""
    uaccess = ictx.kernel.uaccess
    m = _struct_from_user(ictx, "struct vfio_iommu_type1_dma_unmap", arg, _UNMAP_MINSZ)
    if m.argsz < _UNMAP_MINSZ or m.flags & ~u.VFIO_DMA_UNMAP_FLAG_ALL:
        raise kerr(EINVAL)
    ioas = get_compat_ioas(ictx)
    try:
        if m.flags & u.VFIO_DMA_UNMAP_FLAG_ALL:
            if m.iova != 0 or m.size != 0:
                raise kerr(EINVAL)
            rc, unmapped = ioas.iopt.unmap_all()
        else:
            iova, size = int(m.iova), int(m.size)
            if ioas.iopt.disable_large_pages:
                # Cut at the range's last byte and just before its start.
                cuts = [(iova + size - 1) & ((1 << 64) - 1), (iova - 1) & ((1 << 64) - 1)]
                ioas.iopt.cut_iova(cuts if iova else cuts[:1])
            rc, unmapped = ioas.iopt.unmap_iova(iova, size)
        m.size = unmapped
        try:
            uaccess.copy_to_user(arg, u.ffi.buffer(m, _UNMAP_MINSZ)[:])
        except OSError:
            rc = EFAULT
        if rc:
            raise kerr(rc)
    finally:
        ictx.put_object(ioas)
    return 0


def _cc_iommu(ictx: IommufdCtx) -> int:
    """VFIO_DMA_CC_IOMMU: 1 unless some HWPT of the compat IOAS does not enforce it."""
    ioas = get_compat_ioas(ictx)
    try:
        for hwpt in ioas.hwpt_list:
            if not hwpt.enforce_cache_coherency:
                return 0
        return 1
    finally:
        ictx.put_object(ioas)


def _check_extension(ictx: IommufdCtx, ext: int) -> int:
    """VFIO_CHECK_EXTENSION."""
    if ext in (u.VFIO_TYPE1_IOMMU, u.VFIO_TYPE1v2_IOMMU, u.VFIO_UNMAP_ALL):
        return 0 if ictx.no_iommu_mode else 1
    if ext == u.VFIO_NOIOMMU_IOMMU:
        return 0
    if ext == u.VFIO_DMA_CC_IOMMU:
        return _cc_iommu(ictx)
    return 0


def _set_iommu(ictx: IommufdCtx, iommu_type: int) -> int:
    """VFIO_SET_IOMMU: TYPE1 or TYPE1v2 on the compat IOAS (ENODEV without one);
    TYPE1 turns large pages off so any mapping can be cut."""
    if iommu_type == u.VFIO_NOIOMMU_IOMMU and ictx.no_iommu_mode:
        if not ictx.kernel.task.cap_sys_rawio:
            raise kerr(EPERM)
        return 0
    if iommu_type not in (u.VFIO_TYPE1_IOMMU, u.VFIO_TYPE1v2_IOMMU) or ictx.no_iommu_mode:
        raise kerr(EINVAL)
    ioas = get_compat_ioas(ictx)
    try:
        if iommu_type == u.VFIO_TYPE1_IOMMU:
            ioas.iopt.set_large_pages(False)
    finally:
        ictx.put_object(ioas)
    return 0


def _get_pagesizes(ioas: IommufdIoas) -> int:
    """iommufd_get_pagesizes(): the domains' common sizes, PAGE_SIZE at least."""
    bitmap = (1 << 64) - 1
    for domain in ioas.iopt.domains:
        bitmap &= domain.pgsize_bitmap
    if bitmap & ~PAGE_MASK & (PAGE_SIZE - 1):
        bitmap &= PAGE_MASK & ((1 << 64) - 1)
        bitmap |= PAGE_SIZE
    return max(bitmap, ioas.iopt.iova_alignment)


def _fill_cap_iova(ioas: IommufdIoas, ictx: IommufdCtx, cur: int, avail: int) -> int:
    """iommufd_fill_cap_iova(): VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE."""
    uaccess = ictx.kernel.uaccess
    nr = 0
    for start, last in ioas.iopt.iova_ranges():
        if avail >= _IOVA_CAP_SIZE + (nr + 1) * _RANGE_SIZE:
            uaccess.copy_to_user(cur + _IOVA_CAP_SIZE + nr * _RANGE_SIZE,
                                 start.to_bytes(8, "little") + last.to_bytes(8, "little"))
        nr += 1
    size = _IOVA_CAP_SIZE + nr * _RANGE_SIZE
    if avail >= size:
        cap = u.ffi.new("struct vfio_iommu_type1_info_cap_iova_range *")
        cap.header.id = u.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
        cap.header.version = 1
        cap.nr_iovas = nr
        uaccess.copy_to_user(cur, u.ffi.buffer(cap, _IOVA_CAP_SIZE)[:])
    return size


def _fill_cap_dma_avail(ioas: IommufdIoas, ictx: IommufdCtx, cur: int, avail: int) -> int:
    """iommufd_fill_cap_dma_avail(): VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, U32_MAX."""
    if avail >= _DMA_AVAIL_SIZE:
        cap = u.ffi.new("struct vfio_iommu_type1_info_dma_avail *")
        cap.header.id = u.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
        cap.header.version = 1
        cap.avail = U32_MAX
        ictx.kernel.uaccess.copy_to_user(cur, u.ffi.buffer(cap)[:])
    return _DMA_AVAIL_SIZE


def _get_info(ictx: IommufdCtx, arg: int) -> int:
    """VFIO_IOMMU_GET_INFO: page sizes and the capability chain, as far as ``argsz``
    allows; ``argsz`` comes back as the size the whole chain needs."""
    uaccess = ictx.kernel.uaccess
    info = u.ffi.new("struct vfio_iommu_type1_info *")
    u.ffi.memmove(info, uaccess.copy_from_user(arg, _INFO_MINSZ), _INFO_MINSZ)
    argsz = int(info.argsz)
    if argsz < _INFO_MINSZ:
        raise kerr(EINVAL)
    minsz = min(argsz, _INFO_SIZE)
    ioas = get_compat_ioas(ictx)
    try:
        info.flags = u.VFIO_IOMMU_INFO_PGSIZES
        info.iova_pgsizes = _get_pagesizes(ioas)
        info.cap_offset = 0
        total = _INFO_SIZE
        last_cap = -1
        for fill in (_fill_cap_dma_avail, _fill_cap_iova):
            if argsz > total:
                cap_size = fill(ioas, ictx, arg + total, argsz - total)
            else:
                cap_size = fill(ioas, ictx, 0, 0)
            cap_size = (cap_size + 7) & ~7
            if last_cap >= 0 and argsz >= total:
                # put_user(total, &last_cap->next)
                uaccess.copy_to_user(last_cap + 4, total.to_bytes(4, "little"))
            last_cap = arg + total
            total += cap_size
        if argsz >= total:
            info.cap_offset = _INFO_SIZE
        info.argsz = total
        info.flags |= u.VFIO_IOMMU_INFO_CAPS
        uaccess.copy_to_user(arg, u.ffi.buffer(info, minsz)[:])
    finally:
        ictx.put_object(ioas)
    return 0


def iommufd_vfio_ioctl(ictx: IommufdCtx, cmd: int, arg: int) -> int:
    """iommufd_vfio_ioctl(): the container ioctls; anything else is ENOTTY."""
    if cmd == u.VFIO_GET_API_VERSION:
        return int(u.VFIO_API_VERSION)
    if cmd == u.VFIO_SET_IOMMU:
        return _set_iommu(ictx, arg)
    if cmd == u.VFIO_CHECK_EXTENSION:
        return _check_extension(ictx, arg)
    if cmd == u.VFIO_IOMMU_GET_INFO:
        return _get_info(ictx, arg)
    if cmd == u.VFIO_IOMMU_MAP_DMA:
        return _map_dma(ictx, arg)
    if cmd == u.VFIO_IOMMU_UNMAP_DMA:
        return _unmap_dma(ictx, arg)
    raise kerr(ENOIOCTLCMD)
