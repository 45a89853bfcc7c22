"""The kernel's ``iommufd_mock_domain`` fixture group (tools/testing/selftests/iommu/iommufd.c).

The data path: the pages a mock domain maps are the user's pages (MD_CHECK_MAP), pins are
counted right (MD_CHECK_REFS) for every start/length at 2 KiB granularity, on anonymous,
THP and memfd memory, with one or two mock domains, while domains come and go, and across
HWPT replacement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from errno import EBUSY, EFAULT, EINVAL, ENOENT, EOPNOTSUPP

import pytest

import uapi_headers as u
from backends.contract import MAP_PRIVATE, PROT_READ, PROT_WRITE, Backend, Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    MockChecks,
    SelftestGlobals,
    create_access,
    dev_check_cache_all,
    expect_errno,
    hwpt_alloc,
    memfd_mmap,
    mock_domain,
    mock_domain_replace,
)

MOCK_PAGE_SIZE = u.MOCK_PAGE_SIZE
MOCK_APERTURE_START = u.MOCK_APERTURE_START


@dataclass(frozen=True)
class MockDomainVariant:
    """FIXTURE_VARIANT(iommufd_mock_domain)."""

    mock_domains: int
    hugepages: bool
    file: bool


VARIANTS = {
    "one_domain": MockDomainVariant(mock_domains=1, hugepages=False, file=False),
    "two_domains": MockDomainVariant(mock_domains=2, hugepages=False, file=False),
    "one_domain_hugepage": MockDomainVariant(mock_domains=1, hugepages=True, file=False),
    "two_domains_hugepage": MockDomainVariant(mock_domains=2, hugepages=True, file=False),
    "one_domain_file": MockDomainVariant(mock_domains=1, hugepages=False, file=True),
    "one_domain_file_hugepage": MockDomainVariant(mock_domains=1, hugepages=True, file=True),
}

pytestmark = [
    kselftest.fixture("iommufd_mock_domain", VARIANTS),
    marks.requires(Features.SELFTEST,
                   reason="mock domains are IOMMU_TEST_CMD devices"),
]


@dataclass
class MockDomainFixture:
    """FIXTURE(iommufd_mock_domain): the fd, its IOAS and up to two mock devices on it."""

    fd: Iommufd
    ioas: Ioas
    stdev_ids: list[int]
    idev_ids: list[int]
    checks: MockChecks
    mmap_buf_size: int
    hugepages: bool

    @property
    def backend(self) -> Backend:
        return self.fd.backend

    @property
    def hwpt_ids(self) -> list[int]:
        """The HWPTs check_mock_iova asks (0: no such domain); tests may swap slot 1."""
        return self.checks.hwpt_ids

    def check_mock_iova(self, uptr: int, iova: int, length: int) -> None:
        """The kernel's check_mock_iova(): every mock domain maps iova to uptr's pages."""
        self.checks.iova(uptr, iova, length)

    def check_refs(self, uptr: int, length: int, refs: int) -> None:
        """The kernel's check_refs() macro."""
        self.checks.refs(uptr, length, refs)

    def mmap_buffer(self) -> int:
        """``mmap(0, mmap_buf_size, RW, self->mmap_flags)``: shared anonymous memory,
        ``MAP_HUGETLB | MAP_POPULATE`` in the hugepage variants."""
        if self.hugepages and not self.backend.has(Features.HUGEPAGES):
            pytest.skip(f"backend {self.backend.spec} lacks {Features.HUGEPAGES}: "
                        "the hugepage variants map MAP_HUGETLB memory")
        return self.backend.alloc(self.mmap_buf_size, shared=True, hugetlb=self.hugepages)


@pytest.fixture
def self(iommufd: Iommufd, variant: MockDomainVariant,
         kglobals: SelftestGlobals) -> MockDomainFixture:
    """FIXTURE_SETUP(iommufd_mock_domain); the teardown is the ``iommufd`` fixture's
    (close, then the pin-leak check), as teardown_iommufd() is the kernel's."""
    ioas = Ioas.alloc(iommufd)
    # Two slots each, as the kernel's arrays: an unused slot stays 0.
    stdev_ids, hwpt_ids, idev_ids = [0, 0], [0, 0], [0, 0]
    for i in range(variant.mock_domains):
        stdev_ids[i], hwpt_ids[i], idev_ids[i] = mock_domain(iommufd, ioas.id)
        # Bound devices start with the default device cache (the kernel checks devs[0]).
        dev_check_cache_all(iommufd, idev_ids[0], u.IOMMU_TEST_DEV_CACHE_DEFAULT)
    if variant.hugepages:
        mmap_buf_size = kglobals.hugepage_size * 2
    else:
        mmap_buf_size = kglobals.page_size * 8
    return MockDomainFixture(iommufd, ioas, stdev_ids, idev_ids, MockChecks(iommufd, hwpt_ids),
                             mmap_buf_size, variant.hugepages)


def _basic_mmap(self: MockDomainFixture, kglobals: SelftestGlobals) -> None:
    page_size = kglobals.page_size
    buf_size = self.mmap_buf_size

    # Simple one page map
    iova = self.ioas.map(kglobals.buffer, page_size)
    self.check_mock_iova(kglobals.buffer, iova, page_size)

    buf = self.mmap_buffer()
    # EFAULT half way through mapping
    self.backend.munmap(buf + buf_size // 2, buf_size // 2)
    with expect_errno(EFAULT):
        self.ioas.map(buf, buf_size)
    # EFAULT on first page
    self.backend.munmap(buf, buf_size // 2)
    with expect_errno(EFAULT):
        self.ioas.map(buf, buf_size)


def _basic_file(self: MockDomainFixture, kglobals: SelftestGlobals) -> None:
    page_size = kglobals.page_size
    buf_size = self.mmap_buf_size

    # Simple one page map
    iova = self.ioas.map_file(kglobals.mfd, 0, page_size)
    self.check_mock_iova(kglobals.mfd_buffer, iova, page_size)

    mfd_tmp, buf = memfd_mmap(self.backend, buf_size)
    # A range past the end of the file ...
    with expect_errno(EINVAL):
        self.ioas.map_file(mfd_tmp, 0, buf_size + 1)
    # ... and a file truncated under its mapping.
    self.backend.ftruncate(mfd_tmp, 0)
    with expect_errno(EINVAL):
        self.ioas.map_file(mfd_tmp, 0, buf_size)
    self.backend.close(mfd_tmp)
    self.backend.munmap(buf, buf_size)


def test_basic(self: MockDomainFixture, variant: MockDomainVariant,
               kglobals: SelftestGlobals) -> None:
    if variant.file:
        _basic_file(self, kglobals)
    else:
        _basic_mmap(self, kglobals)


def test_ro_unshare(self: MockDomainFixture, kglobals: SelftestGlobals) -> None:
    page_size = kglobals.page_size
    fd = self.backend.open("/proc/self/exe", os.O_RDONLY)
    buf = self.backend.mmap(fd, page_size, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE)
    self.backend.close(fd)

    # There have been lots of changes to the "unshare" mechanism in get_user_pages(): a
    # long-term read-only pin of a private file page must take an exclusive copy, so the
    # write after the map may not change the PFN the domain maps.
    iova = self.ioas.map(buf, page_size, flags=u.IOMMU_IOAS_MAP_READABLE)
    self.check_mock_iova(buf, iova, page_size)
    self.backend.poke(buf, b"\x01" * page_size)
    self.check_mock_iova(buf, iova, page_size)
    self.backend.munmap(buf, page_size)


def _all_aligns(self: MockDomainFixture, variant: MockDomainVariant, page_size: int,
                *, add_domain: bool) -> None:
    """all_aligns / all_aligns_copy: map every (start, end) of a fresh buffer, check the
    mock domains and the pins, unmap; with ``add_domain`` a temporary mock domain is
    attached while each area exists.

    Hugepage variants step by buf_size/16 and start ``end`` at buf_size, so (as in the
    kernel, "less for hugepage case as it takes so long") their inner loop never runs and
    only the refs-0 checks of the whole hugetlb buffer remain.
    """
    buf_size = self.mmap_buf_size
    step = buf_size // 16 if variant.hugepages else MOCK_PAGE_SIZE
    mfd = -1
    if variant.file:
        mfd, buf = memfd_mmap(self.backend, buf_size)
    else:
        buf = self.mmap_buffer()
    self.check_refs(buf, buf_size, 0)

    for start in range(0, buf_size, step):
        first_end = buf_size if variant.hugepages else start + MOCK_PAGE_SIZE
        page_start = start // page_size * page_size
        for end in range(first_end, buf_size, MOCK_PAGE_SIZE):
            length = end - start
            if variant.file:
                iova = self.ioas.map_file(mfd, start, length)
            else:
                iova = self.ioas.map(buf + start, length)
            if add_domain:
                # Add and destroy a domain while the area exists
                old_id = self.hwpt_ids[1]
                dom = mock_domain(self.fd, self.ioas.id)
                self.hwpt_ids[1] = dom.hwpt_id
            self.check_mock_iova(buf + start, iova, length)
            # Each PAGE_SIZE page touched by [start, end) is pinned exactly once.
            self.check_refs(buf + page_start, end // page_size * page_size - page_start, 1)
            if add_domain:
                self.fd.destroy(dom.stdev_id)
                self.hwpt_ids[1] = old_id
            self.ioas.unmap(iova, length)

    self.check_refs(buf, buf_size, 0)
    self.backend.munmap(buf, buf_size)
    if variant.file:
        self.backend.close(mfd)


def test_all_aligns(self: MockDomainFixture, variant: MockDomainVariant,
                    kglobals: SelftestGlobals) -> None:
    _all_aligns(self, variant, kglobals.page_size, add_domain=False)


def test_all_aligns_copy(self: MockDomainFixture, variant: MockDomainVariant,
                         kglobals: SelftestGlobals) -> None:
    _all_aligns(self, variant, kglobals.page_size, add_domain=True)


def test_user_copy(self: MockDomainFixture, variant: MockDomainVariant,
                   kglobals: SelftestGlobals) -> None:
    buffer_size = kglobals.buffer_size
    buf = kglobals.mfd_buffer if variant.file else kglobals.buffer

    def map_whole_buffer(ioas: Ioas) -> int:
        if variant.file:
            return ioas.map_file(kglobals.mfd, 0, buffer_size)
        return ioas.map(buf, buffer_size)

    # Pin the pages in an IOAS with no domains then copy to an IOAS with domains
    ioas = Ioas.alloc(self.fd)
    src_iova = map_whole_buffer(ioas)
    access = create_access(self.fd, ioas.id, u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    access.pages(src_iova, buffer_size, buf)
    ioas.copy(src_iova, buffer_size, dst=self.ioas, dst_iova=MOCK_APERTURE_START)
    self.check_mock_iova(buf, MOCK_APERTURE_START, buffer_size)

    # Now replace the ioas with a new one
    new_ioas = Ioas.alloc(self.fd)
    src_iova = map_whole_buffer(new_ioas)
    access.replace_ioas(new_ioas.id)

    # Destroy the old ioas and cleanup copied mapping
    self.ioas.unmap(MOCK_APERTURE_START, buffer_size)
    ioas.destroy()

    # Then run the same test again with the new ioas
    pages_id = access.pages(src_iova, buffer_size, buf)
    new_ioas.copy(src_iova, buffer_size, dst=self.ioas, dst_iova=MOCK_APERTURE_START)
    self.check_mock_iova(buf, MOCK_APERTURE_START, buffer_size)

    access.destroy_pages(pages_id)
    access.close()
    new_ioas.destroy()


def test_replace(self: MockDomainFixture, variant: MockDomainVariant) -> None:
    stdev_id = self.stdev_ids[0]
    ioas = Ioas.alloc(self.fd)
    mock_domain_replace(self.fd, stdev_id, ioas.id)

    # Replacing the IOAS causes the prior HWPT to be deallocated, thus we should get
    # ENOENT when we try to use it.
    if variant.mock_domains == 1:
        with expect_errno(ENOENT):
            mock_domain_replace(self.fd, stdev_id, self.hwpt_ids[0])

    mock_domain_replace(self.fd, stdev_id, ioas.id)
    if variant.mock_domains >= 2:
        mock_domain_replace(self.fd, stdev_id, self.hwpt_ids[1])
        mock_domain_replace(self.fd, stdev_id, self.hwpt_ids[1])
        mock_domain_replace(self.fd, stdev_id, self.hwpt_ids[0])

    mock_domain_replace(self.fd, stdev_id, self.ioas.id)
    ioas.destroy()


def test_alloc_hwpt(self: MockDomainFixture, variant: MockDomainVariant) -> None:
    fd = self.fd
    # ~IOMMU_HWPT_ALLOC_NEST_PARENT as the kernel's __u32 flags: every other bit set.
    bad_flags = ~u.IOMMU_HWPT_ALLOC_NEST_PARENT & 0xFFFFFFFF
    for i in range(variant.mock_domains):
        idev_id, stdev_id = self.idev_ids[i], self.stdev_ids[i]
        with expect_errno(EOPNOTSUPP):
            hwpt_alloc(fd, idev_id, self.ioas.id, bad_flags)
        hwpt = hwpt_alloc(fd, idev_id, self.ioas.id, 0)
        nest_parent = hwpt_alloc(fd, idev_id, self.ioas.id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)

        # Do a hw_pagetable rotation test
        mock_domain_replace(fd, stdev_id, hwpt)
        with expect_errno(EBUSY):
            fd.destroy(hwpt)
        mock_domain_replace(fd, stdev_id, nest_parent)
        with expect_errno(EBUSY):
            fd.destroy(nest_parent)
        mock_domain_replace(fd, stdev_id, self.ioas.id)
        fd.destroy(nest_parent)

        # A new mock device can attach to a user-allocated HWPT directly.
        dom = mock_domain(fd, hwpt)
        fd.destroy(dom.stdev_id)
        fd.destroy(hwpt)
