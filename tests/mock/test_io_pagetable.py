"""The IO page table: IOVA allocation, reserved/allowed ranges, map/unmap/copy rules."""

from __future__ import annotations

from errno import EADDRINUSE, EEXIST, EINVAL, EMSGSIZE, ENOENT, ENOSPC, EOVERFLOW

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of, new

HPAGE = 2 * 1024 * 1024


@pytest.mark.parametrize("length", [1, 4096, 5000, 3 * 4096, 64 * 4096, 4 * HPAGE])
def test_auto_iova_alignment_rule(fd: Fd, length: int) -> None:
    ioas = fd.ioas()
    va = 1 << 31
    iova = fd.map(ioas, va, length)
    expect = min(1 << (length - 1).bit_length(), va & -va, HPAGE)
    assert iova % expect == 0
    assert iova >= PAGE_SIZE  # never IOVA 0


def test_auto_iova_keeps_the_page_offset(fd: Fd) -> None:
    ioas = fd.ioas()
    iova = fd.map(ioas, (1 << 31) + 512, 1024)
    assert iova % PAGE_SIZE == 512


def test_auto_iova_avoids_reserved_and_honours_allowed(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    fd.add_reserved(ioas, PAGE_SIZE, 100 * PAGE_SIZE)
    for i in range(1, 8):
        iova = fd.map(ioas, 1 << 31, i * PAGE_SIZE)
        assert not PAGE_SIZE <= iova < 101 * PAGE_SIZE
    ranges = be.alloc(4096)
    be.poke(ranges, (200 * PAGE_SIZE).to_bytes(8, "little")
            + (300 * PAGE_SIZE - 1).to_bytes(8, "little"))
    fd.unmap(ioas, 0, U64_MAX)
    fd.ioctl(u.IOMMU_IOAS_ALLOW_IOVAS, new("iommu_ioas_allow_iovas", ioas_id=ioas,
                                            num_iovas=1, allowed_iovas=ranges))
    iova = fd.map(ioas, 1 << 31, 8 * PAGE_SIZE)
    assert 200 * PAGE_SIZE <= iova and iova + 8 * PAGE_SIZE <= 300 * PAGE_SIZE
    assert errno_of(fd.map, ioas, 1 << 31, 200 * PAGE_SIZE) == ENOSPC


def test_allowed_and_reserved_exclude_each_other(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    ranges = be.alloc(4096)
    be.poke(ranges, (0x10000).to_bytes(8, "little") + (0x1FFFF).to_bytes(8, "little"))
    allow = new("iommu_ioas_allow_iovas", ioas_id=ioas, num_iovas=1, allowed_iovas=ranges)
    fd.ioctl(u.IOMMU_IOAS_ALLOW_IOVAS, allow)
    assert errno_of(fd.add_reserved, ioas, 0x18000, 0x1000) == EADDRINUSE
    allow.num_iovas = 0
    fd.ioctl(u.IOMMU_IOAS_ALLOW_IOVAS, allow)
    fd.add_reserved(ioas, 0x18000, 0x1000)
    allow.num_iovas = 1
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_ALLOW_IOVAS, allow) == EADDRINUSE
    # Bad or overlapping ranges are EINVAL before anything changes.
    be.poke(ranges, (5).to_bytes(8, "little") + (5).to_bytes(8, "little"))
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_ALLOW_IOVAS, allow) == EINVAL
    assert errno_of(fd.add_reserved, ioas, 0, 0) == EINVAL
    assert errno_of(fd.add_reserved, ioas, U64_MAX, 2) == EOVERFLOW


def test_iova_ranges_report_and_emsgsize(fd: Fd) -> None:
    ioas = fd.ioas()
    assert fd.iova_ranges(ioas) == ([(0, U64_MAX)], 1)
    fd.add_reserved(ioas, PAGE_SIZE, PAGE_SIZE)
    fd.add_reserved(ioas, PAGE_SIZE * 2, PAGE_SIZE)  # touching: still one hole between
    assert fd.iova_ranges(ioas)[0] == [(0, PAGE_SIZE - 1), (3 * PAGE_SIZE, U64_MAX)]
    cmd = new("iommu_ioas_iova_ranges", ioas_id=ioas, num_iovas=1,
              allowed_iovas=fd.be.alloc(4096))
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_IOVA_RANGES, cmd) == EMSGSIZE
    assert cmd.num_iovas == 2
    _, _hwpt, _ = fd.mock_domain(ioas)
    assert fd.iova_ranges(ioas) == ([(u.MOCK_APERTURE_START, u.MOCK_APERTURE_LAST)],
                                    u.MOCK_PAGE_SIZE)


def test_unmap_is_a_superset_of_areas(fd: Fd) -> None:
    ioas = fd.ioas()
    base = 1 << 24
    for i in range(4):
        fd.map(ioas, 1 << 31, 8 * PAGE_SIZE, base + 4 * PAGE_SIZE + i * 16 * PAGE_SIZE)
    assert errno_of(fd.unmap, ioas, base, 8 * PAGE_SIZE) == ENOENT  # cuts the first area
    assert errno_of(fd.unmap, ioas, 0, PAGE_SIZE) == ENOENT         # nothing there
    assert errno_of(fd.map, ioas, 1 << 31, PAGE_SIZE, base + 8 * PAGE_SIZE) == EEXIST
    assert fd.unmap(ioas, base, 64 * PAGE_SIZE) == 32 * PAGE_SIZE
    assert fd.unmap(ioas, 0, U64_MAX) == 0  # unmap all of nothing succeeds


def test_map_argument_checks(fd: Fd) -> None:
    ioas = fd.ioas()
    assert errno_of(fd.map, ioas, 1 << 31, PAGE_SIZE, None, 0) == EINVAL
    assert errno_of(fd.map, ioas, 1 << 31, 0) == EINVAL
    assert errno_of(fd.map, ioas, U64_MAX - 10, PAGE_SIZE) == EOVERFLOW
    cmd = new("iommu_ioas_map", ioas_id=ioas, flags=8 | 4, length=PAGE_SIZE)
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_MAP, cmd) == 95  # EOPNOTSUPP


def test_domain_alignment_and_aperture(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    buf = be.alloc(16 * PAGE_SIZE)
    fd.map(ioas, buf, PAGE_SIZE, 0x1000)  # outside the aperture
    assert errno_of(fd.mock_domain, ioas) == EADDRINUSE
    fd.unmap(ioas, 0, U64_MAX)
    fd.mock_domain(ioas)
    assert errno_of(fd.map, ioas, buf, 1000) == EINVAL  # not 2 KiB aligned
    assert errno_of(fd.map, ioas, buf, PAGE_SIZE, 0x1000) == EINVAL  # reserved
    iova = fd.map(ioas, buf + 2048, 2048)
    assert iova % PAGE_SIZE == 2048


def test_huge_pages_option_alignment(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    opt = new("iommu_option", option_id=u.IOMMU_OPTION_HUGE_PAGES,
              op=u.IOMMU_OPTION_OP_SET, object_id=ioas, val64=0)
    fd.map(ioas, (1 << 31) + 2048, PAGE_SIZE, 1 << 24)
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EADDRINUSE
    fd.unmap(ioas, 0, U64_MAX)
    fd.ioctl(u.IOMMU_OPTION, opt)
    assert fd.iova_ranges(ioas)[1] == PAGE_SIZE
    opt.val64 = 1
    fd.ioctl(u.IOMMU_OPTION, opt)
    assert fd.iova_ranges(ioas)[1] == 1


def test_copy_needs_a_fully_mapped_source(be: MockBackend, fd: Fd) -> None:
    src, dst = fd.ioas(), fd.ioas()
    buf = be.alloc(4 * PAGE_SIZE)
    fd.map(src, buf, 2 * PAGE_SIZE, 1 << 24)
    fd.map(src, buf + 2 * PAGE_SIZE, 2 * PAGE_SIZE, (1 << 24) + 2 * PAGE_SIZE)
    # Across two back-to-back areas: two areas in the destination.
    iova = fd.copy(dst, src, (1 << 24) + PAGE_SIZE, 2 * PAGE_SIZE)
    ioas = be.kernel.files.lookup(fd.fd).ctx.objects.load(dst)  # type: ignore[attr-defined]
    assert len(ioas.iopt.areas) == 2
    assert errno_of(fd.copy, dst, src, (1 << 24) + 3 * PAGE_SIZE, 2 * PAGE_SIZE) == ENOENT
    assert fd.unmap(dst, iova, 2 * PAGE_SIZE) == 2 * PAGE_SIZE
