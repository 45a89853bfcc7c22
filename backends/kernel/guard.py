"""ioctl arguments placed against a guard page, so a read past the caller's buffer faults.

The kernel copies ``size`` bytes of an argument (``copy_struct_from_user``); when a
caller's buffer is shorter than its own ``size`` field, what the kernel reads past it
depends on whatever memory follows: E2BIG for non-zero garbage, success for zeroes. On
the mock (and in the contract) such a read is EFAULT. Copying every argument to the very
end of a readable area with an inaccessible page after it gives the kernel that same
EFAULT, so both backends answer the same and a lockstep comparison can trust the errno.
"""

from __future__ import annotations

import mmap

from backends.kernel import libc

PROT_NONE = 0


class GuardArea:
    """A private anonymous area whose last page is PROT_NONE; grows on demand."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._base = 0
        self._pages = 0  # readable pages before the guard page

    def place(self, data: bytes | memoryview) -> int:
        """Copy ``data`` so that it ends right at the guard page; its address."""
        length = len(data)
        needed = max(1, -(-length // self.page_size))
        if needed > self._pages:
            self._grow(needed)
        addr = self._base + self._pages * self.page_size - length
        if length:
            libc.ffi.memmove(libc.ffi.cast("void *", addr), bytes(data), length)
        return addr

    def take(self, addr: int, length: int) -> bytes:
        """The bytes at ``addr`` (what the kernel left of a placed argument)."""
        return bytes(libc.ffi.buffer(libc.ffi.cast("char *", addr), length))

    def _grow(self, pages: int) -> None:
        self.close()
        size = (pages + 1) * self.page_size
        base = libc.mmap(size, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            libc.mprotect(base + pages * self.page_size, self.page_size, PROT_NONE)
        except OSError:
            libc.munmap(base, size)
            raise
        self._base, self._pages = base, pages

    def close(self) -> None:
        """Unmap the area (it is made again by the next :meth:`place`)."""
        if self._base:
            libc.munmap(self._base, (self._pages + 1) * self.page_size)
        self._base, self._pages = 0, 0
