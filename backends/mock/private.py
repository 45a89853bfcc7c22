"""What every iommufd concept module shares (the kernel's iommufd_private.h).

The context of one open /dev/iommu with its object table and the object lifecycle,
and the in-flight ioctl (``struct iommufd_ucmd``). It sits below every concept module
(ioas, hw_pagetable, device, viommu, eventq, ...), which import it and never main.py:
main.py is the dispatch table on top, as main.c is.
"""

from __future__ import annotations

from errno import EBUSY, ENOENT, ENOMEM
from typing import TYPE_CHECKING, TypeVar, cast

from backends.mock.driver import MmapTree
from backends.mock.errors import kerr
from backends.mock.fault import GET_OBJECT, OBJECT_ALLOC
from backends.mock.objects import IommufdObject, ObjectTable, ObjType
from backends.mock.pages import ACCOUNT_MM, ACCOUNT_NONE

if TYPE_CHECKING:
    from typing import Any

    from backends.mock.device import IommufdGroup
    from backends.mock.files import File
    from backends.mock.ioas import IommufdIoas
    from backends.mock.kernel import Kernel
    from backends.mock.uaccess import UserAccess

ObjT = TypeVar("ObjT", bound=IommufdObject)

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
        self.file: File | None = None
        """The /dev/iommu file (main.py's IommufdFile) that holds the context."""
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


def iommufd_get_ioas(ictx: IommufdCtx, ioas_id: int) -> IommufdIoas:
    """iommufd_get_ioas() (inline in the header): ENOENT unless ``ioas_id`` is an IOAS."""
    return cast("IommufdIoas", ictx.get_object(ioas_id, ObjType.IOAS))
