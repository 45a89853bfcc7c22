"""copy_from_user / copy_to_user, as the kernel reads and writes its caller's memory.

Two kinds of user address reach the model:

- addresses in the simulated task's :class:`~backends.mock.mm.Mm` (``user_va``,
  ``allowed_iovas``, ``uptr``...), and
- the ioctl argument itself: the cffi cdata the caller passed. For the duration of the
  ioctl its whole buffer is mapped at :data:`ARG_BASE` (a range the mm never uses), so
  ``arg + offset`` arithmetic works as in C and anything past the buffer faults.

Every access that touches an unmapped byte raises EFAULT, never a Python error.
"""

from __future__ import annotations

from errno import E2BIG, EFAULT
from typing import Any

from backends.mock.errors import kerr
from backends.mock.mm import Mm

ARG_BASE = 0x7FFE_0000_0000
"""Where the ioctl argument buffer appears in the task's address space."""


class UserAccess:
    """The current task's user memory as ``copy_*_user`` sees it."""

    def __init__(self, mm: Mm, ffi: Any) -> None:
        self.mm = mm
        self._ffi = ffi
        self._arg: Any = None
        self._buf: Any = None
        self._len = 0

    # -- the ioctl argument window ----------------------------------------
    def map_arg(self, arg: Any) -> int:
        """Expose a cdata argument at ARG_BASE; returns the address the kernel sees."""
        buf = self._ffi.buffer(arg)
        self._arg = arg
        self._buf = buf
        self._len = len(buf)
        return ARG_BASE

    def unmap_arg(self) -> None:
        """End of the ioctl: the argument is no longer user memory."""
        self._arg = None
        self._buf = None
        self._len = 0

    def _in_arg(self, addr: int) -> bool:
        return self._buf is not None and ARG_BASE <= addr < ARG_BASE + self._len

    # -- copies -----------------------------------------------------------
    def copy_from_user(self, addr: int, length: int) -> bytes:
        """Read ``length`` user bytes; EFAULT if any is unreadable."""
        if length <= 0:
            return b""
        if self._in_arg(addr):
            off = addr - ARG_BASE
            if off + length > self._len:
                raise kerr(EFAULT)
            return bytes(self._buf[off:off + length])
        return self.mm.read(addr, length)

    def copy_to_user(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write user bytes; EFAULT (after writing what fits) if any is unwritable."""
        length = len(data)
        if not length:
            return
        if self._in_arg(addr):
            off = addr - ARG_BASE
            room = self._len - off
            if length > room:
                self._buf[off:self._len] = bytes(data[:room])
                raise kerr(EFAULT)
            self._buf[off:off + length] = bytes(data)
            return
        self.mm.write(addr, data)

    def clear_user(self, addr: int, length: int) -> None:
        """Zero ``length`` user bytes, in chunks so a huge length faults, not allocates."""
        zero = bytes(min(max(length, 0), 1 << 16))
        while length > 0:
            step = min(length, len(zero))
            self.copy_to_user(addr, zero[:step])
            addr += step
            length -= step

    def get_user_u32(self, addr: int) -> int:
        """get_user() of a u32 (little endian)."""
        if addr == ARG_BASE and self._len >= 4:
            return int.from_bytes(self._buf[0:4], "little")
        return int.from_bytes(self.copy_from_user(addr, 4), "little")

    def check_zeroed_user(self, addr: int, length: int) -> bool:
        """True if ``length`` user bytes are all zero; EFAULT only if a fault comes
        before any non-zero byte (the kernel scans in address order)."""
        if length <= 0:
            return True
        if self._in_arg(addr):
            off = addr - ARG_BASE
            avail = min(length, self._len - off)
            if any(self._buf[off:off + avail]):
                return False
            if avail < length:
                raise kerr(EFAULT)
            return True
        chunk = 1 << 16
        while length:
            step = min(length, chunk - (addr % chunk))
            if any(self.mm.read(addr, step)):
                return False
            addr += step
            length -= step
        return True

    def copy_struct_from_user(self, dst: Any, ksize: int, addr: int, usize: int) -> None:
        """copy_struct_from_user(): zero-extend a short struct, E2BIG on a non-zero tail
        the kernel does not know, EFAULT on a bad pointer."""
        size = min(ksize, usize)
        if usize > ksize and not self.check_zeroed_user(addr + ksize, usize - ksize):
            raise kerr(E2BIG)
        if addr == ARG_BASE and self._buf is not None and size <= self._len:
            self._ffi.memmove(dst, self._arg, size)
            return
        self._ffi.memmove(dst, self.copy_from_user(addr, size), size)

    def copy_struct_to_user(self, addr: int, src: Any, length: int) -> None:
        """copy_to_user() of the first ``length`` bytes of a kernel struct."""
        if length <= 0:
            return
        if addr == ARG_BASE and self._buf is not None and length <= self._len:
            self._ffi.memmove(self._arg, src, length)
            return
        self.copy_to_user(addr, self._ffi.buffer(src, length)[:])
