"""The IO page table of an IOAS: areas, reserved and allowed IOVA, domains (io_pagetable.c).

Invariants the model keeps, as the kernel does:

- areas never overlap, and never overlap a reserved range; reserved ranges may
  overlap each other (every domain reserves what lies outside its aperture);
- an allowed range never intersects a reserved one (EADDRINUSE both ways);
- every domain of the table holds the same IOVA -> PFN mappings as every other;
- ``iova_alignment`` is the largest of the domains' smallest page size, the accesses'
  alignment, and PAGE_SIZE while HUGE_PAGES is off; every area honours it.

The free IOVA (neither area nor reserved) is kept in a :class:`HoleTree`, so the
auto-IOVA allocator finds the first fitting hole without walking the areas.
"""

from __future__ import annotations

from errno import (
    EADDRINUSE,
    EBADF,
    EBUSY,
    EDEADLOCK,
    EEXIST,
    EINVAL,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EOPNOTSUPP,
    EOVERFLOW,
    EPERM,
)
from typing import TYPE_CHECKING

from backends.mock import access as access_mod
from backends.mock.dmabuf import DmaBufFile
from backends.mock.errors import kerr
from backends.mock.fault import AREA_ALLOC, PAGES_LIST_ALLOC, RESERVED_ALLOC, RESV_REGIONS
from backends.mock.interval_tree import (
    U64_MAX,
    HoleTree,
    IntervalTree,
    Span,
    holes_of,
    merge_spans,
)
from backends.mock.iommu import IOMMU_WRITE, IommuDomain, PagingDomain
from backends.mock.mm import HPAGE_SIZE, PAGE_SIZE
from backends.mock.pages import ACCOUNT_MM, ACCOUNT_USER, IOPT_ADDRESS_DMABUF, IoptPages

if TYPE_CHECKING:
    from backends.mock.access import IommufdAccess
    from backends.mock.kernel import Kernel
    from backends.mock.private import IommufdCtx

IOPT_ALLOC_IOVA = 1 << 0
XA_LIMIT_16B = (1 << 16) - 1


class IoptArea:
    """``struct iopt_area``: ``[start, last]`` of IOVA backed by a slice of an iopt_pages."""

    __slots__ = ("index", "iommu_prot", "iopt", "last", "last_index", "num_accesses",
                 "num_locks", "page_offset", "pages", "prevent_access", "start",
                 "storage_domain")

    def __init__(self) -> None:
        self.start = 0
        self.last = 0
        self.index = 0
        """First page index in the pages (``pages_node.start``)."""
        self.last_index = 0
        self.iopt: IoPagetable | None = None
        self.pages: IoptPages | None = None
        """None while the area is still being set up or torn down."""
        self.storage_domain: IommuDomain | None = None
        self.page_offset = 0
        self.iommu_prot = 0
        self.prevent_access = False
        self.num_accesses = 0
        self.num_locks = 0

    @property
    def length(self) -> int:
        """iopt_area_length()."""
        return self.last - self.start + 1

    def start_byte(self, iova: int) -> int:
        """iopt_area_start_byte(): the byte offset into the pages behind ``iova``."""
        return iova - self.start + self.page_offset + self.index * PAGE_SIZE

    def iova_to_index(self, iova: int) -> int:
        """iopt_area_iova_to_index()."""
        return self.start_byte(iova) // PAGE_SIZE

    def index_to_iova(self, index: int) -> int:
        """iopt_area_index_to_iova(): the first IOVA of page ``index``."""
        index -= self.index
        if index == 0:
            return self.start
        return self.start - self.page_offset + index * PAGE_SIZE

    def index_to_iova_last(self, index: int) -> int:
        """iopt_area_index_to_iova_last(): the last IOVA of page ``index``."""
        if index == self.last_index:
            return self.last
        return self.start - self.page_offset + (index - self.index + 1) * PAGE_SIZE - 1

    def __repr__(self) -> str:
        return f"<IoptArea [{self.start:#x}, {self.last:#x}] pages {self.index}..{self.last_index}>"


class IoptReserved(Span):
    """``struct iopt_reserved``: a reserved range and who reserved it."""

    __slots__ = ("owner",)

    def __init__(self, start: int, last: int, owner: object) -> None:
        super().__init__(start, last)
        self.owner = owner


class PagesListElm:
    """``struct iopt_pages_list``: one slice to map (IOAS_MAP, IOAS_COPY)."""

    __slots__ = ("area", "length", "pages", "start_byte")

    def __init__(self, pages: IoptPages, start_byte: int, length: int) -> None:
        self.pages: IoptPages | None = pages
        self.area: IoptArea | None = None
        self.start_byte = start_byte
        self.length = length


def roundup_pow_of_two(n: int) -> int:
    """roundup_pow_of_two()."""
    return 1 << (n - 1).bit_length()


def check_add_overflow(a: int, b: int) -> int:
    """``a + b`` as an unsigned long, EOVERFLOW when it wraps."""
    s = a + b
    if s > U64_MAX:
        raise kerr(EOVERFLOW)
    return s


def free_pages_list(pages_list: list[PagesListElm]) -> None:
    """iopt_free_pages_list(): abort the areas still held and put the pages."""
    for elm in pages_list:
        area = elm.area
        if area is not None:
            if area.iopt is not None:
                area.iopt.abort_area(area)
            elm.area = None
        if elm.pages is not None:
            elm.pages.put()
            elm.pages = None
    pages_list.clear()


class IoPagetable:
    """``struct io_pagetable``."""

    def __init__(self, kernel: Kernel) -> None:
        """iopt_init_table(): no alignment restriction, the whole IOVA space free."""
        self.kernel = kernel
        self.domains: list[IommuDomain] = []
        self.access_list: dict[int, IommufdAccess] = {}
        self.areas: IntervalTree[IoptArea] = IntervalTree()
        self.allowed: IntervalTree[Span] = IntervalTree()
        self.reserved: list[IoptReserved] = []
        self.free = HoleTree()
        self.disable_large_pages = False
        self.iova_alignment = 1

    # -- contiguous area walks ------------------------------------------------
    def contig_areas(self, iova: int, last_iova: int) -> tuple[list[tuple[IoptArea, int]],
                                                               bool]:
        """iopt_for_each_contig_area(): the areas covering ``[iova, last_iova]`` back to
        back, each with its first IOVA in the range, and whether they cover it all
        (``iopt_area_contig_done``)."""
        out: list[tuple[IoptArea, int]] = []
        area = self.areas.find(iova)
        if area is None or area.pages is None:
            return out, False
        cur = iova
        while True:
            out.append((area, cur))
            if last_iova <= area.last:
                return out, True
            cur = area.last + 1
            nxt = self.areas.next_node(area)
            if nxt is None or nxt.start != cur or nxt.start > last_iova or nxt.pages is None:
                return out, False
            area = nxt

    # -- IOVA allocation ----------------------------------------------------
    @staticmethod
    def _check_range(start: int, last: int, length: int, alignment: int,
                     page_offset: int) -> int | None:
        """__alloc_iova_check_range(): the aligned start if ``length`` fits."""
        aligned = start + alignment - 1
        if aligned > U64_MAX:
            return None
        aligned &= ~(alignment - 1)
        aligned |= page_offset
        if aligned >= last or last - aligned < length - 1:
            return None
        return aligned

    def alloc_iova(self, addr: int, length: int) -> int:
        """iopt_alloc_iova(): the lowest free, allowed, suitably aligned IOVA (never 0)."""
        page_offset = addr % PAGE_SIZE
        if length == 0 or length >= U64_MAX // 2:
            raise kerr(EOVERFLOW)
        # Keep the alignment the VA has, so a THP can map as one huge IOPTE.
        alignment = roundup_pow_of_two(length)
        if addr:
            alignment = min(alignment, addr & -addr)
        alignment = min(alignment, HPAGE_SIZE)
        if alignment < self.iova_alignment:
            raise kerr(EINVAL)

        window_first, window_last = PAGE_SIZE, U64_MAX - PAGE_SIZE
        if not self.allowed:
            spans = [(window_first, window_last)]
        else:
            spans = []
            for start, last in merge_spans(self.allowed):
                start = max(start, window_first)
                last = min(last, window_last)
                if start <= last:
                    spans.append((start, last))

        def fits(start: int, last: int) -> int | None:
            """The aligned start if the length fits in [start, last]."""
            return self._check_range(start, last, length, alignment, page_offset)

        for start, last in spans:
            first = fits(start, last)
            if first is None:
                continue
            found = self.free.first_fit(first, last, length, fits)
            if found is not None:
                return found
        raise kerr(ENOSPC)

    def check_iova(self, iova: int, length: int) -> None:
        """iopt_check_iova(): alignment (EINVAL), wrap (EOVERFLOW), reserved (EINVAL),
        an existing area (EEXIST)."""
        if iova & (self.iova_alignment - 1):
            raise kerr(EINVAL)
        last = check_add_overflow(iova, length - 1)
        if self.reserved_overlap(iova, last) is not None:
            raise kerr(EINVAL)
        if self.areas.first_overlap(iova, last) is not None:
            raise kerr(EEXIST)

    # -- areas --------------------------------------------------------------
    def insert_area(self, area: IoptArea, pages: IoptPages, iova: int, start_byte: int,
                    length: int, iommu_prot: int, *, claim: bool = True) -> None:
        """iopt_insert_area(): ``area`` maps ``length`` bytes of ``pages`` at ``iova``."""
        if iommu_prot & IOMMU_WRITE and not pages.writable:
            raise kerr(EPERM)
        area.iommu_prot = iommu_prot
        area.page_offset = start_byte % PAGE_SIZE
        if area.page_offset & (self.iova_alignment - 1):
            raise kerr(EINVAL)
        area.start = iova
        area.last = check_add_overflow(iova, length - 1)
        area.index = start_byte // PAGE_SIZE
        area.last_index = check_add_overflow(start_byte, length - 1) // PAGE_SIZE
        if self.kernel.warn_on(area.last_index >= pages.npages, "iopt_insert_area"):
            raise kerr(EOVERFLOW)
        area.iopt = self
        if pages.type == IOPT_ADDRESS_DMABUF:
            pages.dmabuf_areas.append(area)
        self.areas.insert(area)
        if claim:
            self.free.occupy(area.start, area.last)

    def abort_area(self, area: IoptArea) -> None:
        """iopt_abort_area(): take a never-populated area out of its table."""
        self.kernel.warn_on(area.pages is not None, "iopt_abort_area: pages set")
        iopt = area.iopt
        if iopt is not None:
            iopt.areas.remove(area)
            iopt.free.release(area.start, area.last)
            area.iopt = None

    def _alloc_area_pages(self, pages_list: list[PagesListElm], length: int,
                          dst_iova: int, iommu_prot: int, flags: int) -> int:
        """iopt_alloc_area_pages(): reserve the IOVA with not-yet-populated areas."""
        for elm in pages_list:
            if self.kernel.should_fail(AREA_ALLOC):
                raise kerr(ENOMEM)
            elm.area = IoptArea()
        if length & (self.iova_alignment - 1) or not length:
            raise kerr(EINVAL)
        if flags & IOPT_ALLOC_IOVA:
            first = pages_list[0]
            assert first.pages is not None
            # Use the first slice to guess the ideal IOVA alignment.
            dst_iova = self.alloc_iova(first.start_byte + first.pages.start_addr(), length)
            try:
                self.check_iova(dst_iova, length)
            except OSError:
                self.kernel.warn_on(True, "iopt_alloc_iova gave a bad IOVA")
                raise kerr(EINVAL) from None
        else:
            self.check_iova(dst_iova, length)
        iova = dst_iova
        for elm in pages_list:
            assert elm.area is not None and elm.pages is not None
            self.insert_area(elm.area, elm.pages, iova, elm.start_byte, elm.length,
                             iommu_prot)
            iova += elm.length
        return dst_iova

    def map_pages(self, pages_list: list[PagesListElm], length: int, dst_iova: int,
                  iommu_prot: int, flags: int) -> int:
        """iopt_map_pages(): areas for every slice, filled into every domain."""
        dst_iova = self._alloc_area_pages(pages_list, length, dst_iova, iommu_prot, flags)
        done: list[PagesListElm] = []
        try:
            for elm in pages_list:
                assert elm.area is not None and elm.pages is not None
                self.area_fill_domains(elm.area, elm.pages)
                done.append(elm)
        except OSError:
            for elm in done:
                assert elm.area is not None and elm.pages is not None
                self.area_unfill_domains(elm.area, elm.pages)
            raise
        for elm in pages_list:
            assert elm.area is not None
            elm.area.pages = elm.pages
            elm.pages = None
            elm.area = None
        return dst_iova

    def map_common(self, ictx: IommufdCtx, pages: IoptPages, iova: int, length: int,
                   start_byte: int, iommu_prot: int, flags: int) -> int:
        """iopt_map_common(): map one new iopt_pages; it is put on failure."""
        if ictx.account_mode == ACCOUNT_MM and pages.account_mode == ACCOUNT_USER:
            pages.account_mode = ACCOUNT_MM
        elm = PagesListElm(pages, start_byte, length)
        try:
            return self.map_pages([elm], length, iova, iommu_prot, flags)
        except OSError:
            free_pages_list([elm])
            raise

    def map_user_pages(self, ictx: IommufdCtx, iova: int, uptr: int, length: int,
                       iommu_prot: int, flags: int) -> int:
        """iopt_map_user_pages(); returns the IOVA."""
        pages = IoptPages.alloc_user(self.kernel, uptr, length,
                                     bool(iommu_prot & IOMMU_WRITE))
        return self.map_common(ictx, pages, iova, length, uptr - pages.uptr, iommu_prot,
                               flags)

    def map_file_pages(self, ictx: IommufdCtx, iova: int, fd: int, start: int,
                       length: int, iommu_prot: int, flags: int) -> int:
        """iopt_map_file_pages(); returns the IOVA."""
        if not length:
            raise kerr(EINVAL)
        check_add_overflow(start, length - 1)
        start_byte = start % PAGE_SIZE
        file = self.kernel.files.fget(fd)
        if file is None:
            raise kerr(EBADF)
        try:
            writable = bool(iommu_prot & IOMMU_WRITE)
            if isinstance(file, DmaBufFile):
                pages = IoptPages.alloc_dmabuf(self.kernel, file, start_byte, start,
                                               length, writable)
            else:
                pages = IoptPages.alloc_file(self.kernel, file, start_byte, start, length,
                                             writable)
        finally:
            file.put()
        return self.map_common(ictx, pages, iova, length, start_byte, iommu_prot, flags)

    def get_pages(self, iova: int, length: int) -> list[PagesListElm]:
        """iopt_get_pages(): references on the slices under ``[iova, iova+length)``."""
        if not length:
            raise kerr(EINVAL)
        last_iova = check_add_overflow(iova, length - 1)
        out: list[PagesListElm] = []
        walk, done = self.contig_areas(iova, last_iova)
        try:
            for area, cur in walk:
                if self.kernel.should_fail(PAGES_LIST_ALLOC):
                    raise kerr(ENOMEM)
                assert area.pages is not None
                last = min(last_iova, area.last)
                elm = PagesListElm(area.pages, area.start_byte(cur), last - cur + 1)
                area.pages.get()
                out.append(elm)
            if not done:
                raise kerr(ENOENT)
        except OSError:
            free_pages_list(out)
            raise
        return out

    def unmap_iova_range(self, start: int, last: int) -> tuple[int, int]:
        """iopt_unmap_iova_range(): unmap the areas inside ``[start, last]``.

        Returns ``(errno or 0, bytes unmapped)``: the count is reported even on error.
        An area that sticks out of the range is ENOENT (no splitting); accesses are
        asked to let go first (iommufd_access_notify_unmap).
        """
        unmapped = 0
        tries = 0
        while True:
            area = self.areas.first_overlap(start, last)
            if area is None:
                return 0, unmapped
            area_first, area_last = area.start, area.last
            if area.pages is None or area.num_locks:
                return EBUSY, unmapped
            if area_first < start or area_last > last:
                return ENOENT, unmapped
            if area_first != start:
                tries = 0
            if area.num_accesses:
                start = area_first
                area.prevent_access = True
                access_mod.iommufd_access_notify_unmap(self, area_first, area.length)
                tries += 1
                if self.kernel.warn_on(tries > 100, "unmap: access did not let go"):
                    return EDEADLOCK, unmapped
                continue
            pages = area.pages
            area.pages = None
            self.area_unfill_domains(area, pages)
            self.abort_area(area)
            pages.put()
            # An unsigned long: two 2^63 areas add up to 0.
            unmapped = (unmapped + area_last - area_first + 1) & U64_MAX
            if area_last >= last:
                return 0, unmapped
            start = area_last + 1

    def unmap_iova(self, iova: int, length: int) -> tuple[int, int]:
        """iopt_unmap_iova(): the range must be a superset of whole areas."""
        if not length:
            return EINVAL, 0
        if iova + length - 1 > U64_MAX:
            return EOVERFLOW, 0
        return self.unmap_iova_range(iova, iova + length - 1)

    def unmap_all(self) -> tuple[int, int]:
        """iopt_unmap_all(): an empty table unmaps fine."""
        return self.unmap_iova_range(0, U64_MAX)

    # -- allowed and reserved IOVA ------------------------------------------
    def reserved_overlap(self, start: int, last: int) -> IoptReserved | None:
        """iopt_reserved_iter_first()."""
        for reserved in self.reserved:
            if reserved.start <= last and reserved.last >= start:
                return reserved
        return None

    def set_allow_iova(self, allowed: list[Span]) -> None:
        """iopt_set_allow_iova(): swap in a new allowed list unless it hits a reserved
        range (EADDRINUSE)."""
        for span in allowed:
            if self.reserved_overlap(span.start, span.last) is not None:
                raise kerr(EADDRINUSE)
        tree: IntervalTree[Span] = IntervalTree()
        for span in allowed:
            tree.insert(span)
        self.allowed = tree

    def reserve_iova(self, start: int, last: int, owner: object) -> None:
        """iopt_reserve_iova(): EADDRINUSE over an area or an allowed range."""
        if self.areas.first_overlap(start, last) is not None or \
                self.allowed.first_overlap(start, last) is not None:
            raise kerr(EADDRINUSE)
        if self.kernel.should_fail(RESERVED_ALLOC):
            raise kerr(ENOMEM)
        self.reserved.append(IoptReserved(start, last, owner))
        self.free.occupy(start, last)

    def remove_reserved_iova(self, owner: object) -> None:
        """iopt_remove_reserved_iova(): drop ``owner``'s ranges; IOVA no one else
        reserves becomes free."""
        gone = [r for r in self.reserved if r.owner is owner]
        if not gone:
            return
        self.reserved = [r for r in self.reserved if r.owner is not owner]
        for start, last in merge_spans(gone):
            for hole_start, hole_last in holes_of(self.reserved, start, last):
                self.free.release(hole_start, hole_last)

    def iova_ranges(self) -> list[tuple[int, int]]:
        """The holes of the reserved ranges (what IOAS_IOVA_RANGES reports)."""
        return holes_of(self.reserved)

    # -- domains ------------------------------------------------------------
    def _domain_map_area(self, domain: IommuDomain, area: IoptArea,
                         pages: IoptPages) -> None:
        """batch_to_domain() for a whole area: one iommu_map per contiguous PFN run, or
        its leaves at most a page with huge pages disabled."""
        assert isinstance(domain, PagingDomain)
        if pages.dmabuf_revoked:
            return  # iopt_area_fill_domain(): nothing to map
        # Huge pages disabled: one iommu_map per CPU page (batch_iommu_map_small).
        max_leaf = PAGE_SIZE if self.disable_large_pages else 0
        pinned = pages.pinned
        first, last = area.index, area.last_index
        run_iova = area.start
        run_phys = pinned[first].pfn * PAGE_SIZE + area.page_offset
        run_end = area.index_to_iova_last(first) + 1
        prev_pfn = pinned[first].pfn
        mapped: list[tuple[int, int]] = []
        try:
            for index in range(first + 1, last + 1):
                pfn = pinned[index].pfn
                end = area.index_to_iova_last(index) + 1
                if pfn == prev_pfn + 1:
                    run_end = end
                else:
                    domain.map(run_iova, run_phys, run_end - run_iova, area.iommu_prot, max_leaf)
                    mapped.append((run_iova, run_end - run_iova))
                    run_iova = area.index_to_iova(index)
                    run_phys = pfn * PAGE_SIZE
                    run_end = end
                prev_pfn = pfn
            domain.map(run_iova, run_phys, run_end - run_iova, area.iommu_prot, max_leaf)
        except OSError:
            for iova, size in mapped:
                domain.unmap(iova, size)
            raise

    def domain_unmap_area(self, domain: IommuDomain, area: IoptArea,
                          pages: IoptPages) -> None:
        """iopt_area_unmap_domain(); a revoked dma-buf has nothing mapped left."""
        if pages.dmabuf_revoked:
            return
        assert isinstance(domain, PagingDomain)
        done = domain.unmap(area.start, area.length)
        self.kernel.warn_on(done != area.length, "iommu_unmap_nofail: short unmap")

    def area_fill_domains(self, area: IoptArea, pages: IoptPages) -> None:
        """iopt_area_fill_domains(): pin the new area's pages and map them into every
        domain; on failure every domain is left as it was."""
        if not self.domains:
            return
        new = pages.pin_range(area.index, area.last_index)
        mapped: list[IommuDomain] = []
        try:
            for domain in self.domains:
                self._domain_map_area(domain, area, pages)
                mapped.append(domain)
            pages.reader_update_pinned()
        except OSError:
            for domain in mapped:
                self.domain_unmap_area(domain, area, pages)
            pages.unpin(new)
            raise
        area.storage_domain = self.domains[0]
        pages.cover(pages.dom_cover, area.index, area.last_index)

    def area_unfill_domains(self, area: IoptArea, pages: IoptPages) -> None:
        """iopt_area_unfill_domains(): unmap from every domain, then unpin."""
        storage = area.storage_domain
        if storage is None:
            return
        for domain in self.domains:
            if domain is not storage:
                self.domain_unmap_area(domain, area, pages)
        self.domain_unmap_area(storage, area, pages)
        pages.uncover(pages.dom_cover, area.index, area.last_index)
        pages.update_unpinned()
        area.storage_domain = None

    def _area_fill_domain(self, area: IoptArea, domain: IommuDomain) -> None:
        """iopt_area_fill_domain(): map one existing area into a new domain."""
        pages = area.pages
        assert pages is not None
        new = pages.pin_range(area.index, area.last_index)
        try:
            self._domain_map_area(domain, area, pages)
            try:
                pages.reader_update_pinned()
            except OSError:
                self.domain_unmap_area(domain, area, pages)
                raise
        except OSError:
            pages.unpin(new)
            raise

    def _fill_domain(self, domain: IommuDomain) -> None:
        """iopt_fill_domain(): map every area into ``domain`` or leave it untouched."""
        done: list[IoptArea] = []
        try:
            for area in self.areas.snapshot():
                pages = area.pages
                if pages is None:
                    continue
                self._area_fill_domain(area, domain)
                if area.storage_domain is None:
                    self.kernel.warn_on(bool(self.domains), "iopt_fill_domain: storage")
                    area.storage_domain = domain
                    pages.cover(pages.dom_cover, area.index, area.last_index)
                done.append(area)
        except OSError:
            for area in done:
                pages = area.pages
                assert pages is not None
                if not self.domains:
                    pages.uncover(pages.dom_cover, area.index, area.last_index)
                    area.storage_domain = None
                self.domain_unmap_area(domain, area, pages)
                pages.update_unpinned()
            raise

    def _unfill_domain(self, domain: IommuDomain) -> None:
        """iopt_unfill_domain(): unmap ``domain``; unpin if it was the last one."""
        if self.domains:
            storage = self.domains[0]
            for area in self.areas.snapshot():
                pages = area.pages
                if pages is None:
                    continue
                if area.storage_domain is domain:
                    area.storage_domain = storage
                self.domain_unmap_area(domain, area, pages)
            return
        for area in self.areas.snapshot():
            pages = area.pages
            if pages is None:
                continue
            pages.uncover(pages.dom_cover, area.index, area.last_index)
            self.kernel.warn_on(area.storage_domain is not domain, "iopt_unfill_domain")
            area.storage_domain = None
            self.domain_unmap_area(domain, area, pages)
            pages.update_unpinned()

    def _check_iova_alignment(self, new_alignment: int) -> None:
        """iopt_check_iova_alignment(): EADDRINUSE if an area breaks the alignment."""
        mask = new_alignment - 1
        for area in self.areas:
            if area.start & mask or area.length & mask or area.page_offset & mask:
                raise kerr(EADDRINUSE)
        for access in self.access_list.values():
            if self.kernel.warn_on(access.iova_alignment > new_alignment,
                                   "iopt_check_iova_alignment: access"):
                raise kerr(EADDRINUSE)

    def table_add_domain(self, domain: IommuDomain) -> None:
        """iopt_table_add_domain(): reserve outside the aperture, align, fill."""
        if self.kernel.warn_on(any(d is domain for d in self.domains), "domain twice"):
            raise kerr(EEXIST)
        pgsize = domain.pgsize_bitmap & -domain.pgsize_bitmap
        new_alignment = max(pgsize, self.iova_alignment)
        if new_alignment > PAGE_SIZE:
            raise kerr(EINVAL)
        if new_alignment != self.iova_alignment:
            self._check_iova_alignment(new_alignment)
        try:
            if domain.aperture_start != 0:
                self.reserve_iova(0, domain.aperture_start - 1, domain)
            if domain.aperture_end != U64_MAX:
                self.reserve_iova(domain.aperture_end + 1, U64_MAX, domain)
            self._fill_domain(domain)
        except OSError:
            self.remove_reserved_iova(domain)
            raise
        self.iova_alignment = new_alignment
        self.domains.append(domain)

    def _calculate_iova_alignment(self) -> None:
        """iopt_calculate_iova_alignment()."""
        new_alignment = PAGE_SIZE if self.disable_large_pages else 1
        for domain in self.domains:
            new_alignment = max(new_alignment, domain.pgsize_bitmap & -domain.pgsize_bitmap)
        for access in self.access_list.values():
            new_alignment = max(new_alignment, access.iova_alignment)
        if new_alignment > self.iova_alignment:
            self._check_iova_alignment(new_alignment)
        self.iova_alignment = new_alignment

    def table_remove_domain(self, domain: IommuDomain) -> None:
        """iopt_table_remove_domain(): unmap (and unpin if it was the last domain)."""
        index = next((i for i, cur in enumerate(self.domains) if cur is domain), -1)
        if self.kernel.warn_on(index < 0, "iopt_table_remove_domain: unknown domain"):
            return
        # Keep the array dense: the tail entry moves into the hole.
        tail = self.domains.pop()
        if index != len(self.domains):
            self.domains[index] = tail
        self._unfill_domain(domain)
        self.remove_reserved_iova(domain)
        try:
            self._calculate_iova_alignment()
        except OSError:
            self.kernel.warn_on(True, "iopt_table_remove_domain: alignment")

    # -- VFIO type1 splitting -----------------------------------------------
    def area_split(self, area: IoptArea, iova: int) -> None:
        """iopt_area_split(): cut ``area`` after ``iova`` into two areas."""
        alignment = self.iova_alignment
        start_iova, last_iova = area.start, area.last
        new_start = iova + 1
        if iova in (start_iova, last_iova):
            return
        pages = area.pages
        if pages is None or area.prevent_access:
            raise kerr(EBUSY)
        if pages.type == IOPT_ADDRESS_DMABUF:
            raise kerr(EOPNOTSUPP)  # the dma-buf tracking is per area
        if new_start & (alignment - 1) or area.start_byte(new_start) & (alignment - 1):
            raise kerr(EINVAL)
        if self.kernel.should_fail(AREA_ALLOC) or self.kernel.should_fail(AREA_ALLOC):
            raise kerr(ENOMEM)
        if area.num_accesses:
            raise kerr(EINVAL)
        if area.storage_domain is not None and not self.disable_large_pages:
            raise kerr(EINVAL)
        lhs, rhs = IoptArea(), IoptArea()
        self.areas.remove(area)
        self.insert_area(lhs, pages, start_iova, area.start_byte(start_iova),
                         new_start - start_iova, area.iommu_prot, claim=False)
        self.insert_area(rhs, pages, new_start, area.start_byte(new_start),
                         last_iova - new_start + 1, area.iommu_prot, claim=False)
        for part in (lhs, rhs):
            part.storage_domain = area.storage_domain
            part.pages = pages
        if area.storage_domain is not None:
            pages.cover(pages.dom_cover, lhs.index, lhs.last_index)
            pages.cover(pages.dom_cover, rhs.index, rhs.last_index)
            pages.uncover(pages.dom_cover, area.index, area.last_index)
        pages.get()
        area.pages = None
        area.iopt = None

    def cut_iova(self, iovas: list[int]) -> None:
        """iopt_cut_iova(): split the areas containing each IOVA just after it."""
        for iova in iovas:
            area = self.areas.find(iova)
            if area is not None:
                self.area_split(area, iova)

    # -- HUGE_PAGES -------------------------------------------------------------
    def set_large_pages(self, enable: bool) -> None:
        """iopt_enable_large_pages() / iopt_disable_large_pages(): disabling is refused
        (EINVAL) once domains hold mappings, or EADDRINUSE if an area is misaligned."""
        if enable:
            self.disable_large_pages = False
            try:
                self._calculate_iova_alignment()
            except OSError:
                self.kernel.warn_on(True, "iopt_enable_large_pages")
            return
        if self.disable_large_pages:
            return
        if self.domains and self.areas:
            raise kerr(EINVAL)
        self.disable_large_pages = True
        try:
            self._calculate_iova_alignment()
        except OSError:
            self.disable_large_pages = False
            raise

    # -- accesses ---------------------------------------------------------------
    def add_access(self, access: IommufdAccess) -> None:
        """iopt_add_access(): register ``access``; its alignment joins the table's."""
        new_id = 0
        while new_id in self.access_list:
            new_id += 1
        if new_id > XA_LIMIT_16B:
            raise kerr(EBUSY)
        self.access_list[new_id] = access
        try:
            self._calculate_iova_alignment()
        except OSError:
            del self.access_list[new_id]
            raise
        access.iopt_access_list_id = new_id

    def remove_access(self, access: IommufdAccess, list_id: int) -> None:
        """iopt_remove_access()."""
        self.kernel.warn_on(self.access_list.pop(list_id, None) is not access,
                            "iopt_remove_access")
        try:
            self._calculate_iova_alignment()
        except OSError:
            self.kernel.warn_on(True, "iopt_remove_access: alignment")

    def enforce_dev_resv_regions(self, dev: object) -> None:
        """iopt_table_enforce_dev_resv_regions(): the mock device has no reserved
        regions, so only the fault point remains."""
        if self.kernel.should_fail(RESV_REGIONS):
            raise kerr(EINVAL)

    def destroy_table(self) -> None:
        """iopt_destroy_table(): selftest reserved ranges go; everything else must be gone."""
        self.remove_reserved_iova(None)
        self.allowed = IntervalTree()
        warn = self.kernel.warn_on
        warn(bool(self.reserved), "iopt_destroy_table: reserved left")
        warn(bool(self.domains), "iopt_destroy_table: domains left")
        warn(bool(self.access_list), "iopt_destroy_table: accesses left")
        warn(bool(self.areas), "iopt_destroy_table: areas left")
