"""HW page tables: the HWPT objects and their ioctls (hw_pagetable.c).

A paging HWPT wraps a driver domain built on an IOAS: it holds a users reference on
the IOAS, and its domain is one of the IOAS's io_pagetable domains (filled with every
area). A nested HWPT wraps a driver's stage-1 domain on a nest-parent paging HWPT (or
on a vIOMMU's) and holds a users reference on that parent (or vIOMMU); its caches are
invalidated with IOMMU_HWPT_INVALIDATE's user array. With FAULT_ID_VALID a HWPT also
holds the fault queue its I/O page faults go to. Dirty tracking is
backends.mock.dirty_tracking.
"""

from __future__ import annotations

from collections.abc import Callable
from errno import EFAULT, EINVAL, ENOENT, EOPNOTSUPP
from typing import TYPE_CHECKING, cast

import uapi_headers as u
from backends.mock import mock_driver
from backends.mock.device import (
    iommufd_get_device,
    iommufd_hw_pagetable_attach,
    iommufd_hw_pagetable_detach,
)
from backends.mock.errors import kerr
from backends.mock.eventq import iommufd_fault_iopf_handler
from backends.mock.iommu import IOMMU_NO_PASID, IommuDomain, PagingDomain
from backends.mock.mm import PAGE_SIZE
from backends.mock.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from backends.mock.device import IommufdDevice
    from backends.mock.ioas import IommufdIoas
    from backends.mock.mock_driver import UserData
    from backends.mock.private import IommufdCtx, Ucmd
    from backends.mock.viommu import IommufdViommu

_PAGING_VALID_FLAGS = (u.IOMMU_HWPT_ALLOC_NEST_PARENT | u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                       | u.IOMMU_HWPT_FAULT_ID_VALID | u.IOMMU_HWPT_ALLOC_PASID)
IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19


class IommufdHwPagetable(IommufdObject):
    """``struct iommufd_hw_pagetable``: a domain, an optional fault queue."""

    def __init__(self) -> None:
        super().__init__()
        self.domain: IommuDomain | None = None
        self.fault: IommufdObject | None = None
        self.pasid_compat = False

    def _free_domain(self) -> None:
        """__iommufd_hwpt_destroy()."""
        domain = self.domain
        if isinstance(domain, PagingDomain):
            domain.owner.kernel.warn_on(domain.mapped != 0, "domain freed while mapped")
        self.domain = None
        if self.fault is not None:
            self.fault.users -= 1


class HwptPaging(IommufdHwPagetable):
    """``struct iommufd_hwpt_paging``."""

    obj_type = ObjType.HWPT_PAGING

    def __init__(self, ioas: IommufdIoas) -> None:
        super().__init__()
        self.ioas = ioas
        self.auto_domain = False
        self.enforce_cache_coherency = False
        self.nest_parent = False
        self.in_hwpt_list = False

    def destroy(self) -> None:
        """iommufd_hwpt_paging_destroy(): leave the IOAS, free the domain."""
        if self.in_hwpt_list:
            self.in_hwpt_list = False
            self.ioas.hwpt_list.remove(self)
            assert self.domain is not None
            self.ioas.iopt.table_remove_domain(self.domain)
        self._free_domain()
        self.ioas.users -= 1


class HwptNested(IommufdHwPagetable):
    """``struct iommufd_hwpt_nested``: a stage-1 table on a nest-parent HWPT, which it
    holds (one allocated on a vIOMMU holds the vIOMMU instead: a subclass)."""

    obj_type = ObjType.HWPT_NESTED

    def __init__(self, parent: HwptPaging) -> None:
        super().__init__()
        self.parent = parent

    def destroy(self) -> None:
        """iommufd_hwpt_nested_destroy(): drop the reference on the parent."""
        self._free_domain()
        self.parent.users -= 1


def iommufd_hwpt_paging_alloc(ictx: IommufdCtx, ioas: IommufdIoas, idev: IommufdDevice,
                              pasid: int, flags: int, immediate_attach: bool,
                              user_data: UserData | None) -> HwptPaging:
    """iommufd_hwpt_paging_alloc(): a new paging domain filled from the IOAS. The
    caller finalizes (or aborts) the returned, still reserved, HWPT."""
    dev = idev.dev
    if flags & ~_PAGING_VALID_FLAGS:
        raise kerr(EOPNOTSUPP)
    if flags & u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not mock_driver.mock_domain_capable(
            dev, mock_driver.IOMMU_CAP_DIRTY_TRACKING):
        raise kerr(EOPNOTSUPP)
    if flags & u.IOMMU_HWPT_FAULT_ID_VALID and flags & u.IOMMU_HWPT_ALLOC_NEST_PARENT:
        raise kerr(EOPNOTSUPP)
    hwpt = ictx.object_alloc(HwptPaging(ioas))
    hwpt.pasid_compat = bool(flags & u.IOMMU_HWPT_ALLOC_PASID)
    ioas.users += 1
    hwpt.nest_parent = bool(flags & u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    try:
        domain = mock_driver.mock_domain_alloc_paging_flags(
            ictx.kernel, dev, flags & ~u.IOMMU_HWPT_FAULT_ID_VALID, user_data)
        hwpt.domain = domain
        domain.iommufd_hwpt = hwpt
        if immediate_attach:
            iommufd_hw_pagetable_attach(hwpt, idev, pasid)
        try:
            ioas.iopt.table_add_domain(domain)
        except OSError:
            if immediate_attach:
                iommufd_hw_pagetable_detach(idev, pasid)
            raise
        ioas.hwpt_list.append(hwpt)
        hwpt.in_hwpt_list = True
    except OSError:
        ictx.object_abort_and_destroy(hwpt)
        raise
    return hwpt


def iommufd_hwpt_nested_alloc(ictx: IommufdCtx, parent: HwptPaging, idev: IommufdDevice,
                              flags: int, user_data: UserData) -> HwptNested:
    """iommufd_hwpt_nested_alloc(): a stage-1 HWPT on a nest-parent paging HWPT.

    Flags beyond FAULT_ID_VALID and PASID, or no driver data, are EOPNOTSUPP; an auto
    domain, a parent allocated without NEST_PARENT or another driver's parent is
    EINVAL; the driver answers for its data (mock_domain_alloc_nested).
    """
    if flags & ~(u.IOMMU_HWPT_FAULT_ID_VALID | u.IOMMU_HWPT_ALLOC_PASID) or not user_data.len:
        raise kerr(EOPNOTSUPP)
    assert parent.domain is not None
    if parent.auto_domain or not parent.nest_parent or \
            parent.domain.owner is not idev.dev.iommu:
        raise kerr(EINVAL)
    hwpt = ictx.object_alloc(HwptNested(parent))
    hwpt.pasid_compat = bool(flags & u.IOMMU_HWPT_ALLOC_PASID)
    parent.users += 1
    try:
        domain = mock_driver.mock_domain_alloc_nested(
            ictx.kernel, idev.dev, parent.domain, flags & ~u.IOMMU_HWPT_FAULT_ID_VALID,
            user_data)
    except OSError:
        ictx.object_abort_and_destroy(hwpt)
        raise
    hwpt.domain = domain
    domain.iommufd_hwpt = hwpt
    return hwpt


def _alloc_from_ioas(ucmd: Ucmd, pt_obj: IommufdObject, idev: IommufdDevice,
                     flags: int, user_data: UserData) -> IommufdHwPagetable:
    """pt_id is an IOAS: a paging HWPT (its driver data is optional)."""
    return iommufd_hwpt_paging_alloc(ucmd.ictx, cast("IommufdIoas", pt_obj), idev,
                                     IOMMU_NO_PASID, flags, False,
                                     user_data if user_data.len else None)


def _alloc_from_parent(ucmd: Ucmd, pt_obj: IommufdObject, idev: IommufdDevice,
                       flags: int, user_data: UserData) -> IommufdHwPagetable:
    """pt_id is a paging HWPT: a nested HWPT on it."""
    return iommufd_hwpt_nested_alloc(ucmd.ictx, cast(HwptPaging, pt_obj), idev, flags,
                                     user_data)


def _alloc_from_viommu(ucmd: Ucmd, pt_obj: IommufdObject, idev: IommufdDevice,
                       flags: int, user_data: UserData) -> IommufdHwPagetable:
    """pt_id is a vIOMMU: a nested HWPT on the vIOMMU's nesting parent (the vIOMMU model
    checks the device sits behind its IOMMU instance, then asks its driver)."""
    return cast("IommufdViommu", pt_obj).alloc_hwpt_nested(idev, flags, user_data)


_AllocFn = Callable[["Ucmd", IommufdObject, "IommufdDevice", int, "UserData"],
                    IommufdHwPagetable]

_ALLOC_BY_PT_TYPE: dict[ObjType, _AllocFn] = {
    ObjType.IOAS: _alloc_from_ioas,
    ObjType.HWPT_PAGING: _alloc_from_parent,
    ObjType.VIOMMU: _alloc_from_viommu,
}
"""IOMMU_HWPT_ALLOC's one dispatch point: the type of the ``pt_id`` object selects
the kind of HWPT; any other type is EINVAL."""


def _attach_fault(ucmd: Ucmd, hwpt: IommufdHwPagetable, fault_id: int) -> None:
    """FAULT_ID_VALID: the HWPT reports I/O page faults to fault queue ``fault_id``
    (iommufd_get_fault(): ENOENT unless the ID names a fault queue)."""
    ictx = ucmd.ictx
    fault = ictx.get_object(fault_id, ObjType.FAULT)
    hwpt.fault = fault
    fault.users += 1
    assert hwpt.domain is not None
    hwpt.domain.iopf_handler = iommufd_fault_iopf_handler
    ictx.put_object(fault)


def iommufd_hwpt_alloc(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_ALLOC: a paging HWPT from an IOAS, or a nested one from a nest-parent
    HWPT or a vIOMMU (see _ALLOC_BY_PT_TYPE); ``pt_id`` that names nothing is EINVAL."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    data_len = int(cmd.data_len)
    if (cmd.data_type == u.IOMMU_HWPT_DATA_NONE) == bool(data_len):
        raise kerr(EINVAL)
    user_data = mock_driver.UserData(int(cmd.data_type), int(cmd.data_uptr), data_len)
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.dev_id))
    try:
        try:
            pt_obj = ictx.get_object(int(cmd.pt_id), ObjType.ANY)
        except OSError:
            raise kerr(EINVAL) from None
        try:
            alloc = _ALLOC_BY_PT_TYPE.get(pt_obj.obj_type)
            if alloc is None:
                raise kerr(EINVAL)
            flags = int(cmd.flags)
            hwpt = alloc(ucmd, pt_obj, idev, flags, user_data)
            try:
                if flags & u.IOMMU_HWPT_FAULT_ID_VALID:
                    _attach_fault(ucmd, hwpt, int(cmd.fault_id))
                cmd.out_hwpt_id = hwpt.id
                ucmd.respond(u.ffi.sizeof(cmd[0]))
            except OSError:
                ictx.object_abort_and_destroy(hwpt)
                raise
            ictx.object_finalize(hwpt)
        finally:
            ictx.put_object(pt_obj)
    finally:
        ictx.put_object(idev)
    return 0


def _get_hwpt_paging(ictx: IommufdCtx, hwpt_id: int) -> HwptPaging:
    return cast(HwptPaging, ictx.get_object(hwpt_id, ObjType.HWPT_PAGING))


InvalidateFn = Callable[[mock_driver.UserDataArray], None]


def _cache_invalidate_op(ucmd: Ucmd, pt_obj: IommufdObject) -> InvalidateFn:
    """The driver op that invalidates ``pt_obj``'s caches: a nested HWPT's domain op, or
    a vIOMMU's (the vIOMMU model's driver). Any other object is EINVAL."""
    kernel = ucmd.ictx.kernel
    if pt_obj.obj_type == ObjType.HWPT_NESTED:
        domain = cast(HwptNested, pt_obj).domain
        if not isinstance(domain, mock_driver.MockNestedDomain):
            raise kerr(EOPNOTSUPP)
        nested = domain
        return lambda array: mock_driver.mock_domain_cache_invalidate_user(
            kernel, nested, array)
    if pt_obj.obj_type == ObjType.VIOMMU:
        viommu = cast("IommufdViommu", pt_obj)

        def invalidate(array: mock_driver.UserDataArray) -> None:
            done, rc = viommu.cache_invalidate(array.type, array.uptr, array.entry_len,
                                               array.entry_num)
            array.entry_num = done
            if rc:
                raise kerr(rc)
        return invalidate
    raise kerr(EINVAL)


def iommufd_hwpt_invalidate(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_INVALIDATE: hand the user's array to the target's driver.

    ``entry_num`` always goes back: the number of entries the driver handled, also when
    it stopped at a bad one (0 when the core refused the call first). With entries, a
    NULL array, ``entry_len`` 0 or above PAGE_SIZE, or more than 2^19 entries is EINVAL.
    """
    cmd = ucmd.cmd
    array = mock_driver.UserDataArray(int(cmd.data_type), int(cmd.data_uptr),
                                      int(cmd.entry_len), int(cmd.entry_num))
    done_num = 0
    rc = 0
    done_num = 0
    if cmd.__reserved:
        rc = EOPNOTSUPP
    elif array.entry_num and (not array.uptr or not array.entry_len
                              or array.entry_len > PAGE_SIZE
                              or array.entry_num > IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX):
        rc = EINVAL
    else:
        ictx = ucmd.ictx
        try:
            pt_obj = ictx.get_object(int(cmd.hwpt_id), ObjType.ANY)
        except OSError as error:
            rc = error.errno or ENOENT
        else:
            try:
                invalidate = _cache_invalidate_op(ucmd, pt_obj)
                try:
                    invalidate(array)
                finally:
                    # The driver reports what it handled, on error too.
                    done_num = array.entry_num
            except OSError as error:
                rc = error.errno or EINVAL
            finally:
                ictx.put_object(pt_obj)
    cmd.entry_num = done_num
    try:
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    except OSError:
        raise kerr(EFAULT) from None
    if rc:
        raise kerr(rc)
    return 0
