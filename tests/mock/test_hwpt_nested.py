"""Nested HWPTs, their IOTLB invalidation and PASID attachments on the mock.

The ported cases (iommufd_ioas.*.alloc_hwpt_nested, iommufd_device_pasid.*) also take an
IOPF through a fault queue and allocate on a vIOMMU, which the mock models elsewhere; here
their other phases run on the mock alone, with the model's WARN_ONs checked, plus what
the kernel's core guarantees around a failed PASID replace.
"""

from __future__ import annotations

from errno import EBUSY, EFAULT, EINVAL, ENOENT, ENOMEM

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from harness.helpers import (
    Ioas,
    Iommufd,
    SelftestGlobals,
    expect_errno,
    hwpt_alloc,
    hwpt_check_iotlb,
    hwpt_check_iotlb_all,
    mock_domain,
    mock_domain_flags,
    mock_domain_replace,
)
from harness.helpers.device import get_hw_info
from harness.helpers.hwpt import Invalidated, hwpt_invalidate, selftest_hwpt_data
from tests.iommufd.test_iommufd_device_pasid import (
    VARIANTS as PASID_VARIANTS,
)
from tests.iommufd.test_iommufd_device_pasid import (
    alloc_hwpts,
    attach_rules,
    replace_rules,
    setup,
)
from tests.iommufd.test_iommufd_ioas import VARIANTS as IOAS_VARIANTS
from tests.iommufd.test_iommufd_ioas import IoasFixture
from tests.iommufd.test_iommufd_ioas_hwpt import invalidate_rules


@pytest.fixture
def fd(be: MockBackend) -> Iommufd:
    """An open /dev/iommu on the mock."""
    return Iommufd.open(be)


def _ioas_mock_domain(fd: Iommufd) -> IoasFixture:
    """iommufd_ioas.mock_domain's setup."""
    fx = IoasFixture(fd, Ioas.alloc(fd), SelftestGlobals.create(fd.backend),
                     IOAS_VARIANTS["mock_domain"])
    fx.stdev_id, fx.hwpt_id, fx.device_id = mock_domain(fd, fx.ioas_id)
    fx.device_pasid_id = mock_domain_flags(fd, fx.ioas_id, u.MOCK_FLAGS_DEVICE_PASID).idev_id
    return fx


def _nested(fd: Iommufd, dev: int, parent: int) -> int:
    data = selftest_hwpt_data(fd)
    return hwpt_alloc(fd, dev, parent, 0, data_type=u.IOMMU_HWPT_DATA_SELFTEST,
                      data_uptr=data.addr, data_len=data.entry_size)


def test_nested_hwpts_invalidate_and_replace(fd: Iommufd) -> None:
    self = _ioas_mock_domain(fd)
    parent = hwpt_alloc(fd, self.device_id, self.ioas_id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested_ids = [_nested(fd, self.device_id, parent) for _ in range(2)]
    hwpt_check_iotlb_all(fd, nested_ids[0], u.IOMMU_TEST_IOTLB_DEFAULT)
    with expect_errno(EBUSY):
        fd.destroy(parent)
    invalidate_rules(self, parent, nested_ids)
    mock_domain_replace(fd, self.stdev_id, nested_ids[0])
    with expect_errno(EBUSY):
        fd.destroy(nested_ids[0])
    mock_domain_replace(fd, self.stdev_id, nested_ids[1])
    fd.destroy(nested_ids[0])
    mock_domain_replace(fd, self.stdev_id, parent)
    fd.destroy(nested_ids[1])
    mock_domain_replace(fd, self.stdev_id, self.ioas_id)
    fd.destroy(parent)
    # MD_CHECK_IOTLB needs a nested mock HWPT: a paging one is no such object.
    with expect_errno(ENOENT):
        hwpt_check_iotlb_all(fd, self.hwpt_id, 0)


def test_fault_id_names_no_fault_queue(fd: Iommufd) -> None:
    self = _ioas_mock_domain(fd)
    parent = hwpt_alloc(fd, self.device_id, self.ioas_id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    data = selftest_hwpt_data(fd)
    for fault_id in (0xFFFFFFFF, parent, self.ioas_id):
        with expect_errno(ENOENT):
            hwpt_alloc(fd, self.device_id, parent, u.IOMMU_HWPT_FAULT_ID_VALID,
                       data_type=u.IOMMU_HWPT_DATA_SELFTEST, data_uptr=data.addr,
                       data_len=data.entry_size, fault_id=fault_id)
    # The aborted HWPTs let go of their parent.
    mock_domain_replace(fd, self.stdev_id, self.ioas_id)
    fd.destroy(parent)


@pytest.mark.parametrize("variant_name", list(PASID_VARIANTS))
def test_pasid_rules(fd: Iommufd, variant_name: str) -> None:
    variant = PASID_VARIANTS[variant_name]
    self = setup(fd, variant)
    self.detach(100)
    h = alloc_hwpts(self, with_viommu=False)
    attach_rules(self, variant, h)
    replace_rules(self, h)
    mock_domain_replace(fd, self.stdev_id, self.ioas_id)


def test_failed_pasid_replace_keeps_every_reference(fd: Iommufd) -> None:
    """After the PASID 1024 ENOMEM the old HWPT is still held by the attachment and the
    new one is not: the new one can be destroyed, the old one only after detach."""
    self = setup(fd, PASID_VARIANTS["has_pasid"])
    h = alloc_hwpts(self, with_viommu=False)
    mock_domain_replace(fd, self.stdev_id, h.s2)
    pasid = u.IOMMU_TEST_PASID_RESERVED
    self.attach(pasid, h.s2)
    with expect_errno(ENOMEM):
        self.replace(pasid, h.nested[0])
    self.check(pasid, h.s2)
    fd.destroy(h.nested[0])
    # The flag was cleared by the failure: the next replace goes through.
    self.replace(pasid, h.nested[1])
    self.check(pasid, h.nested[1])
    with expect_errno(EBUSY):
        fd.destroy(h.nested[1])
    self.detach(pasid)
    self.check(pasid, 0)
    fd.destroy(h.nested[1])
    # A PASID beyond the device's 20 bits is EINVAL from the core.
    with expect_errno(EINVAL):
        self.attach(1 << u.MOCK_PASID_WIDTH, h.s2)
    mock_domain_replace(fd, self.stdev_id, self.ioas_id)


def test_hw_info_capabilities(fd: Iommufd) -> None:
    """out_capabilities: DIRTY_TRACKING unless the device is NO_DIRTY; the mock driver
    never reports ATS support, so ATS_NOT_SUPPORTED is always set (device.c)."""
    ioas = Ioas.alloc(fd)
    dirty = mock_domain_flags(fd, ioas.id, 0).idev_id
    no_dirty = mock_domain_flags(fd, ioas.id, u.MOCK_FLAGS_DEVICE_NO_DIRTY).idev_id
    ats = u.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
    assert get_hw_info(fd, dirty).capabilities == u.IOMMU_HW_CAP_DIRTY_TRACKING | ats
    assert get_hw_info(fd, no_dirty).capabilities == ats


def test_invalidate_stops_at_an_unreadable_entry(fd: Iommufd) -> None:
    """Entry 1 lies on an unmapped page: EFAULT, with entry 0 handled and reported."""
    self = _ioas_mock_domain(fd)
    parent = hwpt_alloc(fd, self.device_id, self.ioas_id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested = _nested(fd, self.device_id, parent)
    backend, page = fd.backend, fd.backend.page_size
    entry = u.ffi.sizeof("struct iommu_hwpt_invalidate_selftest")
    mem = backend.alloc(2 * page)
    backend.munmap(mem + page, page)
    backend.poke(mem + page - entry, bytes(entry))  # flags 0, iotlb_id 0
    assert hwpt_invalidate(fd, nested, mem + page - entry, u.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
                           entry, 2) == Invalidated(EFAULT, 1)
    hwpt_check_iotlb(fd, nested, 0, 0)
    hwpt_check_iotlb(fd, nested, 1, u.IOMMU_TEST_IOTLB_DEFAULT)
