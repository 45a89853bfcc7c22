"""The IOMMU core's domain: ``struct iommu_domain`` and a paging domain's page table.

A :class:`PagingDomain` stores what ``iommu_map`` installed as runs of
``(iova, last, phys)`` in an :class:`~backends.mock.interval_tree.IntervalTree`, so
``iova_to_phys`` is one O(log n) lookup and a map or unmap costs O(log n) whatever
the number of mappings. Each run is one contiguous PFN range the caller mapped in one
call, as the kernel's ``batch_to_domain`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from errno import EEXIST, EINVAL
from typing import TYPE_CHECKING, Any

from backends.mock.errors import kerr
from backends.mock.interval_tree import U64_MAX, IntervalTree

if TYPE_CHECKING:
    from backends.mock.hw_pagetable import IommufdHwPagetable

IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1
IOMMU_CACHE = 1 << 2
IOMMU_NO_PASID = 0


class DomainType(IntEnum):
    """The domain types the model uses (IOMMU_DOMAIN_*)."""

    BLOCKED = 0
    UNMANAGED = 1
    NESTED = 2


class IommuDomain:
    """``struct iommu_domain``: type, owner driver, geometry and the iommufd back-pointer."""

    def __init__(self, dtype: DomainType, owner: Any) -> None:
        self.type = dtype
        self.owner = owner
        """The ``iommu_ops`` that allocated it (here: the driver object)."""
        self.pgsize_bitmap = 0
        self.aperture_start = 0
        self.aperture_end = U64_MAX
        self.dirty_ops = False
        """True when the domain has dirty-tracking ops (allocated with DIRTY_TRACKING)."""
        self.dirty_tracking = False
        self.iommufd_hwpt: IommufdHwPagetable | None = None
        self.iopf_handler: Callable[[Any], None] | None = None
        """Set for a HWPT allocated with a fault queue (iommufd_fault_iopf_handler)."""


class _Run:
    __slots__ = ("last", "max_leaf", "phys", "prot", "start")

    def __init__(self, start: int, last: int, phys: int, prot: int, max_leaf: int) -> None:
        self.start = start
        self.last = last
        self.phys = phys
        self.prot = prot
        self.max_leaf = max_leaf


class PagingDomain(IommuDomain):
    """A paging (UNMANAGED) domain with its IO page table."""

    def __init__(self, owner: Any, pgsize_bitmap: int) -> None:
        super().__init__(DomainType.UNMANAGED, owner)
        self.pgsize_bitmap = pgsize_bitmap
        self._runs: IntervalTree[_Run] = IntervalTree()
        self.mapped = 0
        """Bytes currently mapped."""
        self.dirty_marks: set[int] = set()
        """IOVAs whose PTE slot has its dirty bit set (backends.mock.domain_dirty)."""

    @property
    def min_pgsize(self) -> int:
        """``1 << __ffs(pgsize_bitmap)``."""
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def map(self, iova: int, paddr: int, size: int, prot: int, max_leaf: int = 0) -> None:
        """iommu_map(): EINVAL unless iova, paddr and size are page-size aligned.

        ``max_leaf`` (a power of two) stands for a series of iommu_map calls of at most
        that size each, so the table's leaves are no larger (batch_iommu_map_small).
        """
        pg = self.min_pgsize
        if (iova | paddr | size) & (pg - 1) or size == 0:
            raise kerr(EINVAL)
        last = iova + size - 1
        if iova < self.aperture_start or last > self.aperture_end:
            raise kerr(EINVAL)
        if self._runs.first_overlap(iova, last) is not None:
            raise kerr(EEXIST)
        self._runs.insert(_Run(iova, last, paddr, prot, max_leaf))
        self.mapped += size

    def unmap(self, iova: int, size: int) -> int:
        """iommu_unmap(): remove ``[iova, iova+size)``; returns the bytes unmapped."""
        if size == 0:
            return 0
        last = iova + size - 1
        done = 0
        for run in self._runs.overlapping(iova, last):
            self._runs.remove(run)
            cut_start = max(run.start, iova)
            cut_last = min(run.last, last)
            if run.start < cut_start:
                self._runs.insert(_Run(run.start, cut_start - 1, run.phys, run.prot,
                                       run.max_leaf))
            if run.last > cut_last:
                self._runs.insert(_Run(cut_last + 1, run.last,
                                       run.phys + (cut_last + 1 - run.start), run.prot,
                                       run.max_leaf))
            done += cut_last - cut_start + 1
        self.mapped -= done
        if self.dirty_marks:
            # The freed PTEs take their dirty bits with them.
            self.dirty_marks = {m for m in self.dirty_marks if not iova <= m <= last}
        return done

    def iova_to_phys(self, iova: int) -> int:
        """iommu_iova_to_phys(): 0 when nothing is mapped there."""
        run = self._runs.find(iova)
        if run is None:
            return 0
        return run.phys + (iova - run.start)

    def mapping_at(self, iova: int) -> tuple[int, int, int, int] | None:
        """The (iova, last, phys, max_leaf) of the map call that covers ``iova``."""
        run = self._runs.find(iova)
        return None if run is None else (run.start, run.last, run.phys, run.max_leaf)

    def mappings(self) -> list[tuple[int, int, int]]:
        """Every run as (iova, last, phys), for tests."""
        return [(r.start, r.last, r.phys) for r in self._runs]
