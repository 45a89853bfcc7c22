"""The mock domain's dirty bits: its page table's PTEs and their D bits (selftest.c with
the AMDv1 "mock" generic page table, drivers/iommu/generic_pt).

Where the dirty state lives and at what granularity is what the selftests observe:

- ``iommu_map`` of one contiguous range installs leaves of the largest size the domain's
  ``pgsize_bitmap`` allows for the IOVA, the physical address and what is left of the
  length (pt_compute_best_pgsize). A 4 KiB map in the 2 KiB default table is one 4 KiB
  leaf (two contiguous slots); in the huge table (1 MiB | PAGE_SIZE) a 2 MiB huge page
  is two 1 MiB leaves.
- ``set_dirty`` (IOMMU_TEST_OP_DIRTY) sets the D bit of the one slot under an IOVA:
  :attr:`PagingDomain.dirty_marks` keeps those IOVAs; unmapping drops them.
- ``read_and_clear_dirty`` reports a leaf as dirty when any of its slots is, always as
  the whole leaf, and (without NO_CLEAR) cleans every slot of it.
- ``MOCK_DIRTY_TRACK`` is the mock's own "tracking on" flag (:attr:`dirty_tracking`).
"""

from __future__ import annotations

from collections.abc import Iterator
from errno import EFAULT, EINVAL, ENOMEM
from typing import TYPE_CHECKING

from backends.mock.errors import kerr
from backends.mock.iommu import PagingDomain

if TYPE_CHECKING:
    from backends.mock.iova_bitmap import IovaBitmap
    from backends.mock.kernel import Kernel

IOMMU_DIRTY_NO_CLEAR = 1 << 0
"""read_and_clear_dirty(): report, but leave the D bits set."""
DIRTY_MAX_BITS = 16 * 1024 * 1024 * 8
"""IOMMU_TEST_OP_DIRTY takes a bitmap of at most 16 MiB."""
BITS_PER_LONG = 64

# Fault point: the kvzalloc() of iommufd_test_dirty()'s kernel copy of the bitmap.
TEST_DIRTY_ALLOC = "iommufd_test_dirty"


def _highbit(value: int) -> int:
    return 1 << (value.bit_length() - 1)


def _lowbit(value: int) -> int:
    return value & -value


def leaves(pgsize_bitmap: int, iova: int, phys: int, length: int) -> Iterator[tuple[int, int]]:
    """The (iova, size) leaves one map call of ``length`` bytes installs: each the largest
    allowed size that both addresses are aligned to and the rest of the length holds."""
    while length > 0:
        best = _lowbit(iova | phys | _highbit(length))
        sizes = pgsize_bitmap & ((best << 1) - 1)
        if not sizes:
            return
        size = _highbit(sizes)
        yield iova, size
        iova += size
        phys += size
        length -= size


def _allowed(pgsize_bitmap: int, mapping: tuple[int, int, int, int]) -> int:
    """The leaf sizes ``mapping`` (a :meth:`PagingDomain.mapping_at`) may use."""
    max_leaf = mapping[3]
    return pgsize_bitmap & ((max_leaf << 1) - 1) if max_leaf else pgsize_bitmap


def _uniform_leaf(sizes: int, mapping: tuple[int, int, int, int]) -> int:
    """The one leaf size of a mapping aligned to the largest allowed size (every leaf
    has that size), else 0."""
    start, last, phys, _ = mapping
    top = _highbit(sizes) if sizes else 0
    if top and not (start | phys | (last - start + 1)) & (top - 1):
        return top
    return 0


def _leaf_in(pgsize_bitmap: int, mapping: tuple[int, int, int, int],
             iova: int) -> tuple[int, int] | None:
    """The leaf of ``mapping`` that holds ``iova``."""
    sizes = _allowed(pgsize_bitmap, mapping)
    top = _uniform_leaf(sizes, mapping)
    if top:
        return iova & ~(top - 1), top
    start, last, phys, _ = mapping
    for leaf_iova, size in leaves(sizes, start, phys, last - start + 1):
        if iova < leaf_iova + size:
            return leaf_iova, size
    return None


def leaf_at(domain: PagingDomain, iova: int) -> tuple[int, int] | None:
    """The (start, size) of the leaf mapping ``iova``; None where nothing is mapped."""
    mapping = domain.mapping_at(iova)
    if mapping is None:
        return None
    return _leaf_in(domain.pgsize_bitmap, mapping, iova)


def mock_domain_set_dirty_tracking(domain: PagingDomain, enable: bool) -> None:
    """mock_domain_set_dirty_tracking(): EINVAL to enable without dirty ops; else set or
    clear MOCK_DIRTY_TRACK (idempotent)."""
    if enable and not domain.dirty_ops:
        raise kerr(EINVAL)
    domain.dirty_tracking = enable


def set_dirty(domain: PagingDomain, iova: int) -> bool:
    """The page table's set_dirty(): mark the slot under ``iova``; False (ENOENT in the
    kernel, which its caller ignores) where nothing is mapped."""
    if domain.mapping_at(iova) is None:
        return False
    domain.dirty_marks.add(iova)
    return True


def read_and_clear_dirty(domain: PagingDomain, iova: int, size: int, flags: int,
                         bitmap: IovaBitmap | None) -> None:
    """The page table's read_and_clear_dirty() over ``[iova, iova+size-1]``: each dirty
    leaf the range touches goes whole into ``bitmap`` (if any), in IOVA order, and is
    cleaned unless ``IOMMU_DIRTY_NO_CLEAR``."""
    last = iova + size - 1
    # A leaf straddling either end of the range counts: widen the search to its edges.
    lo, hi = iova, last
    first_leaf = leaf_at(domain, iova)
    if first_leaf is not None:
        lo = first_leaf[0]
    last_leaf = leaf_at(domain, last)
    if last_leaf is not None:
        hi = last_leaf[0] + last_leaf[1] - 1
    marks = sorted(m for m in domain.dirty_marks if lo <= m <= hi)
    mapping: tuple[int, int, int, int] | None = None
    top = 0
    i = 0
    while i < len(marks):
        mark = marks[i]
        if mapping is None or not mapping[0] <= mark <= mapping[1]:
            mapping = domain.mapping_at(mark)
            if mapping is not None:
                top = _uniform_leaf(_allowed(domain.pgsize_bitmap, mapping), mapping)
        if mapping is None:
            i += 1
            continue
        if top:
            start, length = mark & ~(top - 1), top
        else:
            leaf = _leaf_in(domain.pgsize_bitmap, mapping, mark)
            assert leaf is not None
            start, length = leaf
        end = start + length
        j = i + 1
        while j < len(marks) and marks[j] < end:
            j += 1
        if start <= last and end > iova:
            if bitmap is not None:
                bitmap.set(start, length)
            if not flags & IOMMU_DIRTY_NO_CLEAR:
                domain.dirty_marks.difference_update(marks[i:j])
        i = j

def mock_test_dirty(kernel: Kernel, domain: PagingDomain, iova: int, length: int,
                    page_size: int, uptr: int) -> int:
    """IOMMU_TEST_OP_DIRTY past its argument checks: EINVAL unless tracking is on, then
    set_dirty for every IOVA whose bit is set in the user bitmap at ``uptr`` (mapped or
    not); returns how many bits were set."""
    if not domain.dirty_tracking:
        raise kerr(EINVAL)
    nbits = length // page_size
    if kernel.should_fail(TEST_DIRTY_ALLOC):
        raise kerr(ENOMEM)
    try:
        data = kernel.uaccess.copy_from_user(uptr, -(-nbits // 8))
    except OSError:
        raise kerr(EFAULT) from None
    count = 0
    for byte_index, byte in enumerate(data):
        while byte:
            bit = (byte & -byte).bit_length() - 1
            byte &= byte - 1
            n = byte_index * 8 + bit
            if n >= nbits:
                break
            set_dirty(domain, iova + n * page_size)
            count += 1
    return count
