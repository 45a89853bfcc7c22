"""The iommufd file: its context, the object lifecycle and ioctl dispatch (main.c).

``iommufd_fops_ioctl`` checks in the kernel's order:

1. an nr outside the command table goes to the VFIO compat handler (unknown: ENOTTY);
2. ``get_user(size)`` from the argument: NULL or unreadable is EFAULT;
3. a hole in the table, or a request number that is not the entry's: ENOTTY;
4. ``size < min_size``: EINVAL;
5. ``copy_struct_from_user``: a non-zero byte past sizeof is E2BIG;

then runs the command, which answers with ``min(size, sizeof)`` bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from errno import EBUSY, EINVAL, ENOENT, ENOMEM, ENXIO, EOPNOTSUPP, EPERM
from typing import TYPE_CHECKING, Any, TypeVar

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
from backends.mock.driver import MmapObject, MmapTree
from backends.mock.errors import ENOIOCTLCMD, kerr
from backends.mock.fault import GET_OBJECT, IOMMUFD_FOPS_OPEN, OBJECT_ALLOC
from backends.mock.files import File
from backends.mock.mm import PAGE_SIZE, PROT_EXEC
from backends.mock.objects import IommufdObject, ObjectTable, ObjType
from backends.mock.pages import ACCOUNT_MM, ACCOUNT_NONE

if TYPE_CHECKING:
    from backends.mock.device import IommufdGroup
    from backends.mock.ioas import IommufdIoas
    from backends.mock.kernel import Kernel
    from backends.mock.uaccess import UserAccess

ObjT = TypeVar("ObjT", bound=IommufdObject)

_OPTION_VAL64_OFFSET = int(u.ffi.offsetof("struct iommu_option", "val64"))

REMOVE_WAIT = 1 << 0
REMOVE_OBJ_TOMBSTONE = 1 << 1


class IommufdCtx:
    """``struct iommufd_ctx``: one open /dev/iommu."""

    def __init__(self, kernel: Kernel, *, vfio_container: bool = False) -> None:
        self.kernel = kernel
        self.objects = ObjectTable()
        self.groups: dict[int, IommufdGroup] = {}
        # /dev/vfio/vfio defaults to the accounting VFIO uses (iommufd_fops_open).
        self.account_mode = ACCOUNT_MM if vfio_container else ACCOUNT_NONE
        self.no_iommu_mode = False
        self.vfio_ioas: IommufdIoas | None = None
        self.file: IommufdFile | None = None
        self.mt_mmap = MmapTree()

    @property
    def uaccess(self) -> UserAccess:
        """The caller's user memory."""
        return self.kernel.uaccess

    def ctx_get(self) -> None:
        """iommufd_ctx_get(): a reference on the context's file."""
        assert self.file is not None
        self.file.get()

    def ctx_put(self) -> None:
        """iommufd_ctx_put(): the last reference releases the context."""
        assert self.file is not None
        self.file.put()

    # -- object lifecycle (main.c) ----------------------------------------
    def object_alloc(self, obj: ObjT) -> ObjT:
        """_iommufd_object_alloc(): reserve an ID for ``obj`` (published at finalize)."""
        if self.kernel.should_fail(OBJECT_ALLOC):
            raise kerr(ENOMEM)
        obj.users = 1
        obj.id = self.objects.alloc()
        return obj

    def object_finalize(self, obj: IommufdObject) -> None:
        """iommufd_object_finalize(): publish the object under its ID."""
        old = self.objects.store(obj.id, obj)
        self.kernel.warn_on(old is not None, "iommufd_object_finalize: ID not reserved")

    def object_abort(self, obj: IommufdObject) -> None:
        """iommufd_object_abort(): free a never-finalized object's ID."""
        self.kernel.warn_on(self.objects.load(obj.id) is not None,
                            "iommufd_object_abort: object was published")
        self.objects.erase(obj.id)
        obj.users -= 1
        self.kernel.warn_on(obj.users != 0, "iommufd_object_abort: users left")

    def object_abort_and_destroy(self, obj: IommufdObject) -> None:
        """iommufd_object_abort_and_destroy(): run the abort op, then free the ID."""
        obj.abort()
        self.object_abort(obj)

    def get_object(self, obj_id: int, obj_type: ObjType = ObjType.ANY) -> IommufdObject:
        """iommufd_get_object(): the object with a users reference; ENOENT when the ID is
        free, reserved, a tombstone, or of another type."""
        if self.kernel.should_fail(GET_OBJECT):
            raise kerr(ENOENT)
        obj = self.objects.load(obj_id)
        if obj is None or (obj_type != ObjType.ANY and obj.obj_type != obj_type) \
                or obj.users == 0:
            raise kerr(ENOENT)
        obj.users += 1
        return obj

    def put_object(self, obj: IommufdObject) -> None:
        """iommufd_put_object()."""
        obj.users -= 1

    def object_remove(self, to_destroy: IommufdObject | None, obj_id: int,
                      flags: int = 0) -> None:
        """iommufd_object_remove(): destroy the object if the table holds its only user.

        With ``to_destroy`` the caller's own users reference is dropped first.
        """
        if flags & REMOVE_WAIT and to_destroy is not None:
            # The wait for wait_cnt holders: pre_destroy revokes the long-lived ones
            # (a device's vDEVICE), the others are ioctls that finished long ago.
            to_destroy.pre_destroy()
        loaded = self.objects.load(obj_id)
        if to_destroy is not None:
            if loaded is not to_destroy:
                self.kernel.warn_on(True, "iommufd_object_remove: object mismatch")
                raise kerr(ENOENT)
            to_destroy.users -= 1
        if loaded is None:
            raise kerr(ENOENT)
        obj: IommufdObject = loaded
        if obj.users != 1:
            raise kerr(EBUSY)
        obj.users = 0
        if flags & REMOVE_OBJ_TOMBSTONE:
            self.objects.store(obj_id, None)
        else:
            self.objects.erase(obj_id)
        if self.vfio_ioas is obj:
            self.vfio_ioas = None
        obj.destroy()

    def destroy_user(self, obj: IommufdObject) -> None:
        """iommufd_object_destroy_user(): the holder of a users ref destroys it."""
        try:
            self.object_remove(obj, obj.id, REMOVE_WAIT)
        except OSError:
            self.kernel.warn_on(True, f"iommufd_object_destroy_user: {obj!r} still used")

    def tombstone_user(self, obj: IommufdObject) -> None:
        """iommufd_object_tombstone_user(): like destroy_user, the ID stays ENOENT."""
        try:
            self.object_remove(obj, obj.id, REMOVE_WAIT | REMOVE_OBJ_TOMBSTONE)
        except OSError:
            self.kernel.warn_on(True, f"iommufd_object_tombstone_user: {obj!r} still used")

    def put_and_try_destroy(self, obj: IommufdObject) -> None:
        """iommufd_object_put_and_try_destroy(): drop a ref, destroy if it was the last."""
        try:
            self.object_remove(obj, obj.id, 0)
        except OSError:
            pass

    # -- file ops ---------------------------------------------------------
    def release(self) -> None:
        """iommufd_fops_release(): destroy every object, leaves first, until none is left."""
        while True:
            objs = self.objects.objects()
            if not objs:
                break
            destroyed = 0
            for obj in objs:
                if self.objects.load(obj.id) is not obj or obj.users != 1:
                    continue
                obj.users = 0
                self.objects.erase(obj.id)
                if self.vfio_ioas is obj:
                    self.vfio_ioas = None
                obj.destroy()
                destroyed += 1
            if self.kernel.warn_on(not destroyed, "iommufd_fops_release: users leak"):
                break
        self.objects = ObjectTable()
        self.kernel.warn_on(bool(self.groups), "iommufd_fops_release: groups left")

    def ioctl(self, cmd: int, arg: int) -> int:
        """iommufd_fops_ioctl()."""
        cmd &= 0xFFFFFFFF
        nr = cmd & 0xFF
        index = nr - u.IOMMUFD_CMD_BASE
        if index < 0 or index >= len(_OPS):
            return vfio_compat.iommufd_vfio_ioctl(self, cmd, arg)
        uaccess = self.kernel.uaccess
        user_size = uaccess.get_user_u32(arg)
        op = _OPS[index]
        if op is None or op.request != cmd:
            raise kerr(ENOIOCTLCMD)
        if user_size < op.min_size:
            raise kerr(EINVAL)
        ucmd = Ucmd(self, arg, user_size, self.kernel.ffi.new(op.ptype))
        uaccess.copy_struct_from_user(ucmd.cmd, op.size, arg, user_size)
        try:
            ret = op.execute(ucmd)
        except OSError:
            if ucmd.new_obj is not None:
                self.object_abort_and_destroy(ucmd.new_obj)
            raise
        if ucmd.new_obj is not None:
            self.object_finalize(ucmd.new_obj)
        return ret

    def mmap(self, length: int, offset: int, prot: int, shared: bool) -> int:
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
        immap = self.mt_mmap.load(offset)
        if immap is None or immap.owner.users == 0:
            raise kerr(ENXIO)
        # Only the exact region maps, not a part of it.
        if offset != immap.start or length != immap.length:
            raise kerr(ENXIO)
        assert self.file is not None
        obj = MmapObject(self.kernel.phys, immap, self.file)
        obj.vma_open()
        try:
            return self.kernel.mm.mmap(length, prot=prot, shared=True, obj=obj)
        except OSError:
            obj.vma_close()
            raise


class Ucmd:
    """``struct iommufd_ucmd``: one ioctl in flight."""

    __slots__ = ("cmd", "ictx", "new_obj", "ubuffer", "user_size")

    def __init__(self, ictx: IommufdCtx, ubuffer: int, user_size: int, cmd: Any) -> None:
        self.ictx = ictx
        self.ubuffer = ubuffer
        self.user_size = user_size
        self.cmd = cmd
        self.new_obj: IommufdObject | None = None

    @property
    def uaccess(self) -> UserAccess:
        """The caller's user memory."""
        return self.ictx.kernel.uaccess

    def respond(self, cmd_len: int) -> None:
        """iommufd_ucmd_respond(): copy ``min(user size, cmd_len)`` bytes back."""
        self.ictx.kernel.uaccess.copy_struct_to_user(
            self.ubuffer, self.cmd, min(self.user_size, cmd_len))

    def object_alloc_ucmd(self, obj: ObjT) -> ObjT:
        """_iommufd_object_alloc_ucmd(): dispatch finalizes or aborts it."""
        if self.new_obj is not None:
            raise kerr(EBUSY)
        self.ictx.object_alloc(obj)
        self.new_obj = obj
        return obj


class IommufdFile(File):
    """The /dev/iommu file; its release destroys the context."""

    name = "iommufd"

    def __init__(self, ctx: IommufdCtx) -> None:
        super().__init__()
        self.ctx = ctx
        ctx.file = self

    def release(self) -> None:
        """iommufd_fops_release()."""
        self.ctx.release()

    def ioctl(self, cmd: int, arg: int) -> int:
        """iommufd_fops_ioctl()."""
        return self.ctx.ioctl(cmd, arg)

    def mmap(self, length: int, offset: int, prot: int, shared: bool) -> int:
        """iommufd_fops_mmap()."""
        return self.ctx.mmap(length, offset, prot, shared)


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
