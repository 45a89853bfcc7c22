"""Bound devices and their attachments (device.c, the device half).

A device is bound to the fd (``iommufd_device_bind``: an ID, a group, DMA ownership)
and attached per (group, PASID) to a HWPT: ``attach`` takes a users reference on the
HWPT, ``replace`` moves the references to the new HWPT only once the driver accepted
it (a failed replace changes nothing), ``detach`` drops them. Attaching to an IOAS
picks an automatic domain: the first compatible auto HWPT of that IOAS, or a new one
that is destroyed again when its last device leaves.
"""

from __future__ import annotations

from errno import EBUSY, EINVAL, ENOMEM, EOPNOTSUPP
from typing import TYPE_CHECKING, cast

import uapi_headers as u
from backends.mock import iommu_group, mock_driver
from backends.mock.errors import kerr
from backends.mock.eventq import iommufd_auto_response_faults
from backends.mock.fault import ATTACH_ALLOC, GROUP_ALLOC, HANDLE_ALLOC
from backends.mock.iommu import IOMMU_NO_PASID
from backends.mock.iommu_group import AttachHandle
from backends.mock.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from backends.mock.hw_pagetable import HwptNested, HwptPaging, IommufdHwPagetable
    from backends.mock.mock_driver import MockDev
    from backends.mock.private import IommufdCtx, Ucmd


class IommufdAttach:
    """``struct iommufd_attach``: the HWPT of one (group, PASID) and its devices."""

    def __init__(self) -> None:
        self.hwpt: IommufdHwPagetable | None = None
        self.device_array: dict[int, IommufdDevice] = {}


class IommufdGroup:
    """``struct iommufd_group``: iommufd's per-iommu_group state in one context."""

    def __init__(self, ictx: IommufdCtx, group: mock_driver.IommuGroup) -> None:
        self.ref = 1
        self.ictx = ictx
        self.group = group
        self.pasid_attach: dict[int, IommufdAttach] = {}

    def put(self) -> None:
        """iommufd_put_group()."""
        self.ref -= 1
        if self.ref:
            return
        self.ictx.kernel.warn_on(bool(self.pasid_attach), "iommufd_group_release")
        if self.ictx.groups.get(self.group.id) is self:
            del self.ictx.groups[self.group.id]


class IommufdDevice(IommufdObject):
    """``struct iommufd_device``: a device bound to the context."""

    obj_type = ObjType.DEVICE

    def __init__(self, ictx: IommufdCtx, dev: MockDev) -> None:
        super().__init__()
        self.ictx = ictx
        self.dev = dev
        self.igroup: IommufdGroup | None = None
        self.enforce_cache_coherency = False
        self.vdev: IommufdObject | None = None
        """The device's vDEVICE (it holds a reference on the device)."""
        self.destroying = False

    def pre_destroy(self) -> None:
        """iommufd_device_pre_destroy(): no new vDEVICE from now on; a live one is
        destroyed and its ID left as a tombstone, so it lets go of the device."""
        self.destroying = True
        vdev = self.vdev
        if vdev is None or self.ictx.objects.load(vdev.id) is not vdev:
            return
        vdev.users += 1
        self.ictx.tombstone_user(vdev)

    def destroy(self) -> None:
        """iommufd_device_destroy(): give back DMA ownership and the group."""
        if self.igroup is None:
            return
        group = self.igroup.group
        if group.owner is self.ictx:
            group.owner = None
        self.igroup.put()
        self.igroup = None


def _get_group(ictx: IommufdCtx, dev: MockDev) -> IommufdGroup:
    """iommufd_get_group(): the context's igroup for the device's iommu_group."""
    igroup = ictx.groups.get(dev.group.id)
    if igroup is not None:
        igroup.ref += 1
        return igroup
    if ictx.kernel.should_fail(GROUP_ALLOC):
        raise kerr(ENOMEM)
    igroup = IommufdGroup(ictx, dev.group)
    ictx.groups[dev.group.id] = igroup
    return igroup


def iommufd_device_bind(ictx: IommufdCtx, dev: MockDev) -> IommufdDevice:
    """iommufd_device_bind(): the caller keeps a users reference until unbind."""
    idev = ictx.object_alloc(IommufdDevice(ictx, dev))
    try:
        if not mock_driver.mock_domain_capable(dev, mock_driver.IOMMU_CAP_CACHE_COHERENCY):
            raise kerr(EINVAL)
        igroup = _get_group(ictx, dev)
        group = dev.group
        if group.owner is not None and group.owner is not ictx:
            igroup.put()
            raise kerr(EBUSY)
        group.owner = ictx
        idev.igroup = igroup
        idev.enforce_cache_coherency = mock_driver.mock_domain_capable(
            dev, mock_driver.IOMMU_CAP_ENFORCE_CACHE_COHERENCY)
    except OSError:
        ictx.object_abort_and_destroy(idev)
        raise
    idev.users += 1
    ictx.object_finalize(idev)
    return idev


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """iommufd_device_unbind()."""
    idev.ictx.destroy_user(idev)


def find_hwpt_paging(hwpt: IommufdHwPagetable | None) -> HwptPaging | None:
    """find_hwpt_paging(): the paging HWPT itself, or a nested HWPT's parent."""
    # The object type, as the kernel's switch on hwpt->obj.type: no import of the
    # HWPT module, which sits above this one.
    if hwpt is None:
        return None
    if hwpt.obj_type == ObjType.HWPT_PAGING:
        return cast("HwptPaging", hwpt)
    if hwpt.obj_type == ObjType.HWPT_NESTED:
        return cast("HwptNested", hwpt).parent
    return None


def iommufd_hw_pagetable_put(ictx: IommufdCtx, hwpt: IommufdHwPagetable) -> None:
    """iommufd_hw_pagetable_put(): an auto domain goes away with its last user."""
    if hwpt.obj_type == ObjType.HWPT_PAGING and cast("HwptPaging", hwpt).auto_domain:
        ictx.put_and_try_destroy(hwpt)
        return
    hwpt.users -= 1


# -- attach / detach / replace ------------------------------------------------

def _pasid_compat(hwpt: IommufdHwPagetable, igroup: IommufdGroup, pasid: int) -> None:
    """iommufd_hwpt_pasid_compat()."""
    if pasid == IOMMU_NO_PASID:
        if not hwpt.pasid_compat and any(p != IOMMU_NO_PASID for p in igroup.pasid_attach):
            raise kerr(EINVAL)
        return
    if not hwpt.pasid_compat:
        raise kerr(EINVAL)
    rid = igroup.pasid_attach.get(IOMMU_NO_PASID)
    if rid is not None and rid.hwpt is not None and not rid.hwpt.pasid_compat:
        raise kerr(EINVAL)


def _new_attach_handle(hwpt: IommufdHwPagetable, idev: IommufdDevice,
                       pasid: int) -> AttachHandle:
    """What attach and replace do before the core: the PASID rules, then a fresh handle
    (the core refuses to reuse one)."""
    assert idev.igroup is not None
    _pasid_compat(hwpt, idev.igroup, pasid)
    if idev.ictx.kernel.should_fail(HANDLE_ALLOC):
        raise kerr(ENOMEM)
    return AttachHandle(idev)


def _hwpt_attach_device(hwpt: IommufdHwPagetable, idev: IommufdDevice, pasid: int) -> None:
    """iommufd_hwpt_attach_device(): a new handle on the group's RID or on one PASID."""
    handle = _new_attach_handle(hwpt, idev, pasid)
    assert hwpt.domain is not None
    if pasid == IOMMU_NO_PASID:
        iommu_group.iommu_attach_group_handle(hwpt.domain, idev.dev.group, handle)
    else:
        iommu_group.iommu_attach_device_pasid(hwpt.domain, idev.dev, pasid, handle)


def _hwpt_detach_device(hwpt: IommufdHwPagetable, idev: IommufdDevice, pasid: int) -> None:
    """iommufd_hwpt_detach_device(): back to the blocking domain, the handle dropped."""
    assert hwpt.domain is not None
    if pasid == IOMMU_NO_PASID:
        iommu_group.iommu_detach_group_handle(idev.dev.group)
    else:
        iommu_group.iommu_detach_device_pasid(hwpt.domain, idev.dev, pasid)


def _hwpt_replace_device(idev: IommufdDevice, pasid: int,
                         hwpt: IommufdHwPagetable) -> None:
    """iommufd_hwpt_replace_device(): the core switches to a new handle; on failure the
    old handle (and domain) stay."""
    handle = _new_attach_handle(hwpt, idev, pasid)
    assert hwpt.domain is not None
    if pasid == IOMMU_NO_PASID:
        iommu_group.iommu_replace_group_handle(idev.dev.group, hwpt.domain, handle)
    else:
        iommu_group.iommu_replace_device_pasid(hwpt.domain, idev.dev, pasid, handle)


def _attach_reserved_iova(idev: IommufdDevice, hwpt_paging: HwptPaging) -> None:
    """iommufd_device_attach_reserved_iova()."""
    hwpt_paging.ioas.iopt.enforce_dev_resv_regions(idev.dev)


def iommufd_hw_pagetable_attach(hwpt: IommufdHwPagetable, idev: IommufdDevice,
                                pasid: int) -> None:
    """iommufd_hw_pagetable_attach(): EBUSY if the device is attached already,
    EINVAL if its group is attached to another HWPT."""
    igroup = idev.igroup
    assert igroup is not None
    hwpt_paging = find_hwpt_paging(hwpt)
    attach_resv = hwpt_paging is not None and pasid == IOMMU_NO_PASID
    attach = igroup.pasid_attach.get(pasid)
    first = attach is None
    if attach is None:
        if idev.ictx.kernel.should_fail(ATTACH_ALLOC):
            raise kerr(ENOMEM)
        attach = IommufdAttach()
    if idev.id in attach.device_array:
        raise kerr(EBUSY)
    if attach.hwpt is not None and attach.hwpt is not hwpt:
        raise kerr(EINVAL)
    if attach_resv:
        assert hwpt_paging is not None
        _attach_reserved_iova(idev, hwpt_paging)
    if first:
        try:
            _hwpt_attach_device(hwpt, idev, pasid)
        except OSError:
            if attach_resv:
                assert hwpt_paging is not None
                hwpt_paging.ioas.iopt.remove_reserved_iova(idev.dev)
            raise
        attach.hwpt = hwpt
        igroup.pasid_attach[pasid] = attach
    hwpt.users += 1
    attach.device_array[idev.id] = idev


def iommufd_hw_pagetable_detach(idev: IommufdDevice, pasid: int) -> IommufdHwPagetable | None:
    """iommufd_hw_pagetable_detach(): returns the HWPT the device left."""
    igroup = idev.igroup
    assert igroup is not None
    attach = igroup.pasid_attach.get(pasid)
    if attach is None:
        return None
    hwpt = attach.hwpt
    assert hwpt is not None
    hwpt_paging = find_hwpt_paging(hwpt)
    attach.device_array.pop(idev.id, None)
    if not attach.device_array:
        _hwpt_detach_device(hwpt, idev, pasid)
        del igroup.pasid_attach[pasid]
        iommufd_auto_response_faults(hwpt, (hwpt, igroup, pasid))
    if hwpt_paging is not None and pasid == IOMMU_NO_PASID:
        hwpt_paging.ioas.iopt.remove_reserved_iova(idev.dev)
    iommufd_hw_pagetable_put(idev.ictx, hwpt)
    return hwpt


def iommufd_device_do_attach(idev: IommufdDevice, pasid: int,
               hwpt: IommufdHwPagetable) -> IommufdHwPagetable | None:
    """iommufd_device_do_attach()."""
    iommufd_hw_pagetable_attach(hwpt, idev, pasid)
    return None


def _group_remove_reserved_iova(igroup: IommufdGroup, hwpt_paging: HwptPaging) -> None:
    attach = igroup.pasid_attach.get(IOMMU_NO_PASID)
    if attach is None:
        return
    for cur in attach.device_array.values():
        hwpt_paging.ioas.iopt.remove_reserved_iova(cur.dev)


def iommufd_device_do_replace(idev: IommufdDevice, pasid: int,
                hwpt: IommufdHwPagetable) -> IommufdHwPagetable | None:
    """iommufd_device_do_replace(): EINVAL when not attached; the same HWPT is a no-op;
    returns the old HWPT for the caller to put."""
    igroup = idev.igroup
    assert igroup is not None
    hwpt_paging = find_hwpt_paging(hwpt)
    attach_resv = hwpt_paging is not None and pasid == IOMMU_NO_PASID
    attach = igroup.pasid_attach.get(pasid)
    if attach is None:
        raise kerr(EINVAL)
    old_hwpt = attach.hwpt
    assert old_hwpt is not None
    if idev.id not in attach.device_array:
        raise kerr(EINVAL)
    if hwpt is old_hwpt:
        return None
    if attach_resv:
        assert hwpt_paging is not None
        old_paging = find_hwpt_paging(old_hwpt)
        try:
            if old_paging is None or hwpt_paging.ioas is not old_paging.ioas:
                for cur in attach.device_array.values():
                    hwpt_paging.ioas.iopt.enforce_dev_resv_regions(cur.dev)
        except OSError:
            _group_remove_reserved_iova(igroup, hwpt_paging)
            raise
    try:
        _hwpt_replace_device(idev, pasid, hwpt)
    except OSError:
        if attach_resv:
            assert hwpt_paging is not None
            _group_remove_reserved_iova(igroup, hwpt_paging)
        raise
    iommufd_auto_response_faults(old_hwpt, (old_hwpt, igroup, pasid))
    old_paging = find_hwpt_paging(old_hwpt)
    if old_paging is not None and pasid == IOMMU_NO_PASID and (
            hwpt_paging is None or hwpt_paging.ioas is not old_paging.ioas):
        _group_remove_reserved_iova(igroup, old_paging)
    attach.hwpt = hwpt
    num_devices = len(attach.device_array)
    # The references held by the device array move to the new HWPT.
    hwpt.users += num_devices
    if num_devices > 1:
        old_hwpt.users -= num_devices - 1
        idev.ictx.kernel.warn_on(old_hwpt.users <= 0, "do_replace: old hwpt freed")
    return old_hwpt


# -- IOMMU_GET_HW_INFO ------------------------------------------------------

def iommufd_get_device(ictx: IommufdCtx, dev_id: int) -> IommufdDevice:
    """iommufd_get_device(): ENOENT unless ``dev_id`` is a device."""
    return cast(IommufdDevice, ictx.get_object(dev_id, ObjType.DEVICE))


def iommufd_get_hw_info(ucmd: Ucmd) -> int:
    """IOMMU_GET_HW_INFO: the driver's info blob (tail of a larger buffer zeroed,
    ``data_len`` set to the kernel's size), capabilities and the PASID width."""
    cmd = ucmd.cmd
    if cmd.flags & ~u.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        raise kerr(EOPNOTSUPP)
    if cmd.__reserved[0] or cmd.__reserved[1] or cmd.__reserved[2]:
        raise kerr(EOPNOTSUPP)
    if not cmd.flags & u.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        cmd.in_data_type = u.IOMMU_HW_INFO_TYPE_DEFAULT
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.dev_id))
    try:
        dev = idev.dev
        data, data_type = mock_driver.mock_domain_hw_info(ictx.kernel, dev,
                                                           int(cmd.in_data_type))
        cmd.out_data_type = data_type
        user_len = int(cmd.data_len)
        uptr = int(cmd.data_uptr)
        copy_len = min(user_len, len(data))
        ucmd.uaccess.copy_to_user(uptr, data[:copy_len])
        if copy_len < user_len:
            ucmd.uaccess.clear_user(uptr + copy_len, user_len - copy_len)
        cmd.data_len = len(data)
        caps = 0
        if mock_driver.mock_domain_capable(dev, mock_driver.IOMMU_CAP_DIRTY_TRACKING):
            caps |= u.IOMMU_HW_CAP_DIRTY_TRACKING
        if not mock_driver.mock_domain_capable(dev, mock_driver.IOMMU_CAP_PCI_ATS_SUPPORTED):
            caps |= u.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
        cmd.out_capabilities = caps
        cmd.out_max_pasid_log2 = dev.max_pasids.bit_length() - 1 if dev.max_pasids else 0
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(idev)
    return 0
