"""Dirty tracking past what the kernel's selftests check: argument rules, the user bitmap
and the mock page table's PTEs.

Each scenario takes any :class:`Backend`: on the mock they keep the model honest, and
``-m slow`` runs the same expectations against the 7.3.4 guests, where they come from.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from errno import EINVAL, ENOENT, EOPNOTSUPP, EOVERFLOW

import pytest

import uapi_headers as u
from backends import open_backend
from backends.contract import Backend
from backends.mock import MockBackend
from harness.helpers import Ioas, Iommufd, expect_errno, hwpt_alloc, mock_domain, option_set
from harness.helpers.dirty import (
    get_dirty_bitmap,
    hwpt_alloc_iommupt,
    mock_domain_set_dirty,
    set_dirty_tracking,
)

PAGE_SIZE = 4096
MOCK_PAGE_SIZE = u.MOCK_PAGE_SIZE
START = u.MOCK_APERTURE_START
NO_CLEAR = u.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR


class Setup:
    """An IOAS with a mock device, ``length`` bytes mapped at MOCK_APERTURE_START and a
    dirty-tracking HWPT (tracking on) over it."""

    def __init__(self, be: Backend, length: int, *, huge: bool = False) -> None:
        self.be = be
        self.fd = Iommufd.open(be)
        self.ioas = Ioas.alloc(self.fd)
        if not huge:
            option_set(self.fd, u.IOMMU_OPTION_HUGE_PAGES, 0, self.ioas.id)
        self.idev = mock_domain(self.fd, self.ioas.id).idev_id
        self.length = length
        self.buffer = be.alloc(length, align=be.hugepage_size, shared=True, hugetlb=huge)
        self.ioas.map_fixed(self.buffer, length, START)
        self.hwpt = hwpt_alloc_iommupt(
            self.fd, self.idev, self.ioas.id, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
            u.MOCK_IOMMUPT_HUGE if huge else u.MOCK_IOMMUPT_DEFAULT)
        set_dirty_tracking(self.fd, self.hwpt, True)
        self.bitmap = be.alloc(4 * PAGE_SIZE, shared=False)

    def dirty(self, *offsets: int) -> int:
        """Mark the 2 KiB granules at these byte offsets of the mapping dirty."""
        nbits = self.length // MOCK_PAGE_SIZE
        seed = bytearray(-(-nbits // 8))
        for offset in offsets:
            n = offset // MOCK_PAGE_SIZE
            seed[n // 8] |= 1 << n % 8
        self.be.poke(self.bitmap, bytes(seed))
        return mock_domain_set_dirty(self.fd, self.hwpt, self.length, START, MOCK_PAGE_SIZE,
                                     self.bitmap)

    def read(self, length: int | None = None, *, iova: int = START, flags: int = 0,
             at: int = 0, nbytes: int = 16) -> bytes:
        """GET_DIRTY_BITMAP at 2 KiB granules into a bitmap at byte ``at`` whose first
        page was zeroed."""
        self.be.poke(self.bitmap, bytes(PAGE_SIZE))
        get_dirty_bitmap(self.fd, self.hwpt, self.length if length is None else length,
                         iova, MOCK_PAGE_SIZE, self.bitmap + at, flags)
        return self.be.peek(self.bitmap + at, nbytes)

    def close(self) -> None:
        self.fd.close()
        self.be.munmap(self.buffer, self.length)
        self.be.munmap(self.bitmap, 4 * PAGE_SIZE)


def _ioctl_rules(be: Backend) -> None:
    s = Setup(be, 64 * 1024)
    fd = s.fd
    plain = hwpt_alloc(fd, s.idev, s.ioas.id)
    with expect_errno(EOPNOTSUPP):
        set_dirty_tracking(fd, plain, True)       # no dirty ops
    with expect_errno(EOPNOTSUPP):
        set_dirty_tracking(fd, plain, False)
    with expect_errno(EOPNOTSUPP):
        get_dirty_bitmap(fd, plain, s.length, START, MOCK_PAGE_SIZE, s.bitmap)
    with expect_errno(ENOENT):
        set_dirty_tracking(fd, s.ioas.id, True)   # not a HWPT
    with expect_errno(EOPNOTSUPP):
        get_dirty_bitmap(fd, s.hwpt, s.length, START, MOCK_PAGE_SIZE, s.bitmap, flags=2)
    with expect_errno(EINVAL):
        get_dirty_bitmap(fd, s.hwpt, 0, START, MOCK_PAGE_SIZE, s.bitmap)
    with expect_errno(EOVERFLOW):
        get_dirty_bitmap(fd, s.hwpt, 2 * PAGE_SIZE, (1 << 64) - PAGE_SIZE, MOCK_PAGE_SIZE,
                         s.bitmap)
    with expect_errno(EINVAL):
        get_dirty_bitmap(fd, s.hwpt, s.length, START, 0, s.bitmap)
    with expect_errno(EINVAL):                   # length not a multiple of page_size
        get_dirty_bitmap(fd, s.hwpt, s.length, START, 2 * s.length, s.bitmap)
    # Past the checks, the walk's own failures are not reported: an unmapped range and
    # a dirty bit for a bitmap nobody can write both succeed.
    get_dirty_bitmap(fd, s.hwpt, s.length, START + (1 << 30), MOCK_PAGE_SIZE, s.bitmap)
    s.dirty(0)
    get_dirty_bitmap(fd, s.hwpt, s.length, START, MOCK_PAGE_SIZE, 0)
    assert s.read(nbytes=1) == b"\x00"           # ... and that read cleared it
    fd.destroy(plain)
    s.close()


def _test_op_dirty(be: Backend) -> None:
    s = Setup(be, 64 * 1024)
    set_dirty_tracking(s.fd, s.hwpt, False)
    with expect_errno(EINVAL):                   # tracking off
        s.dirty(0)
    set_dirty_tracking(s.fd, s.hwpt, True)
    with expect_errno(EINVAL):                   # no bitmap
        mock_domain_set_dirty(s.fd, s.hwpt, s.length, START, MOCK_PAGE_SIZE, 0)
    with expect_errno(EINVAL):                   # iova not a multiple of page_size
        mock_domain_set_dirty(s.fd, s.hwpt, s.length, START + 1, MOCK_PAGE_SIZE, s.bitmap)
    # Bits for unmapped IOVAs count too: the whole 64 KiB past the mapping.
    s.be.poke(s.bitmap, b"\xff" * 4)
    assert mock_domain_set_dirty(s.fd, s.hwpt, s.length, START + s.length, MOCK_PAGE_SIZE,
                                 s.bitmap) == 32
    assert s.read(nbytes=4) == bytes(4)
    s.close()


def _enable_clears(be: Backend) -> None:
    s = Setup(be, 64 * 1024)
    assert s.dirty(0, 3 * PAGE_SIZE) == 2
    set_dirty_tracking(s.fd, s.hwpt, False)
    assert s.read(flags=NO_CLEAR, nbytes=2) == b"\xc3\x00"  # still there when off
    set_dirty_tracking(s.fd, s.hwpt, True)                 # enabling clears them
    assert s.read(nbytes=2) == bytes(2)
    s.close()


def _unmap_drops_bits(be: Backend) -> None:
    s = Setup(be, 64 * 1024)
    s.dirty(PAGE_SIZE)
    s.ioas.unmap(START, s.length)
    s.ioas.map_fixed(s.buffer, s.length, START)
    assert s.read(nbytes=2) == bytes(2)
    s.close()


def _partial_ranges(be: Backend) -> None:
    s = Setup(be, 64 * 1024)
    s.dirty(PAGE_SIZE + MOCK_PAGE_SIZE)
    # A range from the second page: bit 0 is that page's first 2 KiB.
    assert s.read(PAGE_SIZE, iova=START + PAGE_SIZE, flags=NO_CLEAR, nbytes=1) == b"\x03"
    # A bitmap that starts 3 bytes before a page it cannot write: the bits in the
    # writable page land (pages 0 and 1, still dirty), page 15's in byte 3 are dropped
    # without an error.
    s.dirty(0, 15 * PAGE_SIZE)
    s.be.munmap(s.bitmap + PAGE_SIZE, PAGE_SIZE)
    got = s.read(at=PAGE_SIZE - 3, nbytes=3)
    assert got == b"\x0f\x00\x00"
    s.close()


def _huge_leaf_reported_whole(be: Backend) -> None:
    s = Setup(be, 2 * 1024 * 1024, huge=True)
    assert s.dirty(5 * PAGE_SIZE) == 1
    # The 1 MiB leaf is reported whole, also past a 4 KiB range's 2 bits: the rest of
    # the 512 bits land in the pinned bitmap page.
    got = s.read(PAGE_SIZE, flags=NO_CLEAR, nbytes=66)
    assert got == b"\xff" * 64 + bytes(2)
    assert s.read(nbytes=66) == b"\xff" * 64 + bytes(2)
    assert s.read(nbytes=66) == bytes(66)
    s.close()


SCENARIOS: dict[str, Callable[[Backend], None]] = {
    "ioctl_rules": _ioctl_rules,
    "test_op_dirty": _test_op_dirty,
    "enable_clears": _enable_clears,
    "unmap_drops_bits": _unmap_drops_bits,
    "partial_ranges": _partial_ranges,
    "huge_leaf_reported_whole": _huge_leaf_reported_whole,
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_dirty_scenario(be: MockBackend, name: str) -> None:
    SCENARIOS[name](be)


GUESTS = ("qemu:x86_64", "qemu:aarch64")


@pytest.fixture(scope="module", params=GUESTS)
def guest(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One booted guest per architecture, shared by the scenarios."""
    spec: str = request.param
    if shutil.which(f"qemu-system-{spec.split(':')[1]}") is None:
        pytest.skip(f"qemu-system-{spec.split(':')[1]} is not installed")
    with open_backend(spec) as backend:
        yield backend


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_dirty_scenario_on_guest(guest: Backend, name: str) -> None:
    SCENARIOS[name](guest)
