"""vIOMMU, vDEVICE and HW queue objects and their ioctls (viommu.c).

A vIOMMU stands for one physical IOMMU instance as a guest sees it. It wraps a
NEST_PARENT paging HWPT (the shared stage 2), holding a ``users`` reference on it, and
keeps the guest's virtual device IDs (``vdevs``: virt_id -> vDEVICE). On top of it:

- nested HWPTs (``IOMMU_HWPT_ALLOC`` with the vIOMMU as ``pt_id``), whose parent is the
  vIOMMU's stage 2 and which hold a reference on the vIOMMU;
- vDEVICEs: one per device, one per virtual ID; each holds the vIOMMU and the device.
  Destroying the device turns its vDEVICE into a tombstone (its ID answers ENOENT);
- vEVENTQs (eventq.py), one per event type;
- HW queues: guest memory in the nest parent's IOAS, pinned by an internal access that
  locks the area against IOAS_UNMAP (EBUSY) while the queue lives.
"""

from __future__ import annotations

from errno import EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, EOVERFLOW, ERANGE
from itertools import pairwise
from typing import TYPE_CHECKING, cast

import uapi_headers as u
from backends.mock import access as acc
from backends.mock import mock_viommu
from backends.mock.device import iommufd_get_device
from backends.mock.errors import kerr
from backends.mock.fault import HW_QUEUE_PAGES
from backends.mock.hw_pagetable import HwptNested, HwptPaging
from backends.mock.interval_tree import U64_MAX
from backends.mock.iommu import DomainType, PagingDomain
from backends.mock.mm import PAGE_SIZE
from backends.mock.mock_driver import UserData
from backends.mock.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from collections.abc import Callable

    from backends.mock.device import IommufdDevice
    from backends.mock.eventq import IommufdVeventq
    from backends.mock.mock_driver import MockIommu
    from backends.mock.private import IommufdCtx, Ucmd

ULONG_MAX = U64_MAX
INT_MAX = (1 << 31) - 1


class IommufdViommu(IommufdObject):
    """``struct iommufd_viommu``."""

    obj_type = ObjType.VIOMMU

    def __init__(self, ictx: IommufdCtx, hwpt: HwptPaging, viommu_type: int,
                 iommu_dev: MockIommu) -> None:
        super().__init__()
        self.ictx = ictx
        self.hwpt = hwpt
        self.type = viommu_type
        self.iommu_dev = iommu_dev
        self.ops: mock_viommu.MockViommu | None = None
        self.vdevs: dict[int, IommufdVdevice | None] = {}
        """virt_id -> vDEVICE; None while a VDEVICE_ALLOC holds the slot."""
        self.veventqs: list[IommufdVeventq] = []

    def destroy(self) -> None:
        """iommufd_viommu_destroy(): the driver's destroy, then let go of the stage 2."""
        if self.ops is not None:
            self.ops.destroy()
        self.hwpt.users -= 1
        self.vdevs.clear()

    def cache_invalidate(self, data_type: int, uptr: int, entry_len: int,
                         entry_num: int) -> tuple[int, int]:
        """The vIOMMU branch of IOMMU_HWPT_INVALIDATE: the driver's ``cache_invalidate``
        on the user array; returns ``(entries handled, errno or 0)``."""
        if self.ops is None:
            return 0, EOPNOTSUPP
        return self.ops.cache_invalidate(data_type, uptr, entry_len, entry_num)

    def alloc_hwpt_nested(self, idev: IommufdDevice, flags: int,
                          user_data: UserData) -> HwptNested:
        """The vIOMMU branch of IOMMU_HWPT_ALLOC: the device must sit behind this
        vIOMMU's IOMMU instance (EINVAL); the caller finalizes or aborts the HWPT."""
        if iommufd_device_get_iommu_dev(idev) is not self.iommu_dev:
            raise kerr(EINVAL)
        return iommufd_viommu_alloc_hwpt_nested(self, flags, user_data)


class HwptNestedViommu(HwptNested):
    """``struct iommufd_hwpt_nested`` allocated from a vIOMMU: its parent is the
    vIOMMU's stage 2, and the reference it holds is on the vIOMMU."""

    def __init__(self, viommu: IommufdViommu) -> None:
        super().__init__(viommu.hwpt)
        self.viommu = viommu

    def destroy(self) -> None:
        """iommufd_hwpt_nested_destroy()."""
        self._free_domain()
        self.viommu.users -= 1


def iommufd_device_get_iommu_dev(idev: IommufdDevice) -> MockIommu:
    """iommufd_device_get_iommu_dev(): every mock device sits behind the mock IOMMU."""
    return idev.dev.iommu


def iommufd_viommu_alloc_hwpt_nested(viommu: IommufdViommu, flags: int,
                                     user_data: UserData) -> HwptNested:
    """iommufd_viommu_alloc_hwpt_nested(): only FAULT_ID_VALID and PASID are known
    flags, driver data is required (EOPNOTSUPP)."""
    if flags & ~(u.IOMMU_HWPT_FAULT_ID_VALID | u.IOMMU_HWPT_ALLOC_PASID):
        raise kerr(EOPNOTSUPP)
    if not user_data.len or viommu.ops is None:
        raise kerr(EOPNOTSUPP)
    ictx = viommu.ictx
    hwpt = ictx.object_alloc(HwptNestedViommu(viommu))
    hwpt.pasid_compat = bool(flags & u.IOMMU_HWPT_ALLOC_PASID)
    viommu.users += 1
    try:
        domain = viommu.ops.alloc_domain_nested(flags & ~u.IOMMU_HWPT_FAULT_ID_VALID,
                                                user_data)
        hwpt.domain = domain
        domain.iommufd_hwpt = hwpt
        if ictx.kernel.warn_on(domain.type != DomainType.NESTED,
                               "viommu nested domain is not NESTED"):
            raise kerr(EOPNOTSUPP)
    except OSError:
        ictx.object_abort_and_destroy(hwpt)
        raise
    return hwpt


def iommufd_viommu_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_VIOMMU_ALLOC: flags or the DEFAULT type (EOPNOTSUPP), the device
    (ENOENT), a type the driver has (EOPNOTSUPP), a paging HWPT (ENOENT) allocated as
    a nest parent (EINVAL); the vIOMMU holds a reference on that HWPT."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.type == u.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.dev_id))
    try:
        iommu_dev = iommufd_device_get_iommu_dev(idev)
        if not mock_viommu.mock_get_viommu_size(int(cmd.type)):
            raise kerr(EOPNOTSUPP)
        hwpt = cast(HwptPaging, ictx.get_object(int(cmd.hwpt_id), ObjType.HWPT_PAGING))
        try:
            if not hwpt.nest_parent:
                raise kerr(EINVAL)
            viommu = ucmd.object_alloc_ucmd(
                IommufdViommu(ictx, hwpt, int(cmd.type), iommu_dev))
            hwpt.users += 1
            user_data = (UserData(int(cmd.type), int(cmd.data_uptr), int(cmd.data_len))
                         if cmd.data_len else None)
            assert isinstance(hwpt.domain, PagingDomain)
            viommu.ops = mock_viommu.mock_viommu_init(viommu, hwpt.domain, user_data)
            cmd.out_viommu_id = viommu.id
            ucmd.respond(u.ffi.sizeof(cmd[0]))
        finally:
            ictx.put_object(hwpt)
    finally:
        ictx.put_object(idev)
    return 0


# -- vDEVICE --------------------------------------------------------------------------

class IommufdVdevice(IommufdObject):
    """``struct iommufd_vdevice``: device ``idev`` as ``virt_id`` on ``viommu``. It holds
    the vIOMMU and the device (a reference the device's pre_destroy revokes)."""

    obj_type = ObjType.VDEVICE

    def __init__(self, viommu: IommufdViommu, idev: IommufdDevice, virt_id: int) -> None:
        super().__init__()
        self.viommu = viommu
        self.idev = idev
        self.virt_id = virt_id

    def abort(self) -> None:
        """iommufd_vdevice_abort(): leave the ID map (if the slot is ours) and the
        vIOMMU; the device has no vDEVICE any more."""
        vdevs = self.viommu.vdevs
        if self.virt_id in vdevs and vdevs[self.virt_id] is self:
            del vdevs[self.virt_id]
        self.viommu.users -= 1
        self.idev.vdev = None

    def destroy(self) -> None:
        """iommufd_vdevice_destroy(): abort, then give the device back."""
        self.abort()
        self.idev.ictx.put_object(self.idev)


def iommufd_vdevice_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_VDEVICE_ALLOC: the vIOMMU and the device (ENOENT, also for a device being
    destroyed), the same IOMMU instance (EINVAL), one vDEVICE per device and one per
    virtual ID (EEXIST)."""
    cmd = ucmd.cmd
    virt_id = int(cmd.virt_id)
    if virt_id > ULONG_MAX:
        raise kerr(EINVAL)
    ictx = ucmd.ictx
    viommu = cast(IommufdViommu, ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU))
    try:
        idev = iommufd_get_device(ictx, int(cmd.dev_id))
        try:
            if iommufd_device_get_iommu_dev(idev) is not viommu.iommu_dev:
                raise kerr(EINVAL)
            if idev.destroying:
                raise kerr(ENOENT)
            if idev.vdev is not None:
                raise kerr(EEXIST)
            vdev = ictx.object_alloc(IommufdVdevice(viommu, idev, virt_id))
            viommu.users += 1
            idev.vdev = vdev
            try:
                # Reserve the slot; a taken one (even reserved) is EEXIST.
                if virt_id in viommu.vdevs:
                    raise kerr(EEXIST)
                viommu.vdevs[virt_id] = None
                viommu.vdevs[virt_id] = vdev
                cmd.out_vdevice_id = vdev.id
                ucmd.respond(u.ffi.sizeof(cmd[0]))
            except OSError:
                ictx.object_abort_and_destroy(vdev)
                raise
            ictx.object_finalize(vdev)
        except OSError:
            ictx.put_object(idev)
            raise
        # On success the vDEVICE keeps the device reference taken above.
    finally:
        ictx.put_object(viommu)
    return 0


# -- HW queue -------------------------------------------------------------------------

class IommufdHwQueue(IommufdObject):
    """``struct iommufd_hw_queue``: guest queue memory at ``base_addr`` in the nest
    parent, pinned by an internal access for as long as the queue exists."""

    obj_type = ObjType.HW_QUEUE

    def __init__(self) -> None:
        super().__init__()
        self.viommu: IommufdViommu | None = None
        self.access: acc.IommufdAccess | None = None
        self.type = 0
        self.length = 0
        self.base_addr = 0
        self.driver_destroy: Callable[[], None] | None = None
        """The driver's ``hw_queue->destroy``, set once it accepted the queue."""

    def destroy(self) -> None:
        """iommufd_hw_queue_destroy(): the driver first, then unpin and drop the access,
        then the vIOMMU reference."""
        if self.driver_destroy is not None:
            self.driver_destroy()
        if self.access is not None:
            assert self.viommu is not None
            _hw_queue_destroy_access(self.access, self.base_addr, self.length)
        if self.viommu is not None:
            self.viommu.users -= 1


def _pin_range(base_iova: int, length: int) -> tuple[int, int]:
    """The page-aligned IOVA and length that cover ``[base_iova, base_iova+length)``."""
    aligned_iova = base_iova & ~(PAGE_SIZE - 1)
    offset = base_iova - aligned_iova
    return aligned_iova, (offset + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _hw_queue_destroy_access(access: acc.IommufdAccess, base_iova: int,
                             length: int) -> None:
    """iommufd_hw_queue_destroy_access()."""
    aligned_iova, pin_length = _pin_range(base_iova, length)
    acc.iommufd_access_unpin_pages(access, aligned_iova, pin_length)
    acc.iommufd_access_detach(access)
    acc.iommufd_access_destroy(access)


def _hw_queue_alloc_phys(viommu: IommufdViommu, base_iova: int,
                         length: int) -> tuple[acc.IommufdAccess, int]:
    """iommufd_hw_queue_alloc_phys(): pin the queue memory through an internal access
    on the nest parent's IOAS; the pages must be physically contiguous (EFAULT).
    Returns the access and the queue's physical address."""
    aligned_iova, pin_length = _pin_range(base_iova, length)
    if (base_iova - aligned_iova) + length + PAGE_SIZE - 1 > U64_MAX:
        raise kerr(ERANGE)
    # The page-pointer array is one kvzalloc, refused beyond INT_MAX bytes.
    if pin_length // PAGE_SIZE * 8 > INT_MAX or viommu.ictx.kernel.should_fail(HW_QUEUE_PAGES):
        raise kerr(ENOMEM)
    ictx = viommu.ictx
    access = acc.iommufd_access_create_internal(ictx)
    try:
        acc.iommufd_access_attach_internal(access, viommu.hwpt.ioas)
        try:
            pages = acc.iommufd_access_pin_pages(access, aligned_iova, pin_length, 0)
            try:
                for prev, page in pairwise(pages):
                    if page.pfn != prev.pfn + 1:
                        raise kerr(EFAULT)
            except OSError:
                acc.iommufd_access_unpin_pages(access, aligned_iova, pin_length)
                raise
        except OSError:
            acc.iommufd_access_detach(access)
            raise
    except OSError:
        acc.iommufd_access_destroy(access)
        raise
    return access, pages[0].pfn * PAGE_SIZE + (base_iova - aligned_iova)


def iommufd_hw_queue_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_HW_QUEUE_ALLOC: flags/type (EOPNOTSUPP), length (EINVAL), range
    (EOVERFLOW), the vIOMMU (ENOENT), a queue type the driver has (EOPNOTSUPP), the
    pinned memory (ENOENT if unmapped), then the driver's index rules."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.type == u.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    if not cmd.length:
        raise kerr(EINVAL)
    if cmd.nesting_parent_iova + cmd.length - 1 > U64_MAX:
        raise kerr(EOVERFLOW)
    ictx = ucmd.ictx
    viommu = cast(IommufdViommu, ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU))
    try:
        ops = viommu.ops
        if ops is None or not ops.get_hw_queue_size(int(cmd.type)):
            raise kerr(EOPNOTSUPP)
        hw_queue = ucmd.object_alloc_ucmd(IommufdHwQueue())
        access, base_pa = _hw_queue_alloc_phys(viommu, int(cmd.nesting_parent_iova),
                                               int(cmd.length))
        hw_queue.viommu = viommu
        viommu.users += 1
        hw_queue.access = access
        hw_queue.type = int(cmd.type)
        hw_queue.length = int(cmd.length)
        hw_queue.base_addr = int(cmd.nesting_parent_iova)
        ops.hw_queue_init_phys(hw_queue, int(cmd.index), base_pa)
        cmd.out_hw_queue_id = hw_queue.id
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(viommu)
    return 0
