"""The iommufd file and its ioctl dispatch table (main.c); the context and the object
lifecycle every command uses are in backends.mock.private (iommufd_private.h).

``iommufd_fops_ioctl`` checks in the kernel's order:

1. an nr outside the command table goes to the VFIO compat handler (unknown: ENOTTY);
2. ``get_user(size)`` from the argument: NULL or unreadable is EFAULT;
3. a hole in the table, or a request number that is not the entry's: ENOTTY;
4. ``size < min_size``: EINVAL;
5. ``copy_struct_from_user``: a non-zero byte past sizeof is E2BIG;

then runs the command, which answers with ``min(size, sizeof)`` bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from errno import EINVAL, ENOMEM, ENXIO, EOPNOTSUPP, EPERM
from typing import TYPE_CHECKING, Any

import uapi_headers as u
from backends.mock import (
    device,
    dirty_tracking,
    eventq,
    hw_pagetable,
    ioas,
    selftest,
    vfio_compat,
    viommu,
)
from backends.mock.driver import MmapObject
from backends.mock.errors import ENOIOCTLCMD, kerr
from backends.mock.fault import IOMMUFD_FOPS_OPEN
from backends.mock.files import File
from backends.mock.mm import PAGE_SIZE, PROT_EXEC
from backends.mock.objects import ObjectTable
from backends.mock.private import IommufdCtx, Ucmd

#: ffi.new without cffi's Python-level wrapper: every iommufd ioctl allocates its command
_newp: Any = importlib.import_module("_cffi_backend").newp

if TYPE_CHECKING:
    from backends.mock.kernel import Kernel

_OPTION_VAL64_OFFSET = int(u.ffi.offsetof("struct iommu_option", "val64"))


def iommufd_fops_release(ctx: IommufdCtx) -> None:
    """iommufd_fops_release(): destroy every object, leaves first, until none is left."""
    while True:
        objs = ctx.objects.objects()
        if not objs:
            break
        destroyed = 0
        for obj in objs:
            if ctx.objects.load(obj.id) is not obj or obj.users != 1:
                continue
            obj.users = 0
            ctx.objects.erase(obj.id)
            if ctx.vfio_ioas is obj:
                ctx.vfio_ioas = None
            obj.destroy()
            destroyed += 1
        if ctx.kernel.warn_on(not destroyed, "iommufd_fops_release: users leak"):
            break
    ctx.objects = ObjectTable()
    ctx.kernel.warn_on(bool(ctx.groups), "iommufd_fops_release: groups left")


def iommufd_fops_ioctl(ctx: IommufdCtx, cmd: int, arg: int) -> int:
    """iommufd_fops_ioctl()."""
    cmd &= 0xFFFFFFFF
    nr = cmd & 0xFF
    index = nr - u.IOMMUFD_CMD_BASE
    if index < 0 or index >= len(_OPS):
        return vfio_compat.iommufd_vfio_ioctl(ctx, cmd, arg)
    uaccess = ctx.kernel.uaccess
    user_size = uaccess.get_user_u32(arg)
    op = _OPS[index]
    if op is None or op.request != cmd:
        raise kerr(ENOIOCTLCMD)
    if user_size < op.min_size:
        raise kerr(EINVAL)
    ucmd = Ucmd(ctx, arg, user_size, _newp(op.ptype, None))
    uaccess.copy_struct_from_user(ucmd.cmd, op.size, arg, user_size)
    try:
        ret = op.execute(ucmd)
    except OSError:
        if ucmd.new_obj is not None:
            ctx.object_abort_and_destroy(ucmd.new_obj)
        raise
    if ucmd.new_obj is not None:
        ctx.object_finalize(ucmd.new_obj)
    return ret


def iommufd_fops_mmap(ctx: IommufdCtx, length: int, offset: int, prot: int,
                      shared: bool) -> int:
    """iommufd_fops_mmap(): only driver-allocated regions (vIOMMU pages) map."""
    # mmap(2) itself: a page-aligned offset, a length it rounds up to whole pages,
    # so the VMA the fop sees always has a page-aligned length.
    if length <= 0 or offset % PAGE_SIZE:
        raise kerr(EINVAL)
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if not shared:
        raise kerr(EINVAL)
    if prot & PROT_EXEC:
        raise kerr(EPERM)
    immap = ctx.mt_mmap.load(offset)
    if immap is None or immap.owner.users == 0:
        raise kerr(ENXIO)
    # Only the exact region maps, not a part of it.
    if offset != immap.start or length != immap.length:
        raise kerr(ENXIO)
    assert ctx.file is not None
    obj = MmapObject(ctx.kernel.phys, immap, ctx.file)
    obj.vma_open()
    try:
        return ctx.kernel.mm.mmap(length, prot=prot, shared=True, obj=obj)
    except OSError:
        obj.vma_close()
        raise


class IommufdFile(File):
    """The /dev/iommu file; its release destroys the context."""

    name = "iommufd"

    def __init__(self, ctx: IommufdCtx) -> None:
        super().__init__()
        self.ctx = ctx
        ctx.file = self

    def release(self) -> None:
        """iommufd_fops_release()."""
        iommufd_fops_release(self.ctx)

    def ioctl(self, cmd: int, arg: int) -> int:
        """iommufd_fops_ioctl()."""
        return iommufd_fops_ioctl(self.ctx, cmd, arg)

    def mmap(self, length: int, offset: int, prot: int, shared: bool) -> int:
        """iommufd_fops_mmap()."""
        return iommufd_fops_mmap(self.ctx, length, offset, prot, shared)


def iommufd_fops_open(kernel: Kernel, *, vfio_container: bool = False) -> IommufdFile:
    """open("/dev/iommu"): a new context."""
    if kernel.should_fail(IOMMUFD_FOPS_OPEN):
        raise kerr(ENOMEM)
    return IommufdFile(IommufdCtx(kernel, vfio_container=vfio_container))


# -- IOMMU_DESTROY and IOMMU_OPTION -----------------------------------------

def iommufd_destroy(ucmd: Ucmd) -> int:
    """IOMMU_DESTROY: ENOENT for a free/reserved/tombstone ID, EBUSY while referenced."""
    ucmd.ictx.object_remove(None, int(ucmd.cmd.id), 0)
    return 0


def iommufd_option(ucmd: Ucmd) -> int:
    """IOMMU_OPTION: RLIMIT_MODE (global) or HUGE_PAGES (per IOAS)."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    if cmd.option_id == u.IOMMU_OPTION_RLIMIT_MODE:
        ioas.iommufd_option_rlimit_mode(cmd, ucmd.ictx)
    elif cmd.option_id == u.IOMMU_OPTION_HUGE_PAGES:
        ioas.iommufd_ioas_option(ucmd)
    else:
        raise kerr(EOPNOTSUPP)
    # Only val64 goes back (size >= min_size covers it).
    ucmd.uaccess.copy_to_user(ucmd.ubuffer + _OPTION_VAL64_OFFSET,
                              int(cmd.val64).to_bytes(8, "little"))
    return 0


# -- the command table ------------------------------------------------------

@dataclass(frozen=True)
class IoctlOp:
    """One ``iommufd_ioctl_ops`` entry."""

    request: int
    size: int
    min_size: int
    ptype: Any
    execute: Callable[[Ucmd], int]


_HANDLERS: dict[str, Callable[[Ucmd], int]] = {
    "IOMMU_DESTROY": iommufd_destroy,
    "IOMMU_FAULT_QUEUE_ALLOC": eventq.iommufd_fault_alloc,
    "IOMMU_GET_HW_INFO": device.iommufd_get_hw_info,
    "IOMMU_HW_QUEUE_ALLOC": viommu.iommufd_hw_queue_alloc_ioctl,
    "IOMMU_HWPT_ALLOC": hw_pagetable.iommufd_hwpt_alloc,
    "IOMMU_HWPT_GET_DIRTY_BITMAP": dirty_tracking.iommufd_hwpt_get_dirty_bitmap,
    "IOMMU_HWPT_INVALIDATE": hw_pagetable.iommufd_hwpt_invalidate,
    "IOMMU_HWPT_SET_DIRTY_TRACKING": dirty_tracking.iommufd_hwpt_set_dirty_tracking,
    "IOMMU_IOAS_ALLOC": ioas.iommufd_ioas_alloc_ioctl,
    "IOMMU_IOAS_ALLOW_IOVAS": ioas.iommufd_ioas_allow_iovas,
    "IOMMU_IOAS_CHANGE_PROCESS": ioas.iommufd_ioas_change_process,
    "IOMMU_IOAS_COPY": ioas.iommufd_ioas_copy,
    "IOMMU_IOAS_IOVA_RANGES": ioas.iommufd_ioas_iova_ranges,
    "IOMMU_IOAS_MAP": ioas.iommufd_ioas_map,
    "IOMMU_IOAS_MAP_FILE": ioas.iommufd_ioas_map_file,
    "IOMMU_IOAS_NOIOMMU_GET_PA": ioas.iommufd_ioas_noiommu_get_pa,
    "IOMMU_IOAS_UNMAP": ioas.iommufd_ioas_unmap,
    "IOMMU_OPTION": iommufd_option,
    "IOMMU_VDEVICE_ALLOC": viommu.iommufd_vdevice_alloc_ioctl,
    "IOMMU_VEVENTQ_ALLOC": eventq.iommufd_veventq_alloc,
    "IOMMU_VFIO_IOAS": vfio_compat.iommufd_vfio_ioas,
    "IOMMU_VIOMMU_ALLOC": viommu.iommufd_viommu_alloc_ioctl,
    "IOMMU_TEST_CMD": selftest.iommufd_test,
}


def _build_ops() -> list[IoctlOp | None]:
    last = max(c.nr for c in u.IOMMUFD_COMMANDS)
    ops: list[IoctlOp | None] = [None] * (last - u.IOMMUFD_CMD_BASE + 1)
    for command in u.IOMMUFD_COMMANDS:
        ops[command.nr - u.IOMMUFD_CMD_BASE] = IoctlOp(
            request=command.request, size=command.size, min_size=command.min_size,
            ptype=u.ffi.typeof(f"{command.struct} *"), execute=_HANDLERS[command.name])
    return ops


_OPS = _build_ops()
