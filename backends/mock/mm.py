"""Simulated user memory: the task's mm, its VMAs, and the physical pages behind them.

Every user page that has been touched has a :class:`PhysPage` with a PFN, so the mock
IOMMU can compare the PFNs it maps with the PFNs a fresh GUP finds (MD_CHECK_MAP) and
count FOLL_PIN pins per page (MD_CHECK_REFS). Page contents are kept lazily: a page has
bytes only once something wrote to it; reading an untouched page gives zeros.

Backing objects follow the kernel's split:

- anonymous memory (shared -> one shmem-like object per mapping, private -> the
  mapping's own pages); ``hugetlb`` backs it with compound 2 MiB pages (MAP_HUGETLB);
- memfd files (:class:`MemFile`): pages are the page cache, shared by every mapping of
  the same file offset; ``ftruncate`` drops the pages past the new size;
- MAP_PRIVATE of a file: reads see the page cache until the first write (or a
  FOLL_LONGTERM pin, which "unshares" first) gives the mapping its own copy.

Faults follow GUP: no VMA, a missing PROT bit, or a file page past EOF is EFAULT.
"""

from __future__ import annotations

from bisect import bisect_right
from errno import EFAULT, EINVAL, ENOMEM, EOVERFLOW

from backends.mock.errors import kerr

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
HPAGE_SIZE = 2 * 1024 * 1024
"""THP / hugetlb PMD size (hpage_pmd_size on x86_64)."""
HPAGE_NR = HPAGE_SIZE // PAGE_SIZE

PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

TASK_SIZE = 1 << 47
"""The top of x86_64 user space; addresses above it always fault."""
MMAP_TOP = 0x7F00_0000_0000
"""mmap() places new mappings top-down from here."""

_ZERO_PAGE = bytes(PAGE_SIZE)
_U64 = (1 << 64) - 1


class PhysPage:
    """One physical page (a ``struct page``): its PFN, lazily kept data and pin count."""

    __slots__ = ("compound", "data", "pfn", "pins")

    def __init__(self, pfn: int, compound: bool) -> None:
        self.pfn = pfn
        self.compound = compound
        self.data: bytearray | None = None
        self.pins = 0
        """FOLL_PIN references (page_ref_count / GUP_PIN_COUNTING_BIAS)."""

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (zeros if never written)."""
        if self.data is None:
            return _ZERO_PAGE[:length]
        return bytes(self.data[offset:offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Store bytes at ``offset``, materializing the page's data on first write."""
        if self.data is None:
            self.data = bytearray(PAGE_SIZE)
        self.data[offset:offset + len(data)] = data

    def copy_from(self, other: PhysPage) -> None:
        """Take ``other``'s contents (a COW copy)."""
        self.data = None if other.data is None else bytearray(other.data)


class PhysMem:
    """The PFN allocator of the simulated machine."""

    def __init__(self) -> None:
        self._next_pfn = 0x100000

    def alloc(self, compound: bool = False) -> PhysPage:
        """One new page."""
        page = PhysPage(self._next_pfn, compound)
        self._next_pfn += 1
        return page

    def alloc_huge(self) -> list[PhysPage]:
        """A 2 MiB compound page: HPAGE_NR physically contiguous pages."""
        base = (self._next_pfn + HPAGE_NR - 1) & ~(HPAGE_NR - 1)
        self._next_pfn = base + HPAGE_NR
        return [PhysPage(base + i, True) for i in range(HPAGE_NR)]


class MemObject:
    """What a mapping's pages come from: anonymous memory or a memfd's page cache."""

    pfnmap = False
    """True for a VM_PFNMAP mapping (a driver's pages): the CPU reaches it, GUP does not."""

    def __init__(self, phys: PhysMem, *, hugetlb: bool = False) -> None:
        self.phys = phys
        self.hugetlb = hugetlb
        self.pages: dict[int, PhysPage] = {}
        self.nvmas = 0
        """How many mappings (in any mm) map this object."""

    @property
    def is_file(self) -> bool:
        """True for a memfd (shmem file)."""
        return False

    def in_bounds(self, index: int) -> bool:
        """Whether page ``index`` exists (a file has a size, anonymous memory does not)."""
        return True

    def page(self, index: int) -> PhysPage:
        """The page at ``index``, allocated on first use."""
        page = self.pages.get(index)
        if page is None:
            if self.hugetlb:
                base = index & ~(HPAGE_NR - 1)
                for i, huge in enumerate(self.phys.alloc_huge()):
                    self.pages.setdefault(base + i, huge)
                page = self.pages[index]
            else:
                page = self.phys.alloc()
                self.pages[index] = page
        return page

    def copy(self) -> MemObject:
        """A private copy with the contents of every page present (fork)."""
        twin = MemObject(self.phys, hugetlb=self.hugetlb)
        for index in sorted(self.pages):
            twin.page(index).copy_from(self.pages[index])
        return twin

    def vma_open(self) -> None:
        """``vm_ops->open``: one more VMA maps the object (a split)."""

    def vma_close(self) -> None:
        """``vm_ops->close``: a VMA of the object went away."""

    def drop(self, first: int, last: int) -> None:
        """Free the pages ``[first, last]`` (their pins keep the PhysPage alive)."""
        if last - first + 1 < len(self.pages):
            for index in range(first, last + 1):
                self.pages.pop(index, None)
        else:
            for index in [i for i in self.pages if first <= i <= last]:
                del self.pages[index]


class MemFile(MemObject):
    """A memfd: a shmem inode with a size, its pages the page cache."""

    def __init__(self, phys: PhysMem, size: int, name: str) -> None:
        super().__init__(phys)
        self.size = size
        self.name = name

    @property
    def is_file(self) -> bool:
        """Always True."""
        return True

    def in_bounds(self, index: int) -> bool:
        """Pages at or past EOF do not exist (SIGBUS, EFAULT for GUP)."""
        return index * PAGE_SIZE < self.size

    def truncate(self, size: int) -> None:
        """ftruncate(2): a shrink drops the page cache past the new size."""
        if size < 0:
            raise kerr(EINVAL)
        if size < self.size and self.pages:
            first = (size + PAGE_SIZE - 1) // PAGE_SIZE
            self.drop(first, max(self.pages))
        self.size = size


class Vma:
    """One mapping ``[start, end)`` of the mm."""

    __slots__ = ("cow", "end", "obj", "pgoff", "prot", "read_fast", "shared", "start",
                 "write_fast")

    def __init__(self, start: int, end: int, prot: int, shared: bool, obj: MemObject,
                 pgoff: int, cow: dict[int, PhysPage] | None) -> None:
        self.start = start
        self.end = end
        self.prot = prot
        self.shared = shared
        self.obj = obj
        self.pgoff = pgoff
        """The object page index mapped at ``start``."""
        self.cow = cow
        """Private copies of a MAP_PRIVATE file mapping, by object page index."""
        # Plain anonymous memory needs no per-page checks on CPU access.
        plain = cow is None and not obj.is_file
        self.read_fast = plain and bool(prot & PROT_READ)
        self.write_fast = plain and bool(prot & PROT_WRITE)

    def index_of(self, addr: int) -> int:
        """The object page index behind ``addr``."""
        return self.pgoff + ((addr - self.start) >> PAGE_SHIFT)


class Mm:
    """The simulated task's address space (``struct mm_struct``)."""

    def __init__(self, phys: PhysMem) -> None:
        self.phys = phys
        self._starts: list[int] = []
        self._vmas: list[Vma] = []
        self._top = MMAP_TOP
        self._last: Vma | None = None
        self.pinned_vm = 0
        """mm->pinned_vm, in pages (VmPin)."""
        self.locked_vm = 0
        """mm->locked_vm, in pages (VmLck)."""
        self.alive = True
        """mm_users > 0: False once the owning task exited (mmget_not_zero fails)."""

    # -- fork and exit ------------------------------------------------------
    def fork(self) -> Mm:
        """dup_mm(): the same mappings at the same addresses. Shared mappings share
        their pages; private ones get copies of the pages present now (the kernel
        copies on write, and at once for pages pinned for DMA; a copy now reads the
        same), and the counters start at zero."""
        child = Mm(self.phys)
        child._top = self._top
        copies: dict[int, MemObject] = {}  # VMAs split from one mapping share a copy
        for vma in self._vmas:
            obj = vma.obj
            cow: dict[int, PhysPage] | None = None
            if vma.cow is not None:
                cow = {}
                for index, page in vma.cow.items():
                    copy = self.phys.alloc()
                    copy.copy_from(page)
                    cow[index] = copy
            elif not vma.shared and not obj.is_file:
                twin = copies.get(id(obj))
                if twin is None:
                    twin = copies[id(obj)] = obj.copy()
                obj = twin
            child._insert(Vma(vma.start, vma.end, vma.prot, vma.shared, obj, vma.pgoff,
                              cow))
        return child

    def exit(self) -> None:
        """exit_mmap(): every mapping goes; pinned pages live on in their pinners."""
        for start, end in self.vmas():
            self.munmap(start, end - start)
        self.alive = False

    # -- mappings ---------------------------------------------------------
    def _place(self, length: int, align: int) -> int:
        addr = (self._top - length) & ~(align - 1)
        if addr < 0x1000_0000:
            raise kerr(ENOMEM)
        self._top = addr - PAGE_SIZE  # a guard gap: running off a mapping faults
        return addr

    def _insert(self, vma: Vma) -> None:
        vma.obj.nvmas += 1
        i = bisect_right(self._starts, vma.start)
        self._starts.insert(i, vma.start)
        self._vmas.insert(i, vma)

    def mmap(self, length: int, *, prot: int, shared: bool, obj: MemObject,
             pgoff: int = 0, align: int = PAGE_SIZE) -> int:
        """Map ``obj`` from page ``pgoff``; returns the new address."""
        if length <= 0:
            raise kerr(EINVAL)
        if align < PAGE_SIZE or align & (align - 1):
            raise kerr(EINVAL)
        length = (length + PAGE_SIZE - 1) & PAGE_MASK
        addr = self._place(length, align)
        cow: dict[int, PhysPage] | None = {} if (obj.is_file and not shared) else None
        self._insert(Vma(addr, addr + length, prot, shared, obj, pgoff, cow))
        return addr

    def mmap_anon(self, length: int, *, prot: int = PROT_READ | PROT_WRITE,
                  shared: bool = True, align: int = PAGE_SIZE, hugetlb: bool = False) -> int:
        """Anonymous zeroed memory (``MAP_ANONYMOUS``; with ``hugetlb`` it is
        ``MAP_HUGETLB``: rounded up to and aligned on whole huge pages)."""
        if hugetlb:
            length = (length + HPAGE_SIZE - 1) & ~(HPAGE_SIZE - 1)
            align = max(align, HPAGE_SIZE)
        return self.mmap(length, prot=prot, shared=shared,
                         obj=MemObject(self.phys, hugetlb=hugetlb), align=align)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2): unmap ``[addr, addr+length)``, splitting mappings at the edges."""
        if addr & (PAGE_SIZE - 1) or length <= 0 or addr + length > TASK_SIZE:
            raise kerr(EINVAL)
        end = addr + ((length + PAGE_SIZE - 1) & PAGE_MASK)
        self._last = None
        i = max(bisect_right(self._starts, addr) - 1, 0)
        while i < len(self._vmas):
            vma = self._vmas[i]
            if vma.start >= end:
                break
            if vma.end <= addr:
                i += 1
                continue
            if vma.obj.hugetlb and (addr | (end - addr)) & (HPAGE_SIZE - 1):
                raise kerr(EINVAL)  # hugetlb mappings unmap in whole huge pages
            del self._vmas[i]
            del self._starts[i]
            vma.obj.nvmas -= 1
            cut_start = max(vma.start, addr)
            cut_end = min(vma.end, end)
            if vma.start < cut_start:
                vma.obj.vma_open()
                self._insert(Vma(vma.start, cut_start, vma.prot, vma.shared, vma.obj,
                                 vma.pgoff, vma.cow))
                i += 1
            if cut_end < vma.end:
                vma.obj.vma_open()
                self._insert(Vma(cut_end, vma.end, vma.prot, vma.shared, vma.obj,
                                 vma.index_of(cut_end), vma.cow))
                i += 1
            if not vma.obj.is_file:
                # Anonymous pages of the unmapped part are gone for good, unless
                # they are shared and another mapping (a forked mm's) still has them.
                if not vma.shared:
                    vma.obj.drop(vma.index_of(cut_start), vma.index_of(cut_end - 1))
                elif not vma.obj.nvmas and vma.obj.pages:
                    vma.obj.drop(min(vma.obj.pages), max(vma.obj.pages))
            vma.obj.vma_close()

    def find_vma(self, addr: int) -> Vma | None:
        """The mapping containing ``addr``."""
        last = self._last
        if last is not None and last.start <= addr < last.end:
            return last
        i = bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        vma = self._vmas[i]
        if addr < vma.end:
            self._last = vma
            return vma
        return None

    def vmas(self) -> list[tuple[int, int]]:
        """Every mapping as (start, end)."""
        return [(v.start, v.end) for v in self._vmas]

    # -- faults -----------------------------------------------------------
    def _fault(self, addr: int, write: bool, unshare: bool) -> PhysPage:
        """The page behind ``addr`` as a fault (or GUP) would resolve it."""
        vma = self.find_vma(addr)
        if vma is None:
            raise kerr(EFAULT)
        if not vma.prot & (PROT_WRITE if write else PROT_READ):
            raise kerr(EFAULT)
        index = vma.index_of(addr)
        obj = vma.obj
        if not obj.in_bounds(index):
            raise kerr(EFAULT)
        cow = vma.cow
        if cow is None:
            return obj.page(index)
        page = cow.get(index)
        if page is not None:
            return page
        if not (write or unshare):
            return obj.page(index)
        # Break COW: the mapping gets its own copy of the file page.
        page = self.phys.alloc()
        page.copy_from(obj.page(index))
        cow[index] = page
        return page

    def _peek_page(self, addr: int) -> PhysPage | None:
        """The page a read at ``addr`` sees without allocating; None reads as zeros."""
        vma = self.find_vma(addr)
        if vma is None or not vma.prot & PROT_READ:
            raise kerr(EFAULT)
        index = vma.index_of(addr)
        obj = vma.obj
        if not obj.in_bounds(index):
            raise kerr(EFAULT)
        if vma.cow is not None:
            page = vma.cow.get(index)
            if page is not None:
                return page
        return obj.pages.get(index)

    # -- CPU access (copy_from_user / copy_to_user, peek / poke) ----------
    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes at ``addr``; EFAULT if any byte is not readable."""
        if length <= 0:
            return b""
        vma = self._last
        if vma is None or not vma.start <= addr < vma.end:
            vma = self.find_vma(addr)
        if vma is not None and vma.read_fast and addr + length <= vma.end:
            # Fast path: plain anonymous memory, pages keyed by index.
            pages = vma.obj.pages
            index = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
            offset = addr & (PAGE_SIZE - 1)
            if offset + length <= PAGE_SIZE:
                page = pages.get(index)
                data = None if page is None else page.data
                if data is None:
                    return _ZERO_PAGE[:length]
                return bytes(data[offset:offset + length])
            out: list[bytes] = []
            while length:
                chunk = min(length, PAGE_SIZE - offset)
                page = pages.get(index)
                data = None if page is None else page.data
                out.append(_ZERO_PAGE[:chunk] if data is None
                           else bytes(data[offset:offset + chunk]))
                length -= chunk
                index += 1
                offset = 0
            return b"".join(out)
        if addr < 0 or addr + length > TASK_SIZE:
            raise kerr(EFAULT)
        out = []
        while length:
            offset = addr & (PAGE_SIZE - 1)
            chunk = min(length, PAGE_SIZE - offset)
            page = self._peek_page(addr)
            out.append(_ZERO_PAGE[:chunk] if page is None else page.read(offset, chunk))
            addr += chunk
            length -= chunk
        return b"".join(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``addr``; bytes before a faulting page stay written."""
        length = len(data)
        if not length:
            return
        vma = self._last
        if vma is None or not vma.start <= addr < vma.end:
            vma = self.find_vma(addr)
        offset = addr & (PAGE_SIZE - 1)
        if vma is not None and vma.write_fast and addr + length <= vma.end:
            # Fast path: plain anonymous memory, pages keyed by index.
            index = ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff
            if offset + length <= PAGE_SIZE:
                vma.obj.page(index).write(offset, data)
                return
            page_of = vma.obj.page
            view = memoryview(data)
            done = 0
            while done < length:
                chunk = min(length - done, PAGE_SIZE - offset)
                page_of(index).write(offset, view[done:done + chunk])
                done += chunk
                index += 1
                offset = 0
            return
        if addr < 0 or addr + length > TASK_SIZE:
            raise kerr(EFAULT)
        view = memoryview(data)
        done = 0
        while done < length:
            offset = addr & (PAGE_SIZE - 1)
            chunk = min(length - done, PAGE_SIZE - offset)
            self._fault(addr, True, False).write(offset, view[done:done + chunk])
            addr += chunk
            done += chunk

    def clear(self, addr: int, length: int) -> None:
        """clear_user: zero ``length`` bytes at ``addr``."""
        if length > 0:
            self.write(addr, bytes(length))

    # -- GUP ---------------------------------------------------------------
    def get_user_pages(self, addr: int, npages: int, *, write: bool = False,
                       longterm: bool = False) -> list[PhysPage]:
        """The pages of ``npages`` user pages from page-aligned ``addr``, without pinning.

        ``longterm`` is FOLL_LONGTERM: a private mapping is unshared first, so later CPU
        writes never move the page the caller keeps.
        """
        if addr & (PAGE_SIZE - 1) or addr < 0 or addr + npages * PAGE_SIZE > TASK_SIZE:
            raise kerr(EFAULT)
        pages: list[PhysPage] = []
        end = addr + npages * PAGE_SIZE
        while addr < end:
            vma = self.find_vma(addr)
            if vma is None or vma.obj.pfnmap:
                raise kerr(EFAULT)
            # One VMA lookup per run of pages in the same mapping; each page then
            # faults in address order, as GUP walks them.
            run_end = min(end, vma.end)
            if vma.cow is None and not vma.obj.is_file \
                    and vma.prot & (PROT_WRITE if write else PROT_READ):
                obj_page = vma.obj.page
                first = vma.index_of(addr)
                pages.extend(obj_page(first + i)
                             for i in range((run_end - addr) >> PAGE_SHIFT))
            else:
                for at in range(addr, run_end, PAGE_SIZE):
                    pages.append(self._fault(at, write, longterm))
            addr = run_end
        return pages

    def get_user_pages_fast(self, addr: int, npages: int) -> list[PhysPage]:
        """get_user_pages_fast(): like :meth:`get_user_pages`, but ``addr`` is rounded
        down to its page first; a range that wraps is EOVERFLOW."""
        start = addr & PAGE_MASK & _U64
        end = start + npages * PAGE_SIZE
        if end > _U64:
            raise kerr(EOVERFLOW)
        return self.get_user_pages(start, npages)

    def pin_user_pages(self, addr: int, npages: int, *, write: bool,
                       longterm: bool = True) -> list[PhysPage]:
        """pin_user_pages(FOLL_PIN): all ``npages`` or EFAULT with nothing pinned."""
        pages = self.get_user_pages(addr, npages, write=write, longterm=longterm)
        for page in pages:
            page.pins += 1
        return pages


def unpin_user_pages(pages: list[PhysPage]) -> None:
    """unpin_user_pages: drop one FOLL_PIN reference from each page."""
    for page in pages:
        page.pins -= 1
