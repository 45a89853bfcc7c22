"""The kernel's ``iommufd_ioas`` fixture group (tools/testing/selftests/iommu/iommufd.c).

IOAS semantics on an IOAS with zero, one or two mock domains attached: map / unmap /
copy, the auto-IOVA allocator, reserved and allowed ranges, IOMMU_IOAS_IOVA_RANGES,
access objects (pinning and ACCESS_RW), mappings made by another process, and the
HUGE_PAGES option.

The fixture's HW page table cases (alloc_hwpt_nested, hwpt_attach, get_hw_info) are in
test_iommufd_ioas_hwpt.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from errno import (
    EADDRINUSE,
    EBUSY,
    EEXIST,
    EFAULT,
    EINVAL,
    EMSGSIZE,
    ENODEV,
    ENOENT,
    ENOSPC,
)
from typing import Any

import pytest

import uapi_headers as u
from backends import Backend, Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    IovaRange,
    SelftestGlobals,
    add_reserved,
    check_access_rw,
    check_map,
    create_access,
    dev_check_cache_all,
    dmabuf_get,
    dmabuf_revoke,
    expect_errno,
    hwpt_alloc,
    mock_domain,
    mock_domain_flags,
    new_cmd,
    read_iova_ranges,
    set_default_memory_limit,
    set_temp_memory_limit,
)
from harness.helpers.batch import IoctlBatch, field_link

MOCK_APERTURE_START = u.MOCK_APERTURE_START
MOCK_APERTURE_LAST = u.MOCK_APERTURE_LAST
MOCK_PAGE_SIZE = u.MOCK_PAGE_SIZE
SIZE_MAX = (1 << 64) - 1
UINT64_MAX = (1 << 64) - 1
RANGE_SIZE = u.ffi.sizeof("struct iommu_iova_range")


@dataclass(frozen=True)
class IoasVariant:
    """FIXTURE_VARIANT(iommufd_ioas)."""

    mock_domains: int = 0
    memory_limit: int = 0
    pasid_capable: bool = False


VARIANTS = {
    "no_domain": IoasVariant(),
    "mock_domain": IoasVariant(mock_domains=1, pasid_capable=True),
    "two_mock_domain": IoasVariant(mock_domains=2),
    "mock_domain_limit": IoasVariant(mock_domains=1, memory_limit=16),
}

pytestmark = [
    kselftest.fixture("iommufd_ioas", VARIANTS),
    marks.requires(Features.SELFTEST, reason="the fixture uses IOMMU_TEST_CMD"),
]


@dataclass
class IoasFixture:
    """FIXTURE(iommufd_ioas): what setup leaves for the test (``self`` in the kernel)."""

    fd: Iommufd
    ioas: Ioas
    g: SelftestGlobals
    variant: IoasVariant
    stdev_id: int = 0
    hwpt_id: int = 0
    device_id: int = 0
    base_iova: int = 0
    device_pasid_id: int = 0

    @property
    def ioas_id(self) -> int:
        return self.ioas.id

    @property
    def backend(self) -> Backend:
        return self.fd.backend

    @property
    def page_size(self) -> int:
        return self.g.page_size

    @property
    def buffer(self) -> int:
        return self.g.buffer

    @property
    def buffer_size(self) -> int:
        return self.g.buffer_size


@pytest.fixture(name="self")
def ioas_fixture(iommufd: Iommufd, kglobals: SelftestGlobals,
                 variant: IoasVariant) -> Iterator[IoasFixture]:
    """FIXTURE_SETUP / FIXTURE_TEARDOWN(iommufd_ioas)."""
    fx = IoasFixture(iommufd, Ioas.alloc(iommufd), kglobals, variant)
    # The limit is global to the test driver: a variant shrinks pages.c's batches so small
    # maps take the multi-batch paths; the others make sure a previous case left none.
    if variant.memory_limit:
        set_temp_memory_limit(iommufd, variant.memory_limit)
    else:
        set_default_memory_limit(iommufd)

    for _ in range(variant.mock_domains):
        dom = mock_domain(iommufd, fx.ioas_id)
        fx.stdev_id, fx.hwpt_id, fx.device_id = dom
        dev_check_cache_all(iommufd, fx.device_id, u.IOMMU_TEST_DEV_CACHE_DEFAULT)
        fx.base_iova = MOCK_APERTURE_START

    if variant.pasid_capable:
        fx.device_pasid_id = mock_domain_flags(iommufd, fx.ioas_id,
                                               u.MOCK_FLAGS_DEVICE_PASID).idev_id
    yield fx
    # Before the iommufd fixture closes the fd and runs the pin-leak check, as the
    # kernel's teardown does.
    set_default_memory_limit(iommufd)


def lowest_bit(length: int) -> int:
    """``1 << (ffs(length) - 1)``: the alignment the auto-IOVA allocator must honour."""
    return length & -length


def test_ioas_auto_destroy(self: IoasFixture) -> None:
    pass


def test_ioas_destroy(self: IoasFixture) -> None:
    if self.stdev_id:
        # The HWPT the device is attached to holds the IOAS.
        with expect_errno(EBUSY):
            self.ioas.destroy()
    else:
        self.ioas.destroy()


def test_ioas_area_destroy(self: IoasFixture) -> None:
    # An area alone does not keep the IOAS alive.
    self.ioas.map_fixed(self.buffer, self.page_size, self.base_iova)
    if self.stdev_id:
        with expect_errno(EBUSY):
            self.ioas.destroy()
    else:
        self.ioas.destroy()


def test_ioas_area_auto_destroy(self: IoasFixture) -> None:
    # Closing the fd frees an IOAS holding many areas.
    for i in range(10):
        self.ioas.map_fixed(self.buffer, self.page_size, self.base_iova + i * self.page_size)


def test_area(self: IoasFixture) -> None:
    ioas, page, buf, base = self.ioas, self.page_size, self.buffer, self.base_iova

    for i in range(10):
        with expect_errno(ENOENT):
            ioas.unmap(i * page, page)

    for i in range(10):
        ioas.map_fixed(buf, page, base + i * page)
    for i in range(10):
        ioas.unmap(base + i * page, page)

    # An unmap may not cut an area in two.
    ioas.map_fixed(buf, page * 2, base + 16 * page)
    with expect_errno(ENOENT):
        ioas.unmap(base + 16 * page, page)
    with expect_errno(ENOENT):
        ioas.unmap(base + 17 * page, page)

    # Nor may a fixed map overlap an area, from any side.
    for pages, at in ((2, 16), (1, 16), (1, 17), (2, 15), (3, 15)):
        with expect_errno(EEXIST):
            ioas.map_fixed(buf, page * pages, base + at * page)

    ioas.unmap(0, UINT64_MAX)
    # Unmapping everything also succeeds when nothing is left.
    ioas.unmap(0, UINT64_MAX)


def test_unmap_fully_contained_areas(self: IoasFixture) -> None:
    page = self.page_size
    # Room below the first area even for no_domain, whose base IOVA is 0.
    self.base_iova += 4 * page
    base = self.base_iova

    for i in range(4):
        self.ioas.map_fixed(self.buffer, 8 * page, base + i * 16 * page)

    # A range that only partly covers the first or the last area.
    with expect_errno(ENOENT):
        self.ioas.unmap(base - 4 * page, 8 * page)
    with expect_errno(ENOENT):
        self.ioas.unmap(base + 3 * 16 * page + 8 * page - 4 * page, 8 * page)

    # A range holding whole areas and the holes between them.
    unmapped = self.ioas.unmap(base - 4 * page, 3 * 16 * page + 8 * page + 4 * page)
    assert unmapped == 32 * page


def test_area_auto_iova(self: IoasFixture) -> None:
    ioas, page, buf = self.ioas, self.page_size, self.buffer
    reserved_start, reserved_length = page * 4, page * 100

    iovas = [ioas.map(buf, page) for _ in range(10)]
    for iova in iovas:
        ioas.unmap(iova, page)

    # Auto IOVAs are aligned to the length's lowest set bit.
    lengths = [page * (i + 1) for i in range(10)]
    # Without a domain nothing is pinned, so the kernel test maps a VA it never touches.
    user_va = buf if self.stdev_id else 1 << 31
    iovas = []
    for length in lengths:
        iovas.append(ioas.map(user_va, length))
        assert iovas[-1] % lowest_bit(length) == 0
    for iova, length in zip(iovas, lengths, strict=True):
        ioas.unmap(iova, length)

    # ... and stay out of a reserved range.
    add_reserved(self.fd, self.ioas_id, reserved_start, reserved_length)
    iovas = []
    for length in lengths:
        iovas.append(ioas.map(buf, length))
        assert iovas[-1] % lowest_bit(length) == 0
        assert not reserved_start < iovas[-1] < reserved_start + reserved_length
    for iova, length in zip(iovas, lengths, strict=True):
        ioas.unmap(iova, length)

    # An allowed range may not intersect a reserved one.
    with expect_errno(EADDRINUSE):
        ioas.allow_iovas([(page, page * 600)])

    # Auto IOVAs come from the allowed range.
    if self.stdev_id:
        allowed = (MOCK_APERTURE_START + page, MOCK_APERTURE_START + page * 600 - 1)
    else:
        allowed = (page * 200, page * 600 - 1)
    ioas.allow_iovas([allowed])
    iovas = []
    for length in lengths:
        iova = ioas.map(buf, length)
        iovas.append(iova)
        assert iova % lowest_bit(length) == 0
        assert allowed[0] <= iova <= allowed[1]
        assert iova + length > allowed[0]
        assert iova + length <= allowed[1] + 1
    for iova, length in zip(iovas, lengths, strict=True):
        ioas.unmap(iova, length)


def test_reserved_overflow(self: IoasFixture) -> None:
    # syzbot: a reserved range ending at the top of the IOVA space must not wrap the
    # allocator's hole search (lore.kernel.org/r/685af644.a00a0220.2e5631.0094.GAE@google.com).
    if self.page_size == 4096:
        length, map_len = 0xFFFFFFFFFFFF8001, 0x5000
    else:
        length, map_len = UINT64_MAX - MOCK_PAGE_SIZE * 16, MOCK_PAGE_SIZE * 10
    add_reserved(self.fd, self.ioas_id, 6, length)
    with expect_errno(ENOSPC):
        self.ioas.map(self.buffer, map_len)


def test_area_allowed(self: IoasFixture) -> None:
    page = self.page_size
    allowed = (self.base_iova, self.base_iova + page * 600)
    reserved_start = allowed[0] + page

    # A reserved range may not intersect an allowed one ...
    self.ioas.allow_iovas([allowed])
    with expect_errno(EADDRINUSE):
        add_reserved(self.fd, self.ioas_id, reserved_start, page)
    self.ioas.allow_iovas([])

    # ... nor an allowed range a reserved one.
    add_reserved(self.fd, self.ioas_id, reserved_start, page)
    with expect_errno(EADDRINUSE):
        self.ioas.allow_iovas([allowed])


def test_copy_area(self: IoasFixture) -> None:
    page, base = self.page_size, self.base_iova
    flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_WRITEABLE
    self.ioas.map_fixed(self.buffer, page, base)

    # Within one IOAS.
    self.ioas.copy(base, page, dst_iova=base + page, flags=flags)

    # Into another IOAS.
    other = Ioas.alloc(self.fd)
    self.ioas.copy(base, page, dst=other, dst_iova=0, flags=flags)


def test_iova_ranges(self: IoasFixture) -> None:
    backend, ranges = self.backend, self.buffer
    capacity = self.buffer_size // RANGE_SIZE
    cmd = new_cmd("iommu_ioas_iova_ranges", {
        "ioas_id": self.ioas_id, "num_iovas": capacity, "allowed_iovas": ranges})

    def read(count: int) -> list[IovaRange]:
        return read_iova_ranges(self.fd, ranges, count)

    def memset_ranges() -> None:
        backend.poke(ranges, bytes(self.buffer_size))

    self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
    assert cmd.num_iovas == 1
    if not self.stdev_id:
        assert read(1) == [(0, SIZE_MAX)]
        assert cmd.out_iova_alignment == 1
    else:
        assert read(1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]
        assert cmd.out_iova_alignment == MOCK_PAGE_SIZE

    # Too small a buffer: the count needed comes back, and nothing is written.
    memset_ranges()
    cmd.num_iovas = 0
    with expect_errno(EMSGSIZE):
        self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
    assert cmd.num_iovas == 1
    assert read(1) == [(0, 0)]

    # A reserved page splits the space in two (outside the aperture it changes nothing).
    add_reserved(self.fd, self.ioas_id, self.page_size, self.page_size)
    cmd.num_iovas = capacity
    self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
    if not self.stdev_id:
        assert cmd.num_iovas == 2
        assert read(2) == [(0, self.page_size - 1), (self.page_size * 2, SIZE_MAX)]
    else:
        assert cmd.num_iovas == 1
        assert read(1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]

    # Room for one: the entries that fit are written, the rest are not.
    memset_ranges()
    cmd.num_iovas = 1
    if not self.stdev_id:
        with expect_errno(EMSGSIZE):
            self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
        assert cmd.num_iovas == 2
        assert read(1) == [(0, self.page_size - 1)]
    else:
        self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
        assert cmd.num_iovas == 1
        assert read(1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]
    assert read(2)[1] == (0, 0)


@marks.requires(Features.HUGEPAGES, reason="the buffer is MAP_HUGETLB memory")
def test_access_domain_destory(self: IoasFixture) -> None:
    page = self.page_size
    buf_size = 2 * self.g.hugepage_size
    # MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, as the kernel's test maps.
    buf = self.backend.alloc(buf_size, shared=True, hugetlb=True)
    self.ioas.map_fixed(buf, buf_size, self.base_iova)

    access = create_access(self.fd, self.ioas_id, u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    item = access.pages(self.base_iova + page, page, buf + page)

    # Removing the domain now unpins across a huge page boundary.
    if self.stdev_id:
        self.fd.destroy(self.stdev_id)

    access.destroy_pages(item)
    access.close()
    self.backend.munmap(buf, buf_size)


def test_access_pin(self: IoasFixture) -> None:
    size = self.buffer_size
    access = create_access(self.fd, self.ioas_id, u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)

    for npages in range(1, size // self.page_size):
        length = npages * self.page_size

        pin = (MOCK_APERTURE_START, length, self.buffer)

        # One user.
        self.ioas.map_fixed(self.buffer, size, MOCK_APERTURE_START)
        access.destroy_pages(access.pages(*pin))

        # Two users of the same pages.
        first = access.pages(*pin)
        second = access.pages(*pin)
        access.destroy_pages(second)
        access.destroy_pages(first)

        # A domain added and removed while the pages are pinned by an access.
        item = access.pages(*pin)
        dom = mock_domain(self.fd, self.ioas_id)
        check_map(self.fd, dom.hwpt_id, MOCK_APERTURE_START, size, self.buffer)
        self.fd.destroy(dom.stdev_id)
        access.destroy_pages(item)

        self.ioas.unmap(MOCK_APERTURE_START, size)
    access.close()


def test_access_pin_unmap(self: IoasFixture) -> None:
    size = self.buffer_size
    access = create_access(self.fd, self.ioas_id, u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    self.ioas.map_fixed(self.buffer, size, MOCK_APERTURE_START)
    item = access.pages(MOCK_APERTURE_START, size, self.buffer)

    # The unmap calls the access's unmap op, which drops the item itself.
    self.ioas.unmap(MOCK_APERTURE_START, size)
    with expect_errno(ENOENT):
        access.destroy_pages(item)


def test_access_rw(self: IoasFixture) -> None:
    access = create_access(self.fd, self.ioas_id)
    iova = self.ioas.map(self.buffer, self.buffer_size)
    check_access_rw(self.fd, self.g, access.id, iova, 0)
    check_access_rw(self.fd, self.g, access.id, iova, u.MOCK_ACCESS_RW_SLOW_PATH)
    self.ioas.unmap(iova, self.buffer_size)
    access.close()


def test_access_rw_unaligned(self: IoasFixture) -> None:
    access = create_access(self.fd, self.ioas_id)
    # An IOVA that is only MOCK_PAGE_SIZE aligned, so CPU pages straddle IOVA pages.
    iova = self.base_iova + MOCK_PAGE_SIZE
    self.ioas.map_fixed(self.buffer, self.buffer_size, iova)
    check_access_rw(self.fd, self.g, access.id, iova, 0)
    self.ioas.unmap(iova, self.buffer_size)
    access.close()


def _map_in_child(self: IoasFixture, child: Backend) -> None:
    """test_ioctl_ioas_map_fixed run by ``child`` on the inherited iommufd fd."""
    in_child = Iommufd(child, self.fd.fd)
    Ioas(in_child, self.ioas_id).map_fixed(self.buffer, self.buffer_size,
                                           MOCK_APERTURE_START)


@marks.requires(Features.SELFTEST, Features.FORK, Features.MM_EXIT,
                      reason="needs a second process's mm, which then exits")
def test_fork_gone(self: IoasFixture) -> None:
    access = create_access(self.fd, self.ioas_id)

    # The area's pages belong to the child's mm, which is gone once it exits.
    child = self.backend.fork_child()
    try:
        _map_in_child(self, child)
    finally:
        child.shutdown()

    if self.stdev_id:
        # The existing domain pinned everything while the child lived, so a new domain
        # is filled from it rather than from the dead mm.
        mock_domain(self.fd, self.ioas_id)
        check_access_rw(self.fd, self.g, access.id, MOCK_APERTURE_START, 0)
    else:
        # Nothing was pinned, and the mm to pin from is gone.
        with expect_errno(EFAULT):
            mock_domain(self.fd, self.ioas_id)
    access.close()


@marks.requires(Features.SELFTEST, Features.FORK,
                      reason="needs a second process's mm")
def test_fork_present(self: IoasFixture) -> None:
    access = create_access(self.fd, self.ioas_id)

    # The child maps and stays alive (the kernel test parks it on a pipe) while the
    # parent pins the child's pages through a new domain and reads them.
    child = self.backend.fork_child()
    try:
        _map_in_child(self, child)
        mock_domain(self.fd, self.ioas_id)
        check_access_rw(self.fd, self.g, access.id, MOCK_APERTURE_START, 0)
    finally:
        child.shutdown()
    access.close()


def _option_cmd(self: IoasFixture, op: int, val64: int) -> Any:
    return new_cmd("iommu_option", {"option_id": u.IOMMU_OPTION_HUGE_PAGES, "op": op,
                                    "val64": val64, "object_id": self.ioas_id})


def test_ioas_option_huge_pages(self: IoasFixture) -> None:
    ioctl = self.fd.ioctl
    # A GET must overwrite val64 (seeded with 3, which no option value is).
    cmd = _option_cmd(self, u.IOMMU_OPTION_OP_GET, 3)
    assert ioctl(u.IOMMU_OPTION, cmd) == 0
    assert cmd.val64 == 1

    assert ioctl(u.IOMMU_OPTION, _option_cmd(self, u.IOMMU_OPTION_OP_SET, 0)) == 0

    cmd = _option_cmd(self, u.IOMMU_OPTION_OP_GET, 3)
    assert ioctl(u.IOMMU_OPTION, cmd) == 0
    assert cmd.val64 == 0

    with expect_errno(EINVAL):
        ioctl(u.IOMMU_OPTION, _option_cmd(self, u.IOMMU_OPTION_OP_SET, 2))

    assert ioctl(u.IOMMU_OPTION, _option_cmd(self, u.IOMMU_OPTION_OP_SET, 1)) == 0


def test_ioas_iova_alloc(self: IoasFixture) -> None:
    # 8K iterations: one batch, each unmap taking the IOVA its map got through a link.
    sweep = IoctlBatch(self.fd)
    for length in range(1, self.page_size * 2):
        map_cmd = self.ioas.map_cmd(self.buffer, length)
        # A mock domain maps in MOCK_PAGE_SIZE units and raises the IOAS alignment to it.
        if self.variant.mock_domains and length % MOCK_PAGE_SIZE:
            sweep.ioctl(u.IOMMU_IOAS_MAP, map_cmd, expect=EINVAL)
            continue
        mapped = sweep.ioctl(u.IOMMU_IOAS_MAP, map_cmd)
        unmap_cmd = self.ioas.unmap_cmd(0, length)
        sweep.ioctl(u.IOMMU_IOAS_UNMAP, unmap_cmd,
                    links=(field_link(mapped, map_cmd, "iova", unmap_cmd, "iova"),))
    sweep.run()


def test_ioas_align_change(self: IoasFixture) -> None:
    page, buf, ioas = self.page_size, self.buffer, self.ioas
    # The alignment cannot be raised while a domain and an area both exist.
    if self.variant.mock_domains:
        return

    # Raising the alignment to PAGE_SIZE works while every area is aligned.
    ioas.map_fixed(buf, page, MOCK_APERTURE_START)
    ioas.huge_pages = False

    # A misaligned map is then refused.
    with expect_errno(EINVAL):
        ioas.map_fixed(buf + MOCK_PAGE_SIZE, page, MOCK_APERTURE_START + page)
    ioas.huge_pages = False

    ioas.huge_pages = True

    # With a misaligned area present the alignment cannot go up.
    ioas.map_fixed(buf + MOCK_PAGE_SIZE, page, MOCK_APERTURE_START + page)
    with expect_errno(EADDRINUSE):
        ioas.huge_pages = False

    ioas.unmap(MOCK_APERTURE_START + page, page)
    ioas.unmap(MOCK_APERTURE_START, page)


def test_copy_sweep(self: IoasFixture) -> None:
    length = MOCK_PAGE_SIZE
    flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_WRITEABLE
    dst = Ioas.alloc(self.fd)

    # Without a domain the area can end at any byte; with one it must be page-sized.
    if self.variant.mock_domains:
        last_iova = MOCK_APERTURE_START + self.buffer_size - 1
    else:
        last_iova = MOCK_APERTURE_START + self.buffer_size - 2
    self.ioas.map_fixed(self.buffer, last_iova - MOCK_APERTURE_START + 1, MOCK_APERTURE_START)

    # An odd step, so the copied window starts at every alignment.
    for iova in range(MOCK_APERTURE_START - self.page_size, last_iova + 1, 511):
        if iova < MOCK_APERTURE_START or iova + length - 1 > last_iova:
            with expect_errno(ENOENT):
                self.ioas.copy(iova, length, dst=dst, dst_iova=MOCK_APERTURE_START,
                               flags=flags)
        else:
            self.ioas.copy(iova, length, dst=dst, dst_iova=MOCK_APERTURE_START, flags=flags)
            dst.unmap(MOCK_APERTURE_START, length)

    dst.destroy()


@marks.requires(Features.SELFTEST, Features.DMABUF,
                reason="needs the selftest's dma-buf exporter")
def test_dmabuf_simple(self: IoasFixture) -> None:
    buf_size = 4 * self.page_size
    dfd = dmabuf_get(self.fd, buf_size)
    with expect_errno(EINVAL):
        self.ioas.map_file(dfd, 0, 0)
    with expect_errno(EINVAL):
        self.ioas.map_file(dfd, buf_size, buf_size)
    with expect_errno(EINVAL):
        self.ioas.map_file(dfd, 0, buf_size + 1)
    self.ioas.map_file(dfd, 0, buf_size)
    self.backend.close(dfd)


@marks.requires(Features.SELFTEST, Features.DMABUF,
                reason="needs the selftest's dma-buf exporter")
def test_dmabuf_revoke(self: IoasFixture) -> None:
    buf_size = 4 * self.page_size
    dfd = dmabuf_get(self.fd, buf_size)
    iova = self.ioas.map_file(dfd, 0, buf_size)
    dmabuf_revoke(self.fd, dfd, True)

    if self.variant.mock_domains:
        hwpt_alloc(self.fd, self.device_id, self.ioas_id)

    with expect_errno(ENODEV):
        self.ioas.map_file(dfd, 0, buf_size)

    dmabuf_revoke(self.fd, dfd, False)
    self.ioas.map_file(dfd, 0, buf_size)

    # Put the first mapping back where it was.
    self.ioas.unmap(iova, buf_size)
    self.ioas.map_file(dfd, 0, buf_size, iova=iova)
    self.backend.close(dfd)
