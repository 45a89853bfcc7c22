"""Simulated user memory and copy_{from,to}_user."""

from __future__ import annotations

from errno import E2BIG, EFAULT, EINVAL

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.mm import PROT_READ, PROT_WRITE, Mm, PhysMem
from backends.mock.uaccess import ARG_BASE, UserAccess
from tests.mock.helpers import PAGE_SIZE, errno_of


def test_memory_is_zeroed_lazily_and_faults_outside_mappings() -> None:
    mm = Mm(PhysMem())
    addr = mm.mmap_anon(3 * PAGE_SIZE)
    assert mm.read(addr, 3 * PAGE_SIZE) == bytes(3 * PAGE_SIZE)
    mm.write(addr + PAGE_SIZE - 2, b"abcd")  # across a page boundary
    assert mm.read(addr + PAGE_SIZE - 2, 4) == b"abcd"
    assert errno_of(mm.read, addr + 3 * PAGE_SIZE, 1) == EFAULT
    assert errno_of(mm.read, addr + 3 * PAGE_SIZE - 1, 2) == EFAULT
    assert errno_of(mm.write, 0, b"x") == EFAULT


def test_munmap_splits_and_later_gup_faults() -> None:
    mm = Mm(PhysMem())
    addr = mm.mmap_anon(8 * PAGE_SIZE)
    mm.write(addr, b"keep")
    mm.munmap(addr + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert mm.read(addr, 4) == b"keep"
    assert errno_of(mm.pin_user_pages, addr, 8, write=True) == EFAULT
    assert mm.get_user_pages(addr + 4 * PAGE_SIZE, 4)  # the tail is still there
    assert errno_of(mm.munmap, addr + 1, PAGE_SIZE) == EINVAL


def test_pins_are_counted_per_page_and_all_or_nothing() -> None:
    mm = Mm(PhysMem())
    addr = mm.mmap_anon(2 * PAGE_SIZE)
    pages = mm.pin_user_pages(addr, 2, write=True)
    assert [p.pins for p in pages] == [1, 1]
    mm.munmap(addr + PAGE_SIZE, PAGE_SIZE)
    assert errno_of(mm.pin_user_pages, addr, 2, write=True) == EFAULT
    assert [p.pins for p in pages] == [1, 1]  # the failed pin left nothing behind


def test_read_only_mapping_refuses_write_pins() -> None:
    mm = Mm(PhysMem())
    addr = mm.mmap_anon(PAGE_SIZE, prot=PROT_READ)
    assert errno_of(mm.pin_user_pages, addr, 1, write=True) == EFAULT
    assert mm.pin_user_pages(addr, 1, write=False)


def test_private_file_mapping_unshares_on_longterm_pin(be: MockBackend) -> None:
    mfd = be.memfd(PAGE_SIZE)
    shared = be.mmap(mfd, PAGE_SIZE)
    private = be.mmap(mfd, PAGE_SIZE, flags=0x02)  # MAP_PRIVATE
    mm = be.kernel.mm
    cache_pfn = mm.get_user_pages(shared, 1)[0].pfn
    assert mm.get_user_pages(private, 1)[0].pfn == cache_pfn  # reads see the page cache
    pinned = mm.pin_user_pages(private, 1, write=False)[0]  # FOLL_LONGTERM read pin
    assert pinned.pfn != cache_pfn
    be.poke(private, b"written")  # the write does not move the pinned page
    assert mm.get_user_pages(private, 1)[0] is pinned
    assert be.peek(shared, 7) == bytes(7)


def test_memfd_truncate_and_shared_pages(be: MockBackend) -> None:
    mfd = be.memfd(2 * PAGE_SIZE)
    a = be.mmap(mfd, 2 * PAGE_SIZE)
    b = be.mmap(mfd, 2 * PAGE_SIZE)
    be.poke(a, b"same")
    assert be.peek(b, 4) == b"same"
    be.ftruncate(mfd, PAGE_SIZE)
    assert errno_of(be.peek, a + PAGE_SIZE, 1) == EFAULT  # past EOF: SIGBUS
    assert be.read(mfd, 4) == b"same"


def test_hugepage_memory_is_compound_and_aligned(be: MockBackend) -> None:
    addr = be.alloc(4096, hugetlb=True)
    assert addr % be.hugepage_size == 0
    pages = be.kernel.mm.get_user_pages(addr, 2)
    assert all(p.compound for p in pages)
    assert pages[1].pfn == pages[0].pfn + 1


def test_arg_window_bounds() -> None:
    ua = UserAccess(Mm(PhysMem()), u.ffi)
    raw = u.ffi.new("char[]", 16)
    assert ua.map_arg(raw) == ARG_BASE
    ua.copy_to_user(ARG_BASE + 8, b"12345678")
    assert ua.copy_from_user(ARG_BASE + 8, 8) == b"12345678"
    assert errno_of(ua.copy_from_user, ARG_BASE + 12, 8) == EFAULT
    assert errno_of(ua.copy_to_user, ARG_BASE + 12, b"abcdefgh") == EFAULT
    assert bytes(u.ffi.buffer(raw))[12:] == b"abcd"  # the bytes before the fault landed
    ua.unmap_arg()
    assert errno_of(ua.copy_from_user, ARG_BASE, 1) == EFAULT


@pytest.mark.parametrize(("usize", "tail", "expect"), [
    (8, b"", 0), (4, b"", 0), (12, b"\0\0\0\0", 0), (12, b"\0\1\0\0", E2BIG), (20, b"\0" * 4,
                                                                              EFAULT)])
def test_copy_struct_from_user(usize: int, tail: bytes, expect: int) -> None:
    mm = Mm(PhysMem())
    ua = UserAccess(mm, u.ffi)
    src = u.ffi.new("char[]", 8 + len(tail))
    src[0:8] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    src[8:8 + len(tail)] = tail
    addr = ua.map_arg(src)
    dst = u.ffi.new("struct iommu_destroy *")
    assert errno_of(ua.copy_struct_from_user, dst, 8, addr, usize) == expect
    if not expect:
        got = bytes(u.ffi.buffer(dst))
        assert got[:min(usize, 8)] == u.ffi.buffer(src)[0:min(usize, 8)]
        assert got[min(usize, 8):] == bytes(8 - min(usize, 8))


def test_poke_read_only_faults(be: MockBackend) -> None:
    mm = be.kernel.mm
    addr = mm.mmap_anon(PAGE_SIZE, prot=PROT_READ)
    assert errno_of(be.poke, addr, b"x") == EFAULT
    assert mm.mmap_anon(PAGE_SIZE, prot=PROT_READ | PROT_WRITE)


def test_memfd_read_is_capped_at_max_rw_count(be: MockBackend) -> None:
    # vfs_read clamps the count to MAX_RW_COUNT (INT_MAX & PAGE_MASK) before the
    # file's read runs: a 1 TiB read of a 1 TiB memfd returns that much, no more.
    tib = 1 << 40
    mfd = be.memfd(tib)
    data = be.read(mfd, tib)
    assert len(data) == 0x7FFF_F000
    be.close(mfd)


def test_memfd_read_returns_what_was_written(be: MockBackend) -> None:
    mfd = be.memfd(3 * PAGE_SIZE)
    assert be.write(mfd, b"x" * (PAGE_SIZE + 5)) == PAGE_SIZE + 5
    # A second fd on the same file would share the position; read back through mmap.
    addr = be.mmap(mfd, 3 * PAGE_SIZE)
    assert be.peek(addr + PAGE_SIZE, 6) == b"xxxxx\0"
    assert be.read(mfd, 1 << 40) == bytes(2 * PAGE_SIZE - 5)
    be.munmap(addr, 3 * PAGE_SIZE)
    be.close(mfd)
