"""Attaching a device to a HWPT or an IOAS, replacing and detaching it (device.c's
iommufd_device_attach / _replace / _detach).

Apart from backends.mock.device because attaching to an IOAS allocates an automatic
paging HWPT (hw_pagetable's iommufd_hwpt_paging_alloc), while that allocation attaches
the device through device.py in immediate mode: in C the two files call each other
through iommufd_private.h; here the entry points sit above both.
"""

from __future__ import annotations

from collections.abc import Callable
from errno import EINVAL
from typing import TYPE_CHECKING, cast

from backends.mock.device import (
    iommufd_device_do_attach,
    iommufd_device_do_replace,
    iommufd_hw_pagetable_detach,
    iommufd_hw_pagetable_put,
)
from backends.mock.errors import kerr
from backends.mock.hw_pagetable import iommufd_hwpt_paging_alloc
from backends.mock.objects import ObjType

if TYPE_CHECKING:
    from backends.mock.device import IommufdDevice
    from backends.mock.hw_pagetable import IommufdHwPagetable
    from backends.mock.ioas import IommufdIoas

AttachFn = Callable[["IommufdDevice", int, "IommufdHwPagetable"], "IommufdHwPagetable | None"]


def _auto_get_domain(idev: IommufdDevice, pasid: int, ioas: IommufdIoas,
                     do_attach: AttachFn) -> tuple[IommufdHwPagetable | None, int]:
    """iommufd_device_auto_get_domain(): reuse a compatible auto domain of the IOAS
    (EINVAL means incompatible: try the next), else allocate one."""
    ictx = idev.ictx
    immediate_attach = do_attach is iommufd_device_do_attach
    for hwpt_paging in list(ioas.hwpt_list):
        if not hwpt_paging.auto_domain or hwpt_paging.users == 0:
            continue
        hwpt_paging.users += 1
        try:
            destroy_hwpt = do_attach(idev, pasid, hwpt_paging)
        except OSError as error:
            ictx.put_object(hwpt_paging)
            if error.errno == EINVAL:
                continue
            raise
        ictx.put_object(hwpt_paging)
        return destroy_hwpt, hwpt_paging.id
    hwpt_paging = iommufd_hwpt_paging_alloc(ictx, ioas, idev, pasid, 0, immediate_attach,
                                            None)
    destroy_hwpt = None
    if not immediate_attach:
        try:
            destroy_hwpt = do_attach(idev, pasid, hwpt_paging)
        except OSError:
            ictx.object_abort_and_destroy(hwpt_paging)
            raise
    hwpt_paging.auto_domain = True
    ictx.object_finalize(hwpt_paging)
    return destroy_hwpt, hwpt_paging.id


def _change_pt(idev: IommufdDevice, pasid: int, pt_id: int, do_attach: AttachFn) -> int:
    """iommufd_device_change_pt(): ``pt_id`` is a HWPT or an IOAS (auto domain)."""
    ictx = idev.ictx
    pt_obj = ictx.get_object(pt_id, ObjType.ANY)
    try:
        if pt_obj.obj_type in (ObjType.HWPT_PAGING, ObjType.HWPT_NESTED):
            destroy_hwpt = do_attach(idev, pasid, cast("IommufdHwPagetable", pt_obj))
        elif pt_obj.obj_type == ObjType.IOAS:
            destroy_hwpt, pt_id = _auto_get_domain(idev, pasid, cast("IommufdIoas", pt_obj),
                                                   do_attach)
        else:
            raise kerr(EINVAL)
    finally:
        ictx.put_object(pt_obj)
    if destroy_hwpt is not None:
        iommufd_hw_pagetable_put(ictx, destroy_hwpt)
    return pt_id


def iommufd_device_attach(idev: IommufdDevice, pasid: int, pt_id: int) -> int:
    """iommufd_device_attach(): returns the HWPT ID the device is now attached to."""
    pt_id = _change_pt(idev, pasid, pt_id, iommufd_device_do_attach)
    idev.users += 1
    return pt_id


def iommufd_device_replace(idev: IommufdDevice, pasid: int, pt_id: int) -> int:
    """iommufd_device_replace(): detach + attach, or no change at all on failure."""
    return _change_pt(idev, pasid, pt_id, iommufd_device_do_replace)


def iommufd_device_detach(idev: IommufdDevice, pasid: int) -> None:
    """iommufd_device_detach(): back to blocking DMA."""
    if iommufd_hw_pagetable_detach(idev, pasid) is not None:
        idev.users -= 1
