"""The kernel's ``iommufd_viommu`` fixture group (tools/testing/selftests/iommu/iommufd.c).

A vIOMMU over a nest-parent HWPT: its allocation errors and the references it holds,
nested HWPTs on it (with an IOPF fault queue), its mmap region, vDEVICEs with their
virtual IDs and tombstones, vEVENTQs (depth bounds, read sizes, sequence numbers and the
lost-events header), invalidation of the mock device cache by virtual ID, and HW queues
pinning nest-parent memory. The ``no_viommu`` variant has no device: five cases skip,
three check the ENOENTs that leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from errno import EBUSY, EEXIST, EINVAL, EIO, ENOENT, ENXIO, EOPNOTSUPP, EOVERFLOW
from typing import Any

import pytest

import uapi_headers as u
from backends.contract import Features
from harness import kselftest, marks
from harness.helpers import (
    EntryNum,
    Ioas,
    Iommufd,
    SelftestGlobals,
    VeventSequence,
    dev_check_cache,
    dev_check_cache_all,
    expect_errno,
    fault_alloc,
    hw_queue_alloc,
    hwpt_alloc,
    iommufd_mmap,
    mock_domain,
    mock_domain_replace,
    nested_hwpt_alloc,
    read_vevents,
    selftest_hwpt_data,
    set_default_memory_limit,
    trigger_iopf,
    trigger_vevents,
    vdevice_alloc,
    veventq_alloc,
    viommu_alloc,
    viommu_invalidate,
)

SKIP_NO_VIOMMU = "Skipping test for variant no_viommu"
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
VEVENTQ_MAX_DEPTH = 1 << 19
"""The kernel's cap on veventq_depth, as the C test mirrors it."""
HDR_SIZE = u.ffi.sizeof("struct iommufd_vevent_header")
INV = "struct iommu_viommu_invalidate_selftest"
INV_SIZE = u.ffi.sizeof(INV)


@dataclass(frozen=True)
class ViommuVariant:
    """FIXTURE_VARIANT(iommufd_viommu)."""

    viommu: int


VARIANTS = {
    "no_viommu": ViommuVariant(viommu=0),
    "mock_viommu": ViommuVariant(viommu=1),
}

pytestmark = [
    kselftest.fixture("iommufd_viommu", VARIANTS),
    marks.requires(Features.SELFTEST,
                         reason="the vIOMMU is the selftest mock driver's"),
]


@dataclass
class ViommuFixture:
    """FIXTURE(iommufd_viommu): the IDs stay 0 in the no_viommu variant."""

    fd: Iommufd
    ioas_id: int
    stdev_id: int = 0
    hwpt_id: int = 0
    nested_hwpt_id: int = 0
    device_id: int = 0
    viommu_id: int = 0


@pytest.fixture
def self(iommufd: Iommufd, variant: ViommuVariant) -> ViommuFixture:
    """FIXTURE_SETUP(iommufd_viommu): with a vIOMMU, a mock device on the IOAS, a
    nest-parent HWPT, the vIOMMU on it and a nested HWPT on the vIOMMU. The teardown is
    the ``iommufd`` fixture's (teardown_iommufd)."""
    fixture = ViommuFixture(iommufd, Ioas.alloc(iommufd).id)
    set_default_memory_limit(iommufd)
    if variant.viommu:
        fixture.stdev_id, _, fixture.device_id = mock_domain(iommufd, fixture.ioas_id)
        # A nesting parent HWPT, then a vIOMMU taking a reference on it.
        fixture.hwpt_id = hwpt_alloc(iommufd, fixture.device_id, fixture.ioas_id,
                                     u.IOMMU_HWPT_ALLOC_NEST_PARENT)
        fixture.viommu_id = viommu_alloc(iommufd, fixture.device_id, fixture.hwpt_id,
                                         u.IOMMU_VIOMMU_TYPE_SELFTEST)
        fixture.nested_hwpt_id = nested_hwpt_alloc(iommufd, fixture.device_id,
                                                   fixture.viommu_id, selftest_hwpt_data(iommufd))
    return fixture


def test_viommu_auto_destroy(self: ViommuFixture) -> None:
    """Closing the fd destroys the vIOMMU and everything under it."""


def test_viommu_negative_tests(self: ViommuFixture) -> None:
    fd = self.fd
    if self.device_id:
        # An invalid HWPT (hwpt_id 0).
        with expect_errno(ENOENT):
            viommu_alloc(fd, self.device_id, 0, u.IOMMU_VIOMMU_TYPE_SELFTEST)
        # A HWPT that is no nesting parent.
        hwpt_id = hwpt_alloc(fd, self.device_id, self.ioas_id, 0)
        with expect_errno(EINVAL):
            viommu_alloc(fd, self.device_id, hwpt_id, u.IOMMU_VIOMMU_TYPE_SELFTEST)
        fd.destroy(hwpt_id)
        # A vIOMMU type the driver does not have.
        with expect_errno(EOPNOTSUPP):
            viommu_alloc(fd, self.device_id, self.hwpt_id, 0xDEAD)
        with expect_errno(EBUSY):
            fd.destroy(self.hwpt_id)
        with expect_errno(EBUSY):
            fd.destroy(self.viommu_id)
    else:
        with expect_errno(ENOENT):
            viommu_alloc(fd, self.device_id, self.hwpt_id, u.IOMMU_VIOMMU_TYPE_SELFTEST)


def test_viommu_alloc_nested_iopf(self: ViommuFixture) -> None:
    fd = self.fd
    viommu_id, dev_id = self.viommu_id, self.device_id
    if not dev_id:
        pytest.skip(SKIP_NO_VIOMMU)
    data = selftest_hwpt_data(fd)
    fault = fault_alloc(fd)
    with expect_errno(ENOENT):
        nested_hwpt_alloc(fd, dev_id, viommu_id, data, u.IOMMU_HWPT_FAULT_ID_VALID,
                          fault_id=U32_MAX)
    with expect_errno(EOPNOTSUPP):
        nested_hwpt_alloc(fd, dev_id, viommu_id, data,
                          u.IOMMU_HWPT_FAULT_ID_VALID | (1 << 31), fault_id=fault.id)
    iopf_hwpt_id = nested_hwpt_alloc(fd, dev_id, viommu_id, data,
                                     u.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault.id)

    # A vDEVICE must exist before attaching to a nested HWPT of the vIOMMU.
    with expect_errno(ENOENT):
        mock_domain_replace(fd, self.stdev_id, iopf_hwpt_id)
    vdevice_alloc(fd, viommu_id, dev_id, 0x99)
    mock_domain_replace(fd, self.stdev_id, iopf_hwpt_id)
    with expect_errno(EBUSY):
        fd.destroy(iopf_hwpt_id)
    trigger_iopf(fd, dev_id, fault.fd)

    mock_domain_replace(fd, self.stdev_id, self.ioas_id)
    fd.destroy(iopf_hwpt_id)
    fd.backend.close(fault.fd)
    fd.destroy(fault.id)


def test_viommu_alloc_with_data(self: ViommuFixture, kglobals: SelftestGlobals) -> None:
    fd = self.fd
    page_size = kglobals.page_size
    if not self.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    data = u.ffi.new("struct iommu_viommu_selftest *", {"in_data": 0xBEEF})
    self.viommu_id = viommu_alloc(fd, self.device_id, self.hwpt_id,
                                  u.IOMMU_VIOMMU_TYPE_SELFTEST, data)
    assert data.out_data == data.in_data

    # Neither the offset nor the length of the region can be changed.
    length, offset = int(data.out_mmap_length), int(data.out_mmap_offset)
    for bad_length, bad_offset in ((length, offset + page_size),
                                   (length, offset + page_size * 2),
                                   (length // 2, offset),
                                   (length * 2, offset)):
        with expect_errno(ENXIO):
            iommufd_mmap(fd, bad_length, bad_offset)

    # The exact region maps: a loopback of in_data through the driver's page.
    test = iommufd_mmap(fd, length, offset)
    assert int.from_bytes(fd.backend.peek(test, 4), "little") == data.in_data

    # The mapping holds its owner.
    with expect_errno(EBUSY):
        fd.destroy(self.viommu_id)
    fd.backend.munmap(test, length)


def test_vdevice_alloc(self: ViommuFixture) -> None:
    fd = self.fd
    viommu_id, dev_id = self.viommu_id, self.device_id
    backend = fd.backend
    prev_seq = VeventSequence()
    if dev_id:
        # A vDEVICE must exist before attaching to a nested HWPT of the vIOMMU.
        with expect_errno(ENOENT):
            mock_domain_replace(fd, self.stdev_id, self.nested_hwpt_id)

        # The depth's lower and upper bounds.
        with expect_errno(EINVAL):
            veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 0)
        with expect_errno(EINVAL):
            veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST,
                          VEVENTQ_MAX_DEPTH + 1)
        veventq = veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST,
                                VEVENTQ_MAX_DEPTH)
        backend.close(veventq.fd)
        fd.destroy(veventq.id)

        # A vEVENTQ of depth 2, and only one of the type.
        veventq = veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
        with expect_errno(EEXIST):
            veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 2)

        # Read counts below a header, on an empty vEVENTQ.
        with expect_errno(EINVAL):
            backend.read(veventq.fd, 0)
        with expect_errno(EINVAL):
            backend.read(veventq.fd, HDR_SIZE - 1)

        # Virtual ID 0x99, then without it, then 0x88.
        vdev_id = vdevice_alloc(fd, viommu_id, dev_id, 0x99)
        mock_domain_replace(fd, self.stdev_id, self.nested_hwpt_id)
        trigger_vevents(fd, dev_id, 1)

        # Read counts on a non-empty vEVENTQ: below a header, and a header without
        # room for the event's payload.
        with expect_errno(EINVAL):
            backend.read(veventq.fd, 0)
        with expect_errno(EINVAL):
            backend.read(veventq.fd, HDR_SIZE)

        read_vevents(fd, veventq.fd, 1, 0x99, prev_seq)
        with expect_errno(EEXIST):
            vdevice_alloc(fd, viommu_id, dev_id, 0x99)
        mock_domain_replace(fd, self.stdev_id, self.ioas_id)
        fd.destroy(vdev_id)

        # Again with 0x88.
        vdev_id = vdevice_alloc(fd, viommu_id, dev_id, 0x88)
        mock_domain_replace(fd, self.stdev_id, self.nested_hwpt_id)
        # Three events overflow the queue of two.
        trigger_vevents(fd, dev_id, 3)
        with expect_errno(EOVERFLOW):
            read_vevents(fd, veventq.fd, 3, 0x88, prev_seq)
        # Reading cleared the overflow.
        trigger_vevents(fd, dev_id, 1)
        read_vevents(fd, veventq.fd, 1, 0x88, prev_seq)
        backend.close(veventq.fd)
        mock_domain_replace(fd, self.stdev_id, self.ioas_id)
        fd.destroy(vdev_id)
        fd.destroy(veventq.id)
    else:
        with expect_errno(ENOENT):
            vdevice_alloc(fd, viommu_id, dev_id, 0x99)


def _set(req: Any, **fields: int) -> None:
    """Assign some fields of one request; the others keep what the test left there."""
    for name, value in fields.items():
        setattr(req, name, value)


def test_vdevice_cache(self: ViommuFixture) -> None:
    fd = self.fd
    viommu_id, dev_id = self.viommu_id, self.device_id
    inv_reqs = u.ffi.new(f"{INV}[2]")
    selftest = u.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
    default = u.IOMMU_TEST_DEV_CACHE_DEFAULT
    if not dev_id:
        pytest.skip(SKIP_NO_VIOMMU)

    vdev_id = vdevice_alloc(fd, viommu_id, dev_id, 0x99)
    dev_check_cache_all(fd, dev_id, default)

    # A zero-length array probes the data type.
    num = EntryNum(0)
    viommu_invalidate(fd, viommu_id, inv_reqs, INV_SIZE, num)
    assert num.value == 0

    # One request each, refused with nothing handled, in the C test's order: an invalid
    # data type; entry sizes one byte over the struct and of one byte; an invalid flag;
    # no array pointer and no entry length while the array is not empty; an invalid
    # cache_id; an invalid vdev_id.
    negatives: list[tuple[int, bool, int, int, dict[str, int]]] = [
        (EINVAL, True, INV_SIZE, u.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID, {}),
        (EINVAL, True, INV_SIZE + 1, selftest, {}),
        (EINVAL, True, 1, selftest, {}),
        (EOPNOTSUPP, True, INV_SIZE, selftest, {"flags": 0xFFFFFFFF, "vdev_id": 0x99}),
        (EINVAL, False, INV_SIZE, selftest, {"flags": 0, "vdev_id": 0x99}),
        (EINVAL, True, 0, selftest, {"flags": 0, "vdev_id": 0x99}),
        (EINVAL, True, INV_SIZE, selftest,
         {"flags": 0, "vdev_id": 0x99, "cache_id": u.MOCK_DEV_CACHE_ID_MAX + 1}),
        (EINVAL, True, INV_SIZE, selftest, {"flags": 0, "vdev_id": 0x9, "cache_id": 0}),
    ]
    for errno, with_array, entry_len, data_type, fields in negatives:
        num = EntryNum(1)
        _set(inv_reqs[0], **fields)
        with expect_errno(errno):
            viommu_invalidate(fd, viommu_id, inv_reqs if with_array else None, entry_len,
                              num, data_type)
        assert num.value == 0

    # Two requests: the 1st invalidates entry 0, the 2nd fails on its flags, then on
    # its cache_id; one request is handled either way.
    for errno, second in ((EOPNOTSUPP, {"flags": 0xFFFFFFFF, "cache_id": 1}),
                          (EINVAL, {"flags": 0, "cache_id": u.MOCK_DEV_CACHE_ID_MAX + 1})):
        num = EntryNum(2)
        _set(inv_reqs[0], flags=0, vdev_id=0x99, cache_id=0)
        _set(inv_reqs[1], vdev_id=0x99, **second)
        with expect_errno(errno):
            viommu_invalidate(fd, viommu_id, inv_reqs, INV_SIZE, num, selftest)
        assert num.value == 1
        for cache_id, expected in enumerate((0, default, default, default)):
            dev_check_cache(fd, dev_id, cache_id, expected)

    # The 2nd entry.
    num = EntryNum(1)
    _set(inv_reqs[0], flags=0, vdev_id=0x99, cache_id=1)
    viommu_invalidate(fd, viommu_id, inv_reqs, INV_SIZE, num)
    assert num.value == 1
    for cache_id, expected in enumerate((0, 0, default, default)):
        dev_check_cache(fd, dev_id, cache_id, expected)

    # The 3rd and 4th entries.
    num = EntryNum(2)
    _set(inv_reqs[0], flags=0, vdev_id=0x99, cache_id=2)
    _set(inv_reqs[1], flags=0, vdev_id=0x99, cache_id=3)
    viommu_invalidate(fd, viommu_id, inv_reqs, INV_SIZE, num)
    assert num.value == 2
    dev_check_cache_all(fd, dev_id, 0)

    # Every entry of the device at once.
    num = EntryNum(1)
    _set(inv_reqs[0], vdev_id=0x99, flags=u.IOMMU_TEST_INVALIDATE_FLAG_ALL)
    viommu_invalidate(fd, viommu_id, inv_reqs, INV_SIZE, num)
    assert num.value == 1
    dev_check_cache_all(fd, dev_id, 0)
    fd.destroy(vdev_id)


def test_hw_queue(self: ViommuFixture, kglobals: SelftestGlobals) -> None:
    fd = self.fd
    viommu_id = self.viommu_id
    page_size = kglobals.page_size
    selftest = u.IOMMU_HW_QUEUE_TYPE_SELFTEST
    iova = u.MOCK_APERTURE_START
    if not viommu_id:
        pytest.skip(SKIP_NO_VIOMMU)

    # The DEFAULT type.
    with expect_errno(EOPNOTSUPP):
        hw_queue_alloc(fd, viommu_id, u.IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, page_size)
    # The queue's address and length.
    with expect_errno(EINVAL):
        hw_queue_alloc(fd, viommu_id, selftest, 0, iova, 0)
    with expect_errno(EOVERFLOW):
        hw_queue_alloc(fd, viommu_id, selftest, 0, U64_MAX, page_size)
    # An IOVA with nothing mapped.
    with expect_errno(ENOENT):
        hw_queue_alloc(fd, viommu_id, selftest, 0, iova, page_size)

    ioas = Ioas(fd, self.ioas_id)
    iova = ioas.map(kglobals.buffer, page_size)
    iova2 = ioas.map(kglobals.buffer + page_size, page_size)

    # Index 1 before index 0, and index MAX.
    with expect_errno(EIO):
        hw_queue_alloc(fd, viommu_id, selftest, 1, iova, page_size)
    with expect_errno(EINVAL):
        hw_queue_alloc(fd, viommu_id, selftest, u.IOMMU_TEST_HW_QUEUE_MAX, iova, page_size)

    # Index 0 takes the IOVA's page.
    hw_queue_id = [hw_queue_alloc(fd, viommu_id, selftest, 0, iova, page_size), 0]
    with expect_errno(EEXIST):
        hw_queue_alloc(fd, viommu_id, selftest, 0, iova, page_size)
    # Its page cannot be unmapped; the 2nd page is not pinned.
    with expect_errno(EBUSY):
        ioas.unmap(iova, page_size)
    ioas.unmap(iova2, page_size)

    # Index 1, not page aligned.
    hw_queue_id[1] = hw_queue_alloc(fd, viommu_id, selftest, 1, iova + page_size // 2,
                                    page_size // 2)
    # Index 1 depends on index 0.
    with expect_errno(EBUSY):
        fd.destroy(hw_queue_id[0])

    # Destroyed in descending order, the first page can be unmapped.
    fd.destroy(hw_queue_id[1])
    fd.destroy(hw_queue_id[0])
    ioas.unmap(iova, page_size)


def test_vdevice_tombstone(self: ViommuFixture) -> None:
    fd = self.fd
    if not self.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    vdev_id = vdevice_alloc(fd, self.viommu_id, self.device_id, 0x99)
    fd.destroy(self.stdev_id)
    with expect_errno(ENOENT):
        fd.destroy(vdev_id)
