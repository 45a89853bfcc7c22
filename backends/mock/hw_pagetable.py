"""HW page tables: the HWPT objects and their ioctls (hw_pagetable.c).

A paging HWPT wraps a driver domain built on an IOAS: it holds a users reference on
the IOAS, and its domain is one of the IOAS's io_pagetable domains (filled with every
area). Nested HWPTs and fault queues are answered with the errors the kernel gives
before it would need them, and EOPNOTSUPP past that point. Dirty tracking is
backends.mock.dirty_tracking.
"""

from __future__ import annotations

from errno import EINVAL, ENOENT, EOPNOTSUPP
from typing import TYPE_CHECKING

import uapi_headers as u
from backends.mock import mock_driver
from backends.mock.device import (
    iommufd_get_device,
    iommufd_hw_pagetable_attach,
    iommufd_hw_pagetable_detach,
)
from backends.mock.errors import kerr
from backends.mock.iommu import IOMMU_NO_PASID, IommuDomain, PagingDomain
from backends.mock.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from backends.mock.device import IommufdDevice
    from backends.mock.ioas import IommufdIoas
    from backends.mock.main import IommufdCtx, Ucmd
    from backends.mock.mock_driver import UserData

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
    """``struct iommufd_hwpt_nested``: a stage-1 table on a nest-parent HWPT."""

    obj_type = ObjType.HWPT_NESTED

    def __init__(self, parent: HwptPaging) -> None:
        super().__init__()
        self.parent = parent

    def destroy(self) -> None:
        """iommufd_hwpt_nested_destroy()."""
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


def _hwpt_nested_alloc(ictx: IommufdCtx, parent: HwptPaging, idev: IommufdDevice,
                       flags: int, data_len: int) -> IommufdHwPagetable:
    """iommufd_hwpt_nested_alloc(): the checks before the nested domain."""
    if flags & ~(u.IOMMU_HWPT_FAULT_ID_VALID | u.IOMMU_HWPT_ALLOC_PASID) or not data_len:
        raise kerr(EOPNOTSUPP)
    if parent.auto_domain or not parent.nest_parent:
        raise kerr(EINVAL)
    # Nested mock domains (IOTLB) come with the nesting issue.
    raise kerr(EOPNOTSUPP)


def iommufd_hwpt_alloc(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_ALLOC: a paging HWPT from an IOAS (nested: see _hwpt_nested_alloc)."""
    from backends.mock.ioas import IommufdIoas
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    data_len = int(cmd.data_len)
    if (cmd.data_type == u.IOMMU_HWPT_DATA_NONE) == bool(data_len):
        raise kerr(EINVAL)
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.dev_id))
    try:
        try:
            pt_obj = ictx.get_object(int(cmd.pt_id), ObjType.ANY)
        except OSError:
            raise kerr(EINVAL) from None
        try:
            flags = int(cmd.flags)
            hwpt: IommufdHwPagetable
            if isinstance(pt_obj, IommufdIoas):
                user_data = (mock_driver.UserData(int(cmd.data_type), int(cmd.data_uptr),
                                                  data_len) if data_len else None)
                hwpt = iommufd_hwpt_paging_alloc(ictx, pt_obj, idev, IOMMU_NO_PASID, flags,
                                                 False, user_data)
            elif isinstance(pt_obj, HwptPaging):
                hwpt = _hwpt_nested_alloc(ictx, pt_obj, idev, flags, data_len)
            elif pt_obj.obj_type == ObjType.VIOMMU:
                raise kerr(EOPNOTSUPP)
            else:
                raise kerr(EINVAL)
            try:
                if flags & u.IOMMU_HWPT_FAULT_ID_VALID:
                    fault = ictx.get_object(int(cmd.fault_id), ObjType.FAULT)
                    fault.users += 1
                    hwpt.fault = fault
                    ictx.put_object(fault)
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


def iommufd_hwpt_invalidate(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_INVALIDATE: ``entry_num`` always goes back (0 handled here): a paging
    HWPT or any other non-nested object is EINVAL."""
    cmd = ucmd.cmd
    rc = 0
    if cmd.__reserved:
        rc = EOPNOTSUPP
    elif cmd.entry_num and (not cmd.data_uptr or not cmd.entry_len
                            or cmd.entry_len > 4096
                            or cmd.entry_num > IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX):
        rc = EINVAL
    else:
        ictx = ucmd.ictx
        try:
            pt_obj = ictx.get_object(int(cmd.hwpt_id), ObjType.ANY)
        except OSError as error:
            rc = error.errno or ENOENT
        else:
            if pt_obj.obj_type in (ObjType.HWPT_NESTED, ObjType.VIOMMU):
                rc = EOPNOTSUPP
            else:
                rc = EINVAL
            ictx.put_object(pt_obj)
    cmd.entry_num = 0
    ucmd.respond(u.ffi.sizeof(cmd[0]))
    if rc:
        raise kerr(rc)
    return 0
