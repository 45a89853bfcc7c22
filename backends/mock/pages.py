"""iopt_pages: the pinned pages behind areas, and their accounting (pages.c).

One :class:`IoptPages` describes a linear run of user VA (or memfd offsets) that one or
more areas map, possibly in several IOAS after IOAS_COPY. A page index is pinned
exactly once while something needs it: an area that is filled into a domain (the
kernel's ``domains_itree``) or an in-kernel access (``access_itree``). The model keeps
both as per-index cover counts; an index is pinned iff one of them is non-zero, and
unpinned when both drop to zero. Pinning goes through the task's mm like
``pin_user_pages(FOLL_LONGTERM)`` (or ``memfd_pin_folios`` for files), so a bad VA is
EFAULT and a private mapping is unshared first.

``npinned`` / ``last_npinned`` and the three accounting modes (NONE, USER: the user's
locked_vm against RLIMIT_MEMLOCK; MM: the mm's locked_vm) follow
``iopt_pages_update_pinned``; ``pinned_vm`` always moves.
"""

from __future__ import annotations

from errno import EFAULT, EINVAL, ENOMEM, EOVERFLOW, EPERM
from typing import TYPE_CHECKING

from backends.mock.errors import kerr
from backends.mock.fault import (
    ACCESS_NODE_ALLOC,
    PAGES_ALLOC,
    PAGES_TO_XARRAY,
    RW_PAGE,
    UPDATE_PINNED,
    USER_PIN,
    temp_kmalloc,
)
from backends.mock.files import File, MemfdFile
from backends.mock.interval_tree import U64_MAX
from backends.mock.mm import PAGE_SHIFT, PAGE_SIZE, PhysPage

if TYPE_CHECKING:
    from backends.mock.dmabuf import DmaBufFile
    from backends.mock.io_pagetable import IoptArea
    from backends.mock.kernel import Kernel
    from backends.mock.mm import Mm
    from backends.mock.task import Task, UserStruct

IOPT_ADDRESS_USER = 0
IOPT_ADDRESS_FILE = 1
IOPT_ADDRESS_DMABUF = 2

ACCOUNT_NONE = 0
ACCOUNT_USER = 1
ACCOUNT_MM = 2

IOMMUFD_ACCESS_RW_WRITE = 1 << 0
IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1
IOMMUFD_ACCESS_RW_SLOW_PATH = 1 << 2
"""The selftest-only flag that forces the "other mm" paths (``__IOMMUFD_ACCESS_RW_SLOW_PATH``)."""

_POINTER_SIZE = 8
_BATCH_ELEM_SIZE = 8 + 4  # struct pfn_batch: one unsigned long pfn and one u32 npfns


class IoptPagesAccess:
    """One ``iopt_pages_access`` interval: an in-kernel user of ``[start, last]``."""

    __slots__ = ("last", "start", "users")

    def __init__(self, start: int, last: int) -> None:
        self.start = start
        self.last = last
        self.users = 1


class IoptPages:
    """``struct iopt_pages``."""

    __slots__ = (
        "acc_cover",
        "accesses",
        "account_mode",
        "dmabuf",
        "dmabuf_areas",
        "dmabuf_revoked",
        "dom_cover",
        "file",
        "kernel",
        "kref",
        "last_npinned",
        "npages",
        "npinned",
        "pinned",
        "source_mm",
        "source_task",
        "source_user",
        "start",
        "type",
        "uptr",
        "writable",
    )

    def __init__(self, kernel: Kernel, start_byte: int, length: int, writable: bool) -> None:
        """iopt_alloc_pages()."""
        if length > U64_MAX - PAGE_SIZE or length == 0:
            raise kerr(EINVAL)
        if kernel.should_fail(PAGES_ALLOC):
            raise kerr(ENOMEM)
        self.kernel = kernel
        self.kref = 1
        self.npages = (length + start_byte + PAGE_SIZE - 1) // PAGE_SIZE
        self.npinned = 0
        self.last_npinned = 0
        self.writable = writable
        self.account_mode = ACCOUNT_NONE if kernel.task.cap_ipc_lock else ACCOUNT_USER
        # Whose memory and whose limits: the caller's, until IOAS_CHANGE_PROCESS.
        self.source_mm = kernel.mm
        self.source_task = kernel.task
        self.source_user = kernel.task.user
        self.type = IOPT_ADDRESS_USER
        self.uptr = 0
        self.file: File | None = None
        self.start = 0
        self.pinned: dict[int, PhysPage] = {}
        self.dom_cover: dict[int, int] = {}
        self.acc_cover: dict[int, int] = {}
        self.accesses: list[IoptPagesAccess] = []
        self.dmabuf: DmaBufFile | None = None
        self.dmabuf_revoked = False
        self.dmabuf_areas: list[IoptArea] = []
        """Areas that map these dma-buf pages (stale ones have left their table)."""

    @classmethod
    def alloc_user(cls, kernel: Kernel, uptr: int, length: int,
                   writable: bool) -> IoptPages:
        """iopt_alloc_user_pages(): pages of user VA ``uptr``."""
        if uptr + length > U64_MAX:
            raise kerr(EOVERFLOW)
        uptr_down = uptr & ~(PAGE_SIZE - 1)
        pages = cls(kernel, uptr - uptr_down, length, writable)
        pages.uptr = uptr_down
        pages.type = IOPT_ADDRESS_USER
        return pages

    @classmethod
    def alloc_file(cls, kernel: Kernel, file: File, start_byte: int, start: int,
                   length: int, writable: bool) -> IoptPages:
        """iopt_alloc_file_pages(): pages of a file from byte ``start``."""
        pages = cls(kernel, start_byte, length, writable)
        file.get()
        pages.file = file
        pages.start = start - start_byte
        pages.type = IOPT_ADDRESS_FILE
        return pages

    @classmethod
    def alloc_dmabuf(cls, kernel: Kernel, dmabuf: DmaBufFile, start_byte: int, start: int,
                     length: int, writable: bool) -> IoptPages:
        """iopt_alloc_dmabuf_pages(): the dma-buf's physical range from byte
        ``start``; nothing is pinned or accounted. EINVAL past the dma-buf's end,
        ENODEV if the exporter revoked it."""
        if dmabuf.size <= start + length - 1:
            raise kerr(EINVAL)
        pages = cls(kernel, start_byte, length, writable)
        pages.account_mode = ACCOUNT_NONE
        pages.type = IOPT_ADDRESS_DMABUF
        pages.start = start - start_byte
        try:
            memory = dmabuf.attach(pages)
        except OSError:
            pages.put()
            raise
        pages.dmabuf = dmabuf
        first = pages.start // PAGE_SIZE
        # Always read from the exporter's memory: every index is resident, unpinned.
        pages.pinned = {index: memory[first + index] for index in range(pages.npages)}
        return pages

    def dmabuf_revoke_notify(self) -> None:
        """iopt_revoke_notify(): unmap every area of these pages from the domains it
        is mapped into; from then on the pages have no memory."""
        if self.dmabuf_revoked:
            return
        for area in self.dmabuf_areas:
            iopt = area.iopt
            if area.pages is not self or iopt is None or area.storage_domain is None:
                continue
            for domain in iopt.domains:
                iopt.domain_unmap_area(domain, area, self)
        self.dmabuf_revoked = True
        self.pinned = {}

    # -- lifetime ---------------------------------------------------------
    def get(self) -> None:
        """kref_get()."""
        self.kref += 1

    def put(self) -> None:
        """iopt_put_pages(): the last reference releases the pages."""
        self.kref -= 1
        if self.kref:
            return
        warn = self.kernel.warn_on
        warn(bool(self.accesses), "iopt_release_pages: access_itree not empty")
        warn(bool(self.dom_cover), "iopt_release_pages: domains_itree not empty")
        warn(self.npinned != 0, "iopt_release_pages: pages still pinned")
        if self.file is not None:
            self.file.put()
            self.file = None
        if self.dmabuf is not None:
            self.dmabuf.detach(self)
            self.dmabuf = None

    # -- pinning (the pfn_reader) -------------------------------------------
    def start_addr(self) -> int:
        """The address (or file offset) of index 0, for the IOVA alignment guess."""
        return self.start if self.type == IOPT_ADDRESS_FILE else self.uptr

    def _gup(self, index: int, npages: int) -> list[PhysPage]:
        """Pin ``npages`` pages from ``index`` at the source (pin_user_pages_fast /
        memfd_pin_folios)."""
        if self.type == IOPT_ADDRESS_FILE:
            file = self.file
            if not isinstance(file, MemfdFile) or not file.shmem:
                raise kerr(EINVAL)
            start = self.start + index * PAGE_SIZE
            end = start + npages * PAGE_SIZE - 1
            memfile = file.memfile
            if end >= memfile.size:
                raise kerr(EINVAL)
            first = start >> PAGE_SHIFT
            pinned = [memfile.page(first + i) for i in range(npages)]
            for page in pinned:
                page.pins += 1
            return pinned
        mm = self.source_mm
        if mm is not self.kernel.mm and not mm.alive:  # mmget_not_zero() failed
            raise kerr(EFAULT)
        return mm.pin_user_pages(self.uptr + index * PAGE_SIZE, npages,
                                 write=self.writable, longterm=True)

    def _unpinned_runs(self, first: int, last: int) -> list[tuple[int, int]]:
        """The runs of ``[first, last]`` nobody holds pinned. Never walks more indexes
        than are pinned, so a huge bogus range fails at its first bad page, not later."""
        pinned = self.pinned
        runs: list[tuple[int, int]] = []
        if not pinned:
            return [(first, last)]
        if last - first + 1 > len(pinned):
            held = sorted(i for i in pinned if first <= i <= last)
            cur = first
            for index in held:
                if index > cur:
                    runs.append((cur, index - 1))
                cur = index + 1
            if cur <= last:
                runs.append((cur, last))
            return runs
        run_start = -1
        for index in range(first, last + 1):
            if index in pinned:
                if run_start >= 0:
                    runs.append((run_start, index - 1))
                    run_start = -1
            elif run_start < 0:
                run_start = index
        if run_start >= 0:
            runs.append((run_start, last))
        return runs

    def _pin_runs(self, runs: list[tuple[int, int]], unum: int) -> list[int]:
        """pfn_reader_user_pin() over ``runs``, ``unum`` pages per call."""
        kernel = self.kernel
        pinned = self.pinned
        new: list[int] = []
        try:
            for run_first, run_last in runs:
                index = run_first
                while index <= run_last:
                    n = min(run_last - index + 1, unum)
                    if kernel.should_fail(USER_PIN):
                        raise kerr(EFAULT)
                    for i, page in enumerate(self._gup(index, n)):
                        pinned[index + i] = page
                    new.extend(range(index, index + n))
                    self.npinned += n
                    index += n
        except OSError:
            self.unpin(new)
            raise
        return new

    def pin_range(self, first: int, last: int) -> list[int]:
        """Read the PFNs of ``[first, last]`` like ``pfn_reader_first``: indexes no one
        holds are pinned from the source. Returns the newly pinned indexes (the caller
        must cover or :meth:`unpin` them); all-or-nothing."""
        kernel = self.kernel
        npages = last - first + 1
        # batch_init(): the pfns + npfns array
        temp_kmalloc(kernel.should_fail, npages * _BATCH_ELEM_SIZE, kernel.test_memory_limit,
                     PAGE_SIZE)
        if self.type == IOPT_ADDRESS_DMABUF:
            return []  # read from the exporter's memory, never pinned
        runs = self._unpinned_runs(first, last)
        if not runs:
            return []
        # The upages / ufolios array, capped at the (selftest-tunable) memory limit.
        size = temp_kmalloc(kernel.should_fail, npages * _POINTER_SIZE,
                            kernel.test_memory_limit, PAGE_SIZE)
        return self._pin_runs(runs, max(1, size // _POINTER_SIZE))

    def unpin(self, indexes: list[int]) -> None:
        """Unpin pages this reader pinned that nothing covers (pfn_reader_unpin)."""
        pinned = self.pinned
        for index in indexes:
            page = pinned.pop(index)
            page.pins -= 1
        self.npinned -= len(indexes)

    # -- cover counts (domains_itree / access_itree) -----------------------
    def cover(self, which: dict[int, int], first: int, last: int) -> None:
        """One more holder of ``[first, last]`` in ``which`` (dom_cover or acc_cover)."""
        get = which.get
        for index in range(first, last + 1):
            which[index] = get(index, 0) + 1

    def uncover(self, which: dict[int, int], first: int, last: int) -> None:
        """One holder less; pages no holder keeps are unpinned."""
        other = self.acc_cover if which is self.dom_cover else self.dom_cover
        dead: list[int] = []
        for index in range(first, last + 1):
            n = which[index] - 1
            if n:
                which[index] = n
            else:
                del which[index]
                if index not in other:
                    dead.append(index)
        if self.type != IOPT_ADDRESS_DMABUF:
            self.unpin(dead)

    # -- accounting -------------------------------------------------------
    def update_pinned(self, npages: int, inc: bool) -> None:
        """iopt_pages_update_pinned(): charge (or uncharge) the source user or mm
        against the source task's RLIMIT_MEMLOCK; pinned_vm of the source mm always
        moves."""
        update_pinned(self.kernel, self.account_mode, self.source_mm, self.source_task,
                      self.source_user, npages, inc)
        self.last_npinned = self.npinned

    def reader_update_pinned(self) -> None:
        """pfn_reader_user_update_pinned(): account what the reader pinned."""
        if self.npinned == self.last_npinned:
            return
        if self.npinned < self.last_npinned:
            self.update_pinned(self.last_npinned - self.npinned, False)
            return
        if self.kernel.should_fail(UPDATE_PINNED):
            raise kerr(ENOMEM)
        self.update_pinned(self.npinned - self.last_npinned, True)

    def update_unpinned(self) -> None:
        """update_unpinned(): account pages released since the last update."""
        if self.kernel.warn_on(self.npinned > self.last_npinned, "update_unpinned"):
            return
        if self.npinned != self.last_npinned:
            try:
                self.update_pinned(self.last_npinned - self.npinned, False)
            except OSError:
                # pages.c drops this result: an MM-mode uncharge of an mm that has
                # exited fails (EINVAL) and the counters of that dead mm stay as
                # they are.
                pass

    # -- in-kernel accesses -----------------------------------------------
    def _exact_access(self, start: int, last: int) -> IoptPagesAccess | None:
        for access in self.accesses:
            if access.start == start and access.last == last:
                return access
        return None

    def _fill_xarray(self, first: int, last: int) -> list[int]:
        """iopt_pages_fill_xarray(): make ``[first, last]`` resident for an access."""
        kernel = self.kernel
        acc = self.acc_cover
        dom = self.dom_cover
        new: list[int] = []
        try:
            index = first
            while index <= last:
                kind = 1 if index in acc else 2 if index in dom else 0
                end = index
                while end < last:
                    nxt = end + 1
                    nkind = 1 if nxt in acc else 2 if nxt in dom else 0
                    if nkind != kind:
                        break
                    end = nxt
                if kind == 0:
                    new.extend(self._pin_runs([(index, end)], end - index + 1))
                if kind != 1 and kernel.should_fail(PAGES_TO_XARRAY):
                    raise kerr(EINVAL)
                index = end + 1
            self.reader_update_pinned()
        except OSError:
            self.unpin(new)
            raise
        return new

    def add_access(self, start: int, last: int, flags: int) -> list[PhysPage]:
        """iopt_area_add_access() on the pages: pin ``[start, last]`` and return them."""
        if flags & IOMMUFD_ACCESS_RW_WRITE and not self.writable:
            raise kerr(EPERM)
        if self.type == IOPT_ADDRESS_DMABUF:
            raise kerr(EINVAL)
        access = self._exact_access(start, last)
        if access is not None:
            access.users += 1
        else:
            if self.kernel.should_fail(ACCESS_NODE_ALLOC):
                raise kerr(ENOMEM)
            self._fill_xarray(start, last)
            self.accesses.append(IoptPagesAccess(start, last))
            self.cover(self.acc_cover, start, last)
        return [self.pinned[i] for i in range(start, last + 1)]

    def remove_access(self, start: int, last: int) -> None:
        """iopt_area_remove_access() on the pages."""
        access = self._exact_access(start, last)
        if self.kernel.warn_on(access is None, "iopt_area_remove_access: no access"):
            return
        assert access is not None
        access.users -= 1
        if access.users:
            return
        self.accesses.remove(access)
        self.uncover(self.acc_cover, start, last)
        self.update_unpinned()

    # -- CPU access through the pages (iommufd_access_rw) ------------------
    def rw_access(self, start_byte: int, buf: bytearray, pos: int, length: int,
                  flags: int) -> None:
        """iopt_pages_rw_access(): copy ``length`` bytes between ``buf[pos:]`` and the
        pages from ``start_byte``; IOMMUFD_ACCESS_RW_WRITE writes the pages."""
        write = bool(flags & IOMMUFD_ACCESS_RW_WRITE)
        if write and not self.writable:
            raise kerr(EPERM)
        if self.type == IOPT_ADDRESS_DMABUF:
            raise kerr(EINVAL)
        first = start_byte // PAGE_SIZE
        last = (start_byte + length - 1) // PAGE_SIZE
        if self.type != IOPT_ADDRESS_USER:
            self._rw_slow(first, last, start_byte % PAGE_SIZE, buf, pos, length, write)
            return
        mm = self.source_mm
        # The selftest's SLOW_PATH flag takes the "pages of another mm" paths.
        change_mm = mm is not self.kernel.mm or bool(flags & IOMMUFD_ACCESS_RW_SLOW_PATH)
        if change_mm and not flags & IOMMUFD_ACCESS_RW_KTHREAD:
            if first == last:
                self._rw_page(first, start_byte % PAGE_SIZE, buf, pos, length, write)
            else:
                self._rw_slow(first, last, start_byte % PAGE_SIZE, buf, pos, length,
                              write)
            return
        if change_mm and not mm.alive:  # a kthread could not use the mm
            self._rw_slow(first, last, start_byte % PAGE_SIZE, buf, pos, length, write)
            return
        addr = self.uptr + start_byte
        if write:
            mm.write(addr, memoryview(buf)[pos:pos + length])
        else:
            buf[pos:pos + length] = mm.read(addr, length)

    def _rw_page(self, index: int, offset: int, buf: bytearray, pos: int, length: int,
                 write: bool) -> None:
        """iopt_pages_rw_page(): pin one page of the source mm, copy, unpin (the
        slow path if that mm is gone)."""
        if not self.source_mm.alive:
            self._rw_slow(index, index, offset, buf, pos, length, write)
            return
        if self.kernel.should_fail(RW_PAGE):
            raise kerr(EINVAL)
        [page] = self.source_mm.pin_user_pages(self.uptr + index * PAGE_SIZE, 1,
                                               write=write, longterm=False)
        try:
            _copy_page(page, offset, buf, pos, length, write)
        finally:
            page.pins -= 1

    def _rw_slow(self, first: int, last: int, offset: int, buf: bytearray, pos: int,
                 length: int, write: bool) -> None:
        """iopt_pages_rw_slow(): read the PFNs as a domain would, copy page by page."""
        new = self.pin_range(first, last)
        try:
            for index in range(first, last + 1):
                chunk = min(length, PAGE_SIZE - offset)
                _copy_page(self.pinned[index], offset, buf, pos, chunk, write)
                pos += chunk
                length -= chunk
                offset = 0
        finally:
            self.unpin(new)


def update_pinned(kernel: Kernel, account_mode: int, mm: Mm, task: Task, user: UserStruct,
                  npages: int, inc: bool) -> None:
    """The accounting of iopt_pages_update_pinned() for ``npages`` of ``mm``'s pages
    pinned on behalf of ``task`` and ``user``: ENOMEM past RLIMIT_MEMLOCK (USER: the
    user's locked_vm, MM: the mm's, which needs a live mm: EINVAL once it is gone)."""
    limit = task.memlock_limit_pages(PAGE_SHIFT)
    if account_mode == ACCOUNT_USER:
        if inc:
            if user.locked_vm + npages > limit:
                raise kerr(ENOMEM)
            user.locked_vm += npages
        else:
            if kernel.warn_on(user.locked_vm < npages, "decr_user_locked_vm"):
                return
            user.locked_vm -= npages
    elif account_mode == ACCOUNT_MM:
        if mm is not kernel.mm and not mm.alive:
            raise kerr(EINVAL)
        if inc:
            if mm.locked_vm + npages > limit:
                raise kerr(ENOMEM)
            mm.locked_vm += npages
        else:
            mm.locked_vm -= min(npages, mm.locked_vm)
    mm.pinned_vm += npages if inc else -npages


def _copy_page(page: PhysPage, offset: int, buf: bytearray, pos: int, length: int,
               write: bool) -> None:
    """copy_data_page()."""
    if write:
        page.write(offset, memoryview(buf)[pos:pos + length])
    else:
        buf[pos:pos + length] = page.read(offset, length)
