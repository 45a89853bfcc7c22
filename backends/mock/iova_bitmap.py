"""A user bitmap over an IOVA range, written through pinned user pages (iova_bitmap.c).

GET_DIRTY_BITMAP hands the driver an :class:`IovaBitmap`: bit ``n`` (bit ``n % 8`` of
byte ``n // 8``) stands for the IOVA granule ``iova + n * page_size``. The kernel never
copies the bitmap: it pins a window of the user's pages (at most one page of
``struct page`` pointers, so 512 pages of bitmap) and sets bits in them directly, so

- the bitmap may start anywhere in a page and span pages: byte offsets are kept from
  the first pinned page;
- bits are only ever set, never cleared (the caller zeroes the bitmap first);
- a window is pinned lazily, when the first bit outside the current one is set, and
  ``pin_user_pages_fast`` may pin fewer pages than asked: bits whose page could not be
  pinned are silently dropped (the ioctl still returns 0);
- a range that reaches past the bitmap's IOVA range ends the set there, but the bits
  past ``length`` that still fall in a pinned page are written (the kernel checks only
  the pinned window).
"""

from __future__ import annotations

from errno import EFAULT, EINVAL, ENOMEM
from typing import TYPE_CHECKING

from backends.mock.errors import kerr
from backends.mock.mm import PAGE_MASK, PAGE_SIZE, PhysPage, unpin_user_pages

if TYPE_CHECKING:
    from backends.mock.kernel import Kernel

BITS_PER_BYTE = 8
BITS_PER_PAGE = PAGE_SIZE * BITS_PER_BYTE
PAGES_PER_WINDOW = PAGE_SIZE // 8
"""One page of ``struct page *``: the most bitmap pages pinned at a time."""

# Fault points: the two allocations of iova_bitmap_alloc() (failslab, fail_page_alloc).
BITMAP_ALLOC = "iova_bitmap_alloc"
BITMAP_PAGES_ALLOC = "iova_bitmap_alloc_pages"


def _ffs(value: int) -> int:
    """__ffs(): the index of the lowest set bit."""
    return (value & -value).bit_length() - 1


class IovaBitmap:
    """``struct iova_bitmap`` with its pinned window (``struct iova_bitmap_map``)."""

    def __init__(self, kernel: Kernel, iova: int, length: int, page_size: int,
                 data: int) -> None:
        """iova_bitmap_alloc(): nothing is pinned yet; ENOMEM from its allocations."""
        if kernel.should_fail(BITMAP_ALLOC) or kernel.should_fail(BITMAP_PAGES_ALLOC):
            raise kerr(ENOMEM)
        self.kernel = kernel
        self.pgshift = _ffs(page_size)
        self.bitmap = data
        self.iova = iova
        self.length = length
        # Indexes count bytes of the user bitmap (the kernel walks a u8 pointer).
        self.mapped_total_index = self._offset_to_index(length - 1) + 1
        self.mapped_base_index = 0
        # The pinned window: pages, the offset of bit 0 in the first, its IOVA range.
        self.pages: list[PhysPage] = []
        self.pgoff = 0
        self.mapped_iova = iova
        self.mapped_length = 0

    # -- index arithmetic (relative IOVAs) ------------------------------------
    def _offset_to_index(self, offset: int) -> int:
        return (offset >> self.pgshift) // BITS_PER_BYTE

    def _index_to_offset(self, index: int) -> int:
        return (index * BITS_PER_BYTE) << self.pgshift

    def _window_length(self) -> int:
        """iova_bitmap_mapped_length(): the IOVA span the pinned bytes cover, capped at
        the end of the bitmap's range."""
        max_iova = self.iova + self.length - 1
        iova = self.iova + self._index_to_offset(self.mapped_base_index)
        nbytes = len(self.pages) * PAGE_SIZE - self.pgoff
        remaining = min(self.mapped_total_index - self.mapped_base_index, nbytes)
        span = self._index_to_offset(remaining)
        if iova + span - 1 > max_iova:
            span -= (iova + span - 1) - max_iova
        return span

    # -- pinning ----------------------------------------------------------------
    def _pin_user_pages_fast(self, addr: int, npages: int) -> list[PhysPage]:
        """pin_user_pages_fast(FOLL_WRITE): the writable pages from ``addr``'s page on,
        stopping at the first that faults."""
        start = addr & PAGE_MASK
        pinned: list[PhysPage] = []
        for i in range(npages):
            try:
                pinned += self.kernel.mm.pin_user_pages(start + i * PAGE_SIZE, 1, write=True,
                                                        longterm=False)
            except OSError:
                break
        return pinned

    def _get(self) -> None:
        """iova_bitmap_get(): pin the window starting at ``mapped_base_index``."""
        nbytes = self.mapped_total_index - self.mapped_base_index
        addr = self.bitmap + self.mapped_base_index
        npages = -(-nbytes // PAGE_SIZE) + (1 if addr % PAGE_SIZE else 0)
        pages = self._pin_user_pages_fast(addr, min(npages, PAGES_PER_WINDOW))
        if not pages:
            raise kerr(EFAULT)
        self.pages = pages
        self.mapped_iova = self.iova + self._index_to_offset(self.mapped_base_index)
        self.pgoff = addr % PAGE_SIZE
        self.mapped_length = self._window_length()

    def _put(self) -> None:
        """iova_bitmap_put()."""
        if self.pages:
            unpin_user_pages(self.pages)
            self.pages = []

    def _advance_to(self, iova: int) -> None:
        """iova_bitmap_advance_to(): move the window to the byte holding ``iova``'s bit.
        An IOVA before the bitmap wraps (unsigned) past its end: EINVAL, as past it."""
        index = self._offset_to_index((iova - self.iova) % (1 << 64))
        if index >= self.mapped_total_index:
            raise kerr(EINVAL)
        self.mapped_base_index = index
        self._put()
        self._get()

    def _in_window(self, iova: int, length: int) -> bool:
        return bool(self.pages) and iova >= self.mapped_iova and \
            iova + length - 1 <= self.mapped_iova + self.mapped_length - 1

    def free(self) -> None:
        """iova_bitmap_free(): unpin the window."""
        self._put()

    # -- the driver's side ----------------------------------------------------------
    def set(self, iova: int, length: int) -> None:
        """iova_bitmap_set(): set the bits of ``[iova, iova+length-1]``; a window that
        cannot be moved or pinned drops the rest silently."""
        mapped_iova = self.mapped_iova
        if self.pages and iova >= mapped_iova and \
                iova + length <= mapped_iova + self.mapped_length:
            # Fast path: the range's bits are in the window and in one of its pages.
            base = self.pgoff * BITS_PER_BYTE
            cur_bit = ((iova - mapped_iova) >> self.pgshift) + base
            last_bit = ((iova + length - 1 - mapped_iova) >> self.pgshift) + base
            page_idx = cur_bit // BITS_PER_PAGE
            if page_idx == last_bit // BITS_PER_PAGE and page_idx < len(self.pages):
                _bitmap_set(self.pages[page_idx], cur_bit % BITS_PER_PAGE,
                            last_bit - cur_bit + 1)
                return
        while True:
            if not self._in_window(iova, length):
                try:
                    self._advance_to(iova)
                except OSError:
                    return
            last_page_idx = len(self.pages) - 1
            cur_bit = ((iova - self.mapped_iova) >> self.pgshift) + self.pgoff * BITS_PER_BYTE
            last_bit = (((iova + length - 1) - self.mapped_iova) >> self.pgshift) \
                + self.pgoff * BITS_PER_BYTE
            while cur_bit <= last_bit:
                page_idx = cur_bit // BITS_PER_PAGE
                offset = cur_bit % BITS_PER_PAGE
                nbits = min(BITS_PER_PAGE - offset, last_bit - cur_bit + 1)
                if page_idx > last_page_idx:
                    left = (last_bit - cur_bit + 1) << self.pgshift
                    iova += length - left
                    length = left
                    break
                _bitmap_set(self.pages[page_idx], offset, nbits)
                cur_bit += nbits
            else:
                return


def _bitmap_set(page: PhysPage, start: int, nbits: int) -> None:
    """bitmap_set() on a page: bits ``[start, start+nbits)``, little-endian order."""
    if page.data is None:
        page.write(0, b"\0")  # materializes the page's bytes
    data = page.data
    assert data is not None
    end = start + nbits
    first, last = start >> 3, (end - 1) >> 3
    if first == last:
        data[first] |= ((1 << (end - (first << 3))) - 1) & ~((1 << (start & 7)) - 1)
        return
    data[first] |= 0xFF & ~((1 << (start & 7)) - 1)
    if last > first + 1:
        data[first + 1:last] = b"\xff" * (last - first - 1)
    data[last] |= (1 << (end - (last << 3))) - 1
