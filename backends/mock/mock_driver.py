"""The selftest mock IOMMU driver: its devices and domains (selftest.c, ``mock_ops``).

- :class:`MockDev` is ``struct mock_dev``: flags (NO_DIRTY, PASID), a device cache of
  4 entries, the domain it is attached to. Each device is its own iommu_group.
- ``domain_alloc_paging_flags`` builds the AMDv1 "mock" page table: 2 KiB pages,
  a 38-bit VA, and for ``MOCK_IOMMUPT_DEFAULT`` the aperture narrowed to
  [MOCK_APERTURE_START, MOCK_APERTURE_LAST]; ``MOCK_IOMMUPT_HUGE`` offers only 1 MiB
  and PAGE_SIZE pages.
- ``attach_dev`` refuses a dirty-tracking domain for a NO_DIRTY device (EINVAL);
  ``set_dev_pasid`` fakes ENOMEM on every second non-blocking set of PASID 1024, so the
  core's rollback of a failed replace can be seen from userspace.
- ``domain_alloc_nested`` builds a :class:`MockNestedDomain` on a paging parent: an
  IOTLB of 4 entries, seeded from ``iommu_hwpt_selftest.iotlb`` and cleared by
  ``cache_invalidate_user`` entry by entry.
"""

from __future__ import annotations

from errno import EINVAL, ENOMEM, EOPNOTSUPP
from typing import TYPE_CHECKING, Any

import uapi_headers as u
from backends.mock.driver import iommufd_viommu_get_vdev_id
from backends.mock.errors import kerr
from backends.mock.fault import (
    DOMAIN_ALLOC,
    HW_INFO_ALLOC,
    MOCK_DEV_ALLOC,
    NESTED_DOMAIN_ALLOC,
)
from backends.mock.iommu import DomainType, IommuDomain, PagingDomain
from backends.mock.mm import PAGE_SIZE

if TYPE_CHECKING:
    from backends.mock.kernel import Kernel
    from backends.mock.uaccess import UserAccess

_PT_GRANULE_LG2SZ = 11
"""The AMDv1 format built for the selftest has 2 KiB leaves at level 0."""
_PT_ITEMS_LG2 = 9
"""A 4 KiB table of 8-byte entries indexes 9 VA bits a level."""
_MOCK_STARTING_LEVEL = 2
MOCK_VA_BITS = _PT_GRANULE_LG2SZ + _PT_ITEMS_LG2 * (_MOCK_STARTING_LEVEL + 1)
"""VA size of the mock table: three levels below the fixed top (amdv1pt_iommu_fmt_init)."""


def _amdv1_mock_pgsize_bitmap() -> int:
    """The generic-PT get_info() of the mock table: each level offers every power of
    two from its item size to its span (amdv1pt_possible_sizes: at most 2^51, never
    512 GiB); sizes of 2^(VA bits - 1) and up are hidden, since a leaf may not cover
    the whole table (generic_pt/iommu_pt.h:1142)."""
    bitmap = 0
    for level in range(_MOCK_STARTING_LEVEL + 1):
        item_lg2 = _PT_GRANULE_LG2SZ + _PT_ITEMS_LG2 * level
        top_lg2 = min(51, item_lg2 + _PT_ITEMS_LG2 - 1)
        bitmap |= ((1 << (top_lg2 + 1)) - 1) & ~((1 << item_lg2) - 1) & ~(1 << 39)
    return bitmap & ((1 << (MOCK_VA_BITS - 1)) - 1)


MOCK_PGSIZE_BITMAP = _amdv1_mock_pgsize_bitmap()
"""Every power of two from 2 KiB up to 2^36 (bits 11..36)."""
MOCK_HUGE_PGSIZE_BITMAP = u.MOCK_HUGE_PAGE_SIZE | PAGE_SIZE

IOMMU_CAP_CACHE_COHERENCY = "cache_coherency"
IOMMU_CAP_DIRTY_TRACKING = "dirty_tracking"
IOMMU_CAP_ENFORCE_CACHE_COHERENCY = "enforce_cache_coherency"
IOMMU_CAP_PCI_ATS_SUPPORTED = "pci_ats_supported"

_VALID_DEV_FLAGS = u.MOCK_FLAGS_DEVICE_NO_DIRTY | u.MOCK_FLAGS_DEVICE_PASID
_PAGING_FLAGS = (u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | u.IOMMU_HWPT_ALLOC_NEST_PARENT
                 | u.IOMMU_HWPT_ALLOC_PASID)


class UserData:
    """``struct iommu_user_data``: driver data the user passed with an allocation."""

    __slots__ = ("len", "type", "uptr")

    def __init__(self, data_type: int, uptr: int, length: int) -> None:
        self.type = data_type
        self.uptr = uptr
        self.len = length


def iommu_copy_struct_from_user(uaccess: UserAccess, ffi_type: str, data: UserData,
                                data_type: int, min_last: str) -> Any:
    """iommu_copy_struct_from_user(): EINVAL for another type or a length outside
    [offsetofend(min_last), sizeof], then copy_struct_from_user (E2BIG/EFAULT)."""
    dst = u.ffi.new(f"{ffi_type} *")
    ksize = u.ffi.sizeof(ffi_type)
    min_len = u.offsetofend(ffi_type, min_last)
    if data.type != data_type:
        raise kerr(EINVAL)
    if data.len < min_len or ksize < data.len:
        raise kerr(EINVAL)
    uaccess.copy_struct_from_user(dst, ksize, data.uptr, data.len)
    return dst


class UserDataArray:
    """``struct iommu_user_data_array``: an array of driver entries in user memory.

    A driver's ``cache_invalidate_user`` sets ``entry_num`` to the entries it handled,
    on success and on error alike; the core reports that count back to userspace.
    """

    __slots__ = ("entry_len", "entry_num", "type", "uptr")

    def __init__(self, data_type: int, uptr: int, entry_len: int, entry_num: int) -> None:
        self.type = data_type
        self.uptr = uptr
        self.entry_len = entry_len
        self.entry_num = entry_num


def iommu_copy_struct_from_user_array(uaccess: UserAccess, ffi_type: str,
                                      array: UserDataArray, data_type: int, index: int,
                                      min_last: str) -> Any:
    """iommu_copy_struct_from_user_array(): entry ``index`` of ``array`` as ``ffi_type``,
    with the length and type rules of :func:`iommu_copy_struct_from_user`."""
    if index >= array.entry_num or not array.entry_num:
        raise kerr(EINVAL)
    entry = UserData(array.type, array.uptr + array.entry_len * index, array.entry_len)
    return iommu_copy_struct_from_user(uaccess, ffi_type, entry, data_type, min_last)


class IommuGroup:
    """``struct iommu_group``: one per mock device (generic_device_group)."""

    _next_id = 0

    def __init__(self) -> None:
        self.id = IommuGroup._next_id
        IommuGroup._next_id += 1
        self.domain: IommuDomain | None = None
        self.owner: object | None = None
        """The DMA owner (iommu_device_claim_dma_owner)."""
        self.devices: list[MockDev] = []
        self.pasid_array: dict[int, Any] = {}
        """``group->pasid_array``: the attach handle of the RID (IOMMU_NO_PASID) and of
        each attached PASID, published only once the driver accepted the domain."""


class MockIommu:
    """The one mock IOMMU instance (``mock_iommu``) and its ops identity."""

    max_pasids = 1 << u.MOCK_PASID_WIDTH

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.blocking_domain = IommuDomain(DomainType.BLOCKED, self)
        self._ida: set[int] = set()

    def ida_alloc(self) -> int:
        """ida_alloc(): the lowest free device number."""
        n = 0
        while n in self._ida:
            n += 1
        self._ida.add(n)
        return n

    def ida_free(self, n: int) -> None:
        """ida_free()."""
        self._ida.discard(n)


def mock_iommu(kernel: Kernel) -> MockIommu:
    """The kernel's mock IOMMU, registered on first use (iommufd_test_init)."""
    if kernel.mock_iommu is None:
        kernel.mock_iommu = MockIommu(kernel)
    iommu: MockIommu = kernel.mock_iommu
    return iommu


class MockDev:
    """``struct mock_dev``."""

    def __init__(self, iommu: MockIommu, flags: int) -> None:
        self.iommu = iommu
        self.flags = flags
        self.id = iommu.ida_alloc()
        self.name = f"iommufd_mock{self.id}"
        self.cache = [u.IOMMU_TEST_DEV_CACHE_DEFAULT] * u.MOCK_DEV_CACHE_NUM
        self.domain: IommuDomain | None = None
        self.viommu: Any = None
        """The ``MockViommu`` of the nested domain the device is attached to."""
        self.vdev_id = 0
        self.pasid_1024_fake_error = False
        self.iopf_refcount = 0
        """Domains with an IOPF handler this device is attached to (RID and PASIDs);
        non-zero means the device sits on the mock IOPF queue."""
        # "pasid-num-bits" decides dev->iommu->max_pasids.
        self.max_pasids = (min(1 << u.MOCK_PASID_WIDTH, iommu.max_pasids)
                           if flags & u.MOCK_FLAGS_DEVICE_PASID else 0)
        self.group = IommuGroup()
        self.group.domain = iommu.blocking_domain
        self.group.devices.append(self)

    def destroy(self) -> None:
        """mock_dev_destroy()."""
        self.iommu.ida_free(self.id)


def mock_dev_create(kernel: Kernel, dev_flags: int) -> MockDev:
    """mock_dev_create(): EINVAL for flags other than NO_DIRTY and PASID."""
    if dev_flags & ~_VALID_DEV_FLAGS:
        raise kerr(EINVAL)
    if kernel.should_fail(MOCK_DEV_ALLOC):
        raise kerr(ENOMEM)
    return MockDev(mock_iommu(kernel), dev_flags)


def mock_domain_capable(dev: MockDev, cap: str) -> bool:
    """mock_domain_capable(): cache coherent; dirty tracking unless NO_DIRTY."""
    if cap == IOMMU_CAP_CACHE_COHERENCY:
        return True
    if cap == IOMMU_CAP_DIRTY_TRACKING:
        return not dev.flags & u.MOCK_FLAGS_DEVICE_NO_DIRTY
    return False


def mock_domain_hw_info(kernel: Kernel, dev: MockDev, data_type: int) -> tuple[bytes, int]:
    """mock_domain_hw_info(): ``struct iommu_test_hw_info`` as IOMMU_HW_INFO_TYPE_SELFTEST."""
    if data_type not in (u.IOMMU_HW_INFO_TYPE_DEFAULT, u.IOMMU_HW_INFO_TYPE_SELFTEST):
        raise kerr(EOPNOTSUPP)
    if kernel.should_fail(HW_INFO_ALLOC):
        raise kerr(ENOMEM)
    info = u.ffi.new("struct iommu_test_hw_info *")
    info.test_reg = u.IOMMU_HW_INFO_SELFTEST_REGVAL
    return bytes(u.ffi.buffer(info)), u.IOMMU_HW_INFO_TYPE_SELFTEST


def mock_domain_alloc_paging_flags(kernel: Kernel, dev: MockDev, flags: int,
                                   user_data: UserData | None) -> PagingDomain:
    """mock_domain_alloc_paging_flags(): EOPNOTSUPP for other flags, for dirty
    tracking on a NO_DIRTY device, or for driver data of another type."""
    has_dirty = bool(flags & u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    if flags & ~_PAGING_FLAGS or (has_dirty and dev.flags & u.MOCK_FLAGS_DEVICE_NO_DIRTY):
        raise kerr(EOPNOTSUPP)
    if user_data is not None and user_data.type not in (u.IOMMU_HWPT_DATA_SELFTEST,
                                                         u.IOMMU_HWPT_DATA_NONE):
        raise kerr(EOPNOTSUPP)
    pagetable_type = u.MOCK_IOMMUPT_DEFAULT
    if user_data is not None:
        cfg = iommu_copy_struct_from_user(
            kernel.uaccess, "struct iommu_hwpt_selftest", user_data,
            u.IOMMU_HWPT_DATA_SELFTEST, "iotlb")
        pagetable_type = int(cfg.pagetable_type)
    return mock_domain_alloc_pgtable(kernel, pagetable_type, flags)


def mock_domain_alloc_pgtable(kernel: Kernel, pagetable_type: int, flags: int) -> PagingDomain:
    """mock_domain_alloc_pgtable()."""
    if kernel.should_fail(DOMAIN_ALLOC):
        raise kerr(ENOMEM)
    iommu = mock_iommu(kernel)
    if pagetable_type == u.MOCK_IOMMUPT_DEFAULT:
        domain = PagingDomain(iommu, MOCK_PGSIZE_BITMAP)
        # The selftests rely on a fixed aperture.
        domain.aperture_start = u.MOCK_APERTURE_START
        domain.aperture_end = u.MOCK_APERTURE_LAST
    elif pagetable_type == u.MOCK_IOMMUPT_HUGE:
        domain = PagingDomain(iommu, MOCK_HUGE_PGSIZE_BITMAP)
        domain.aperture_end = (1 << MOCK_VA_BITS) - 1
    else:
        raise kerr(EOPNOTSUPP)
    domain.dirty_ops = bool(flags & u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    return domain


class MockNestedDomain(IommuDomain):
    """``struct mock_iommu_domain_nested``: a stage-1 domain with a 4-entry IOTLB,
    tagged with the mock vIOMMU it was allocated from (None: from a nest parent)."""

    def __init__(self, owner: Any, iotlb: int) -> None:
        super().__init__(DomainType.NESTED, owner)
        self.mock_viommu: Any = None
        """The ``MockViommu`` this domain was allocated from (None: from a nest parent)."""
        self.iotlb = [iotlb] * u.MOCK_NESTED_DOMAIN_IOTLB_NUM


def mock_domain_alloc_nested(kernel: Kernel, dev: MockDev, parent: IommuDomain, flags: int,
                             user_data: UserData) -> MockNestedDomain:
    """mock_domain_alloc_nested(): only the PASID flag (EOPNOTSUPP); the parent must be a
    paging domain (EINVAL)."""
    if flags & ~u.IOMMU_HWPT_ALLOC_PASID:
        raise kerr(EOPNOTSUPP)
    if not isinstance(parent, PagingDomain):
        raise kerr(EINVAL)
    return mock_domain_alloc_nested_data(kernel, user_data)


def mock_domain_alloc_nested_data(kernel: Kernel, user_data: UserData) -> MockNestedDomain:
    """__mock_domain_alloc_nested(): IOMMU_HWPT_DATA_SELFTEST only (EOPNOTSUPP), its
    ``iotlb`` seeds every IOTLB entry."""
    if user_data.type != u.IOMMU_HWPT_DATA_SELFTEST:
        raise kerr(EOPNOTSUPP)
    cfg = iommu_copy_struct_from_user(kernel.uaccess, "struct iommu_hwpt_selftest",
                                      user_data, u.IOMMU_HWPT_DATA_SELFTEST, "iotlb")
    if kernel.should_fail(NESTED_DOMAIN_ALLOC):
        raise kerr(ENOMEM)
    return MockNestedDomain(mock_iommu(kernel), int(cfg.iotlb))


def mock_domain_cache_invalidate_user(kernel: Kernel, domain: MockNestedDomain,
                                      array: UserDataArray) -> None:
    """mock_domain_cache_invalidate_user(): clear IOTLB entries one request at a time.

    The first bad request (an entry length outside [offsetofend(iotlb_id), sizeof]:
    EINVAL, an unreadable entry: EFAULT, unknown flags: EOPNOTSUPP, ``iotlb_id`` past the
    end: EINVAL) stops the walk; ``array.entry_num`` is left at the number of requests
    handled before it either way.
    """
    processed = 0
    try:
        if array.type != u.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST:
            raise kerr(EINVAL)
        for i in range(array.entry_num):
            inv = iommu_copy_struct_from_user_array(
                kernel.uaccess, "struct iommu_hwpt_invalidate_selftest", array,
                u.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, i, "iotlb_id")
            if inv.flags & ~u.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                raise kerr(EOPNOTSUPP)
            if inv.iotlb_id > u.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX:
                raise kerr(EINVAL)
            if inv.flags & u.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                domain.iotlb = [0] * u.MOCK_NESTED_DOMAIN_IOTLB_NUM
            else:
                domain.iotlb[inv.iotlb_id] = 0
            processed += 1
    finally:
        array.entry_num = processed


def mock_dev_enable_iopf(dev: MockDev, domain: IommuDomain | None) -> None:
    """mock_dev_enable_iopf(): a fault-capable domain adds the device to the IOPF
    queue (counted per attached fault-capable domain)."""
    if domain is None or domain.iopf_handler is None:
        return
    dev.iopf_refcount += 1


def mock_dev_disable_iopf(dev: MockDev, domain: IommuDomain | None) -> None:
    """mock_dev_disable_iopf()."""
    if domain is None or domain.iopf_handler is None:
        return
    dev.iopf_refcount -= 1


def mock_dev_switch_viommu(domain: IommuDomain, dev: MockDev) -> None:
    """The vIOMMU half of mock_domain_nop_attach(): a vIOMMU's nested domain records
    the vIOMMU and the device's virtual ID in the device (ENOENT without a vDEVICE);
    any other domain clears them."""
    new_viommu = None
    vdev_id = 0
    if isinstance(domain, MockNestedDomain) and domain.mock_viommu is not None:
        new_viommu = domain.mock_viommu
        vdev_id = iommufd_viommu_get_vdev_id(new_viommu.core, dev)
    if new_viommu is not dev.viommu:
        dev.viommu = new_viommu
        dev.vdev_id = vdev_id


def mock_domain_nop_attach(domain: IommuDomain, dev: MockDev,
                           old: IommuDomain | None = None) -> None:
    """mock_domain_nop_attach(), the ``attach_dev`` of every mock domain: a dirty-tracking
    domain refuses a NO_DIRTY device (EINVAL); a nested domain of a vIOMMU needs the
    device's vDEVICE there (ENOENT); IOPF enablement follows the domain."""
    if domain.dirty_ops and dev.flags & u.MOCK_FLAGS_DEVICE_NO_DIRTY:
        raise kerr(EINVAL)
    mock_dev_switch_viommu(domain, dev)
    mock_dev_enable_iopf(dev, domain)
    mock_dev_disable_iopf(dev, dev.domain)
    dev.domain = domain


def mock_domain_set_dev_pasid_nop(domain: IommuDomain, dev: MockDev, pasid: int,
                                  old: IommuDomain | None) -> None:
    """mock_domain_set_dev_pasid_nop(), ``set_dev_pasid`` of every mock domain.

    For PASID 1024 a blocked domain clears the fake-error flag, the first other domain
    sets it and the next one clears it and fails with ENOMEM: a replace right after an
    attach fails, and the core must leave the old domain in place.
    """
    if pasid == u.IOMMU_TEST_PASID_RESERVED:
        if domain.type == DomainType.BLOCKED:
            dev.pasid_1024_fake_error = False
        elif dev.pasid_1024_fake_error:
            dev.pasid_1024_fake_error = False
            raise kerr(ENOMEM)
        else:
            dev.pasid_1024_fake_error = True
    mock_dev_enable_iopf(dev, domain)
    mock_dev_disable_iopf(dev, old)
