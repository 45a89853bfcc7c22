"""The kernel's ``iommufd_dirty_tracking`` fixture group (tools/testing/selftests/iommu/iommufd.c).

Dirty tracking on mock domains: who may have it (DIRTY_TRACKING HWPTs refuse NO_DIRTY
devices at attach, NO_DIRTY devices cannot allocate them), turning it on and off (also
with the HWPT attached on a PASID), the capability bit, and GET_DIRTY_BITMAP with and
without NO_CLEAR over buffers from 8 KiB to 128 MiB, with the bitmap page aligned,
2 KiB into a page and at an odd byte offset. Dirty bits are seeded with
IOMMU_TEST_OP_DIRTY; the bitmap must show every dirtied PTE whole: 4 KiB (CPU pages,
with huge pages disabled on the IOAS) or 1 MiB (the huge mock page table over huge
pages).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from errno import EINVAL, EOPNOTSUPP

import pytest

import uapi_headers as u
from backends.contract import Backend, Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    SelftestGlobals,
    expect_errno,
    hwpt_alloc,
    mock_domain,
    mock_domain_flags,
    option_set,
)
from harness.helpers.dirty import (
    check_mock_dirty_bitmaps,
    get_hw_capabilities,
    hwpt_alloc_iommupt,
    pasid_attach,
    pasid_detach,
    set_dirty_tracking,
)

MOCK_PAGE_SIZE = u.MOCK_PAGE_SIZE
MOCK_APERTURE_START = u.MOCK_APERTURE_START
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class DirtyTrackingVariant:
    """FIXTURE_VARIANT(iommufd_dirty_tracking)."""

    buffer_size: int
    hugepages: bool = False


VARIANTS = {
    "domain_dirty8k": DirtyTrackingVariant(8 * KiB),        # half of a u8 bitmap
    "domain_dirty16k": DirtyTrackingVariant(16 * KiB),      # one u8
    "domain_dirty64k": DirtyTrackingVariant(64 * KiB),      # one u32
    "domain_dirty128k": DirtyTrackingVariant(128 * KiB),    # one u64
    "domain_dirty320k": DirtyTrackingVariant(320 * KiB),    # two u64 and a tail
    "domain_dirty64M": DirtyTrackingVariant(64 * MiB),      # a 4 KiB bitmap
    "domain_dirty64M_huge": DirtyTrackingVariant(64 * MiB, hugepages=True),
    "domain_dirty128M": DirtyTrackingVariant(128 * MiB),    # an 8 KiB bitmap
    "domain_dirty128M_huge": DirtyTrackingVariant(128 * MiB, hugepages=True),
}

pytestmark = [
    kselftest.fixture("iommufd_dirty_tracking", VARIANTS),
    marks.requires(Features.SELFTEST, reason="dirty tracking is the mock driver's"),
]


@dataclass
class DirtyTrackingFixture:
    """FIXTURE(iommufd_dirty_tracking)."""

    fd: Iommufd
    ioas: Ioas
    stdev_id: int
    hwpt_id: int
    idev_id: int
    page_size: int
    bitmap_size: int
    """In bits: one per MOCK_PAGE_SIZE of the buffer."""
    bitmap: int
    buffer: int


def _alloc_buffer(backend: Backend, variant: DirtyTrackingVariant,
                  kglobals: SelftestGlobals) -> tuple[int, int]:
    """The test buffer: shared anonymous memory, aligned to HUGEPAGE_SIZE; with huge
    pages at least one huge page of it. Returns (address, mapped length)."""
    size = variant.buffer_size
    if variant.hugepages:
        if not backend.has(Features.HUGEPAGES):
            pytest.skip(f"backend {backend.spec} lacks {Features.HUGEPAGES}")
        size = max(size, kglobals.hugepage_size)
    # MAP_HUGETLB | MAP_POPULATE, as the kernel's test maps it.
    addr = backend.alloc(size, align=kglobals.hugepage_size, shared=True,
                         hugetlb=variant.hugepages)
    return addr, size


@pytest.fixture
def self(iommufd: Iommufd, variant: DirtyTrackingVariant,
         kglobals: SelftestGlobals) -> Iterator[DirtyTrackingFixture]:
    """FIXTURE_SETUP / FIXTURE_TEARDOWN(iommufd_dirty_tracking); the close and pin check
    of teardown_iommufd() are the ``iommufd`` fixture's."""
    if variant.buffer_size < MOCK_PAGE_SIZE:
        pytest.skip(f"Skipping buffer_size={variant.buffer_size}, less than "
                    f"MOCK_PAGE_SIZE={MOCK_PAGE_SIZE}")
    backend = iommufd.backend
    buffer, buffer_len = _alloc_buffer(backend, variant, kglobals)
    page_size = MOCK_PAGE_SIZE
    bitmap_size = variant.buffer_size // page_size
    # One extra page for the bitmaps that start inside it; private heap memory in C.
    bitmap_len = -(-bitmap_size // 8) + kglobals.page_size
    bitmap = backend.alloc(bitmap_len, align=kglobals.page_size, shared=False)
    try:
        ioas = Ioas.alloc(iommufd)
        # Without huge pages the IOAS maps CPU pages one by one: each covers several
        # MOCK_PAGE_SIZE entries, all reported dirty together.
        if not variant.hugepages:
            option_set(iommufd, u.IOMMU_OPTION_HUGE_PAGES, 0, ioas.id)
        stdev_id, hwpt_id, idev_id = mock_domain(iommufd, ioas.id)
        yield DirtyTrackingFixture(iommufd, ioas, stdev_id, hwpt_id, idev_id, page_size,
                                   bitmap_size, bitmap, buffer)
    finally:
        backend.munmap(buffer, buffer_len)
        backend.munmap(bitmap, bitmap_len)


def test_enforce_dirty(self: DirtyTrackingFixture) -> None:
    fd = self.fd
    dev_flags = u.MOCK_FLAGS_DEVICE_NO_DIRTY

    # Regular case
    hwpt_id = hwpt_alloc(fd, self.idev_id, self.ioas.id, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev_id = mock_domain(fd, hwpt_id).stdev_id
    with expect_errno(EINVAL):
        mock_domain_flags(fd, hwpt_id, dev_flags)
    fd.destroy(stddev_id)
    fd.destroy(hwpt_id)

    # IOMMU device does not support dirty tracking
    ioas_id = fd.ioas_alloc()
    stddev_id, _hwpt_id, idev_id = mock_domain_flags(fd, ioas_id, dev_flags)
    with expect_errno(EOPNOTSUPP):
        hwpt_alloc(fd, idev_id, ioas_id, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    fd.destroy(stddev_id)


def test_set_dirty_tracking(self: DirtyTrackingFixture) -> None:
    fd = self.fd
    hwpt_id = hwpt_alloc(fd, self.idev_id, self.ioas.id, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev_id = mock_domain(fd, hwpt_id).stdev_id
    set_dirty_tracking(fd, hwpt_id, True)
    set_dirty_tracking(fd, hwpt_id, False)

    fd.destroy(stddev_id)
    fd.destroy(hwpt_id)


def test_pasid_set_dirty_tracking(self: DirtyTrackingFixture) -> None:
    fd = self.fd
    pasid = 100
    dev_flags = u.MOCK_FLAGS_DEVICE_PASID

    # Regular case
    hwpt_id = hwpt_alloc(fd, self.idev_id, self.ioas.id,
                         u.IOMMU_HWPT_ALLOC_PASID | u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev_id = mock_domain_flags(fd, hwpt_id, dev_flags).stdev_id
    pasid_attach(fd, stddev_id, pasid, hwpt_id)
    set_dirty_tracking(fd, hwpt_id, True)
    set_dirty_tracking(fd, hwpt_id, False)
    pasid_detach(fd, stddev_id, pasid)

    fd.destroy(stddev_id)

    # IOMMU device does not support dirty tracking
    dev_flags |= u.MOCK_FLAGS_DEVICE_NO_DIRTY
    ioas_id = fd.ioas_alloc()
    stddev_id = mock_domain_flags(fd, ioas_id, dev_flags).stdev_id
    # The EINVAL is the PASID compatibility rule (the RID sits on an auto HWPT, never
    # PASID-compatible), not dirty tracking: on the 7.3.4 guest the same NO_DIRTY device
    # with its RID on a PASID-compatible HWPT PASID-attaches this dirty HWPT fine.
    with expect_errno(EINVAL):
        pasid_attach(fd, stddev_id, pasid, hwpt_id)

    fd.destroy(stddev_id)
    fd.destroy(hwpt_id)


def test_device_dirty_capability(self: DirtyTrackingFixture) -> None:
    fd = self.fd
    hwpt_id = hwpt_alloc(fd, self.idev_id, self.ioas.id, 0)
    stddev_id = mock_domain(fd, hwpt_id).stdev_id
    caps = get_hw_capabilities(fd, self.idev_id)
    assert caps & u.IOMMU_HW_CAP_DIRTY_TRACKING == u.IOMMU_HW_CAP_DIRTY_TRACKING

    fd.destroy(stddev_id)
    fd.destroy(hwpt_id)


def _get_dirty_bitmap(self: DirtyTrackingFixture, variant: DirtyTrackingVariant,
                      kglobals: SelftestGlobals, flags: int) -> None:
    """get_dirty_bitmap and get_dirty_bitmap_no_clear: the same steps, their flags."""
    fd = self.fd
    # The PTE size each dirtied IOVA is reported at.
    page_size = u.MOCK_HUGE_PAGE_SIZE if variant.hugepages else kglobals.page_size

    self.ioas.map_fixed(self.buffer, variant.buffer_size, MOCK_APERTURE_START)
    iommupt = u.MOCK_IOMMUPT_HUGE if variant.hugepages else u.MOCK_IOMMUPT_DEFAULT
    hwpt_id = hwpt_alloc_iommupt(fd, self.idev_id, self.ioas.id,
                                 u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING, iommupt)

    set_dirty_tracking(fd, hwpt_id, True)

    # Page aligned, PAGE_SIZE unaligned and u64 unaligned bitmaps.
    for offset in (0, MOCK_PAGE_SIZE, 0xFF1):
        check_mock_dirty_bitmaps(fd, hwpt_id, variant.buffer_size, MOCK_APERTURE_START,
                                 self.page_size, page_size, self.bitmap + offset,
                                 self.bitmap_size, flags)

    fd.destroy(hwpt_id)


def test_get_dirty_bitmap(self: DirtyTrackingFixture, variant: DirtyTrackingVariant,
                          kglobals: SelftestGlobals) -> None:
    _get_dirty_bitmap(self, variant, kglobals, 0)


def test_get_dirty_bitmap_no_clear(self: DirtyTrackingFixture, variant: DirtyTrackingVariant,
                                   kglobals: SelftestGlobals) -> None:
    _get_dirty_bitmap(self, variant, kglobals, u.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)
