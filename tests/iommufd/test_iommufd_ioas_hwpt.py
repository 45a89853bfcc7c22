"""The kernel's ``iommufd_ioas`` cases on HW page tables (tools/testing/selftests/iommu/iommufd.c).

Same fixture and variants as test_iommufd_ioas.py: alloc_hwpt_nested (every HWPT_ALLOC
errno rule, two nested HWPTs on one nest parent, the IOTLB invalidation array with its
written-back ``entry_num``, replace between nested HWPTs, an IOPF through a fault-queue
HWPT), hwpt_attach (a mock device attached straight to a HWPT) and get_hw_info (the
selftest data type, the user-buffer length rules and ``out_max_pasid_log2``).
"""

from __future__ import annotations

from errno import EBUSY, EFAULT, EINVAL, ENOENT, EOPNOTSUPP

import pytest

import uapi_headers as u
from backends import Features
from harness import kselftest, marks
from harness.helpers import (
    expect_errno,
    hwpt_alloc,
    hwpt_check_iotlb,
    hwpt_check_iotlb_all,
    mock_domain,
    mock_domain_replace,
)
from harness.helpers.device import get_hw_info, hw_info_buffer
from harness.helpers.hwpt import (
    Invalidated,
    hwpt_invalidate,
    invalidate_requests,
    selftest_hwpt_data,
)
from harness.helpers.viommu import fault_alloc, trigger_iopf

from .test_iommufd_ioas import VARIANTS, IoasFixture, IoasVariant, ioas_fixture

__all__ = ["ioas_fixture"]  # the fixture is shared with test_iommufd_ioas.py

pytestmark = [
    kselftest.fixture("iommufd_ioas", VARIANTS),
    marks.requires(Features.SELFTEST, reason="the fixture uses IOMMU_TEST_CMD"),
]

UINT32_MAX = (1 << 32) - 1
INVALIDATE_ENTRY_NUM_MAX = 1 << 19
"""hw_pagetable.c's cap on entry_num (the C test defines it locally)."""
SELFTEST = u.IOMMU_HWPT_DATA_SELFTEST
INV_SELFTEST = u.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
IOTLB_DEFAULT = u.IOMMU_TEST_IOTLB_DEFAULT
IOTLB_ID_MAX = u.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX


def _alloc_hwpt_nested_no_device(self: IoasFixture) -> None:
    """Without a device every allocation and replace names ID 0: ENOENT."""
    fd = self.fd
    data = selftest_hwpt_data(fd)
    with expect_errno(ENOENT):
        hwpt_alloc(fd, self.device_id, self.ioas_id)
    for _ in range(2):
        with expect_errno(ENOENT):
            hwpt_alloc(fd, self.device_id, 0, 0, data_type=SELFTEST, data_uptr=data.addr,
                       data_len=data.entry_size)
    for _ in range(2):
        with expect_errno(ENOENT):
            mock_domain_replace(fd, self.stdev_id, 0)


def test_alloc_hwpt_nested(self: IoasFixture) -> None:
    if not self.device_id:
        _alloc_hwpt_nested_no_device(self)
        return
    if not self.backend.has(Features.FAULT_QUEUE):
        pytest.skip(f"backend {self.backend.spec} lacks {Features.FAULT_QUEUE}: the case "
                    "allocates a fault queue and answers an IOPF through it")
    fd, dev, ioas = self.fd, self.device_id, self.ioas_id
    data = selftest_hwpt_data(fd)
    size = data.entry_size
    min_data_len = u.offsetofend("struct iommu_hwpt_selftest", "iotlb")

    # HWPT_ALLOC's own rules.
    with expect_errno(ENOENT):
        hwpt_alloc(fd, ioas, dev)  # dev_id is an IOAS
    with expect_errno(EINVAL):
        hwpt_alloc(fd, dev, dev)  # pt_id is a device
    with expect_errno(EOPNOTSUPP):
        hwpt_alloc(fd, dev, ioas, u.IOMMU_HWPT_ALLOC_NEST_PARENT | u.IOMMU_HWPT_FAULT_ID_VALID)
    parent = hwpt_alloc(fd, dev, ioas, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    parent_not_work = hwpt_alloc(fd, dev, ioas, 0)

    def nested(pt_id: int, flags: int = 0, *, data_type: int = SELFTEST,
               uptr: int = data.addr, length: int = size, fault_id: int = 0) -> int:
        return hwpt_alloc(fd, dev, pt_id, flags, data_type=data_type, data_uptr=uptr,
                          data_len=length, fault_id=fault_id)

    # Nested allocation rules.
    with expect_errno(EINVAL):
        nested(parent, data_type=u.IOMMU_HWPT_DATA_NONE)
    with expect_errno(EOPNOTSUPP):
        nested(parent, data_type=SELFTEST + 1)
    with expect_errno(EINVAL):
        nested(parent, length=min_data_len - 1)
    with expect_errno(EFAULT):
        nested(parent, uptr=0)
    with expect_errno(EOPNOTSUPP):
        nested(parent, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    with expect_errno(EINVAL):
        nested(parent_not_work)

    # Two nested HWPTs sharing one parent, and one reporting IOPFs to a fault queue.
    queue = fault_alloc(fd)
    nested_ids = [nested(parent), nested(parent)]
    with expect_errno(ENOENT):
        nested(parent, u.IOMMU_HWPT_FAULT_ID_VALID, fault_id=UINT32_MAX)
    iopf_hwpt = nested(parent, u.IOMMU_HWPT_FAULT_ID_VALID, fault_id=queue.id)
    hwpt_check_iotlb_all(fd, nested_ids[0], IOTLB_DEFAULT)
    hwpt_check_iotlb_all(fd, nested_ids[1], IOTLB_DEFAULT)

    with expect_errno(EINVAL):
        nested(nested_ids[0])  # nested on nested
    with expect_errno(EBUSY):
        fd.destroy(parent)  # its children hold it

    invalidate_rules(self, parent, nested_ids)

    # Attach, switch between the nested HWPTs, take an IOPF through the fault queue.
    mock_domain_replace(fd, self.stdev_id, nested_ids[0])
    with expect_errno(EBUSY):
        fd.destroy(nested_ids[0])
    mock_domain_replace(fd, self.stdev_id, nested_ids[1])
    with expect_errno(EBUSY):
        fd.destroy(nested_ids[1])
    fd.destroy(nested_ids[0])
    mock_domain_replace(fd, self.stdev_id, iopf_hwpt)
    with expect_errno(EBUSY):
        fd.destroy(iopf_hwpt)
    trigger_iopf(fd, dev, queue.fd)

    mock_domain_replace(fd, self.stdev_id, parent)
    fd.destroy(nested_ids[1])
    fd.destroy(iopf_hwpt)
    mock_domain_replace(fd, self.stdev_id, ioas)
    fd.destroy(parent)
    fd.destroy(parent_not_work)
    self.backend.close(queue.fd)
    fd.destroy(queue.id)


def invalidate_rules(self: IoasFixture, parent: int, nested_ids: list[int]) -> None:
    """alloc_hwpt_nested's IOMMU_HWPT_INVALIDATE part: the errno and the ``entry_num``
    written back for each call, then the IOTLB entries each call left."""
    fd = self.fd
    reqs = invalidate_requests(fd, 2)
    entry = reqs.entry_size
    first = nested_ids[0]

    def invalidate(hwpt_id: int, num: int, *, data_type: int = INV_SELFTEST,
                   entry_len: int = entry, uptr: int = reqs.addr) -> Invalidated:
        return hwpt_invalidate(fd, hwpt_id, uptr, data_type, entry_len, num, reqs)

    def check_iotlbs(expected: list[int]) -> None:
        for iotlb_id, value in enumerate(expected):
            hwpt_check_iotlb(fd, first, iotlb_id, value)

    # A paging parent has no caches to invalidate.
    assert invalidate(parent, 1) == Invalidated(EINVAL, 0)
    # An empty array probes the data type.
    assert invalidate(first, 0) == Invalidated(0, 0)
    assert invalidate(first, 1, data_type=u.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID) \
        == Invalidated(EINVAL, 0)
    assert invalidate(first, 1, entry_len=entry + 1) == Invalidated(EINVAL, 0)
    assert invalidate(first, 1, entry_len=1) == Invalidated(EINVAL, 0)
    assert invalidate(first, 1, entry_len=self.page_size + 1) == Invalidated(EINVAL, 0)
    assert invalidate(first, INVALIDATE_ENTRY_NUM_MAX + 1) == Invalidated(EINVAL, 0)
    reqs[0].flags = 0xFFFFFFFF
    assert invalidate(first, 1) == Invalidated(EOPNOTSUPP, 0)
    reqs[0].flags = 0
    assert invalidate(first, 1, uptr=0) == Invalidated(EINVAL, 0)
    assert invalidate(first, 1, entry_len=0) == Invalidated(EINVAL, 0)
    reqs[0].iotlb_id = IOTLB_ID_MAX + 1
    assert invalidate(first, 1) == Invalidated(EINVAL, 0)

    # The first request is handled, the second one fails: entry_num says 1.
    reqs[0].flags, reqs[0].iotlb_id = 0, 0
    reqs[1].flags, reqs[1].iotlb_id = 0xFFFFFFFF, 1
    assert invalidate(first, 2) == Invalidated(EOPNOTSUPP, 1)
    check_iotlbs([0, IOTLB_DEFAULT, IOTLB_DEFAULT, IOTLB_DEFAULT])
    reqs[1].flags, reqs[1].iotlb_id = 0, IOTLB_ID_MAX + 1
    assert invalidate(first, 2) == Invalidated(EINVAL, 1)
    check_iotlbs([0, IOTLB_DEFAULT, IOTLB_DEFAULT, IOTLB_DEFAULT])

    reqs[0].flags, reqs[0].iotlb_id = 0, 1
    assert invalidate(first, 1) == Invalidated(0, 1)
    check_iotlbs([0, 0, IOTLB_DEFAULT, IOTLB_DEFAULT])
    reqs[0].flags, reqs[0].iotlb_id = 0, 2
    reqs[1].flags, reqs[1].iotlb_id = 0, 3
    assert invalidate(first, 2) == Invalidated(0, 2)
    hwpt_check_iotlb_all(fd, first, 0)

    # FLAG_ALL clears every entry whatever the iotlb_id.
    reqs[0].flags = u.IOMMU_TEST_INVALIDATE_FLAG_ALL
    assert invalidate(nested_ids[1], 1) == Invalidated(0, 1)
    hwpt_check_iotlb_all(fd, nested_ids[1], 0)


def test_hwpt_attach(self: IoasFixture) -> None:
    # A device attached directly to a HWPT.
    if self.stdev_id:
        mock_domain(self.fd, self.hwpt_id)
    else:
        with expect_errno(ENOENT):
            mock_domain(self.fd, self.hwpt_id)


def test_get_hw_info(self: IoasFixture, variant: IoasVariant) -> None:
    fd = self.fd
    exact_len = u.ffi.sizeof("struct iommu_test_hw_info")
    larger_len = exact_len + 8  # the C test's struct with a trailing u64
    exact = hw_info_buffer(fd, exact_len)
    larger = hw_info_buffer(fd, larger_len)
    default = u.IOMMU_HW_INFO_TYPE_DEFAULT
    if not self.device_id:
        with expect_errno(ENOENT):
            get_hw_info(fd, self.device_id, default, exact, exact_len)
        with expect_errno(ENOENT):
            get_hw_info(fd, self.device_id, default, larger, larger_len)
        return

    dev = self.device_id
    get_hw_info(fd, dev, default, 0, 0)  # no user buffer
    get_hw_info(fd, dev, default, exact, exact_len)
    with expect_errno(EOPNOTSUPP):
        get_hw_info(fd, dev, u.IOMMU_HW_INFO_TYPE_SELFTEST + 1, exact, exact_len)
    get_hw_info(fd, dev, u.IOMMU_HW_INFO_TYPE_SELFTEST, exact, exact_len)
    # A larger buffer gets its tail zeroed (get_hw_info asserts it).
    get_hw_info(fd, dev, default, larger, larger_len)
    # A smaller one still gets the fields it covers.
    get_hw_info(fd, dev, default, exact,
                u.offsetofend("struct iommu_test_hw_info", "flags"))
    assert get_hw_info(fd, dev).max_pasid_log2 == 0
    if variant.pasid_capable:
        assert get_hw_info(fd, self.device_pasid_id).max_pasid_log2 == u.MOCK_PASID_WIDTH
