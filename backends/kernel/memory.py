"""User memory of this process: tracked mappings and safe peek/poke.

Every mapping the backend creates is recorded so shutdown can release it, and
partial munmaps are tracked exactly. peek/poke go through /proc/self/mem, so a
bad address is an ``OSError(EFAULT)`` (like copy_from_user) and never a
segfault of the test process.
"""

from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import os

from backends.kernel import libc


class MappingTable:
    """Address ranges [start, end) this backend mapped and has not unmapped yet."""

    def __init__(self) -> None:
        self._ranges: dict[int, int] = {}  # start -> end

    def add(self, start: int, length: int) -> None:
        """Record a new mapping."""
        self.remove(start, length)
        self._ranges[start] = start + length

    def remove(self, start: int, length: int) -> None:
        """Forget [start, start+length), splitting mappings it cuts through."""
        end = start + length
        for s, e in list(self._ranges.items()):
            if e <= start or s >= end:
                continue
            del self._ranges[s]
            if s < start:
                self._ranges[s] = start
            if e > end:
                self._ranges[end] = e

    def covers(self, start: int, length: int) -> bool:
        """Whether [start, start+length) lies inside one tracked mapping."""
        return any(s <= start and start + length <= e for s, e in self._ranges.items())

    def ranges(self) -> list[tuple[int, int]]:
        """The tracked mappings as sorted (start, length) pairs."""
        return [(s, e - s) for s, e in sorted(self._ranges.items())]

    def __len__(self) -> int:
        return len(self._ranges)


def cpu_peek(addr: int, length: int) -> bytes:
    """Read ``length`` bytes at ``addr`` with CPU loads, one byte at a time (device
    memory refuses unaligned wider loads on some architectures). Only for mappings
    known to be present: a bad address kills the process."""
    return bytes(ctypes.c_uint8.from_address(addr + i).value for i in range(length))


def cpu_poke(addr: int, data: bytes) -> None:
    """Write ``data`` at ``addr`` with byte stores (see :func:`cpu_peek`)."""
    for i, byte in enumerate(data):
        ctypes.c_uint8.from_address(addr + i).value = byte


class ProcessMemory:
    """Reads and writes of this process's memory through /proc/self/mem."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)

    def peek(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes at ``addr``; EFAULT when any of it is unmapped."""
        out = bytearray()
        while len(out) < length:
            try:
                chunk = os.pread(self._fd, length - len(out), addr + len(out))
            except OSError as exc:
                raise _efault() from exc
            if not chunk:
                raise _efault()
            out += chunk
        return bytes(out)

    def poke(self, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr``; EFAULT when any of it is unmapped."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.pwrite(self._fd, view[done:], addr + done)
            except OSError as exc:
                raise _efault() from exc
            if n <= 0:
                raise _efault()
            done += n

    def close(self) -> None:
        """Close /proc/self/mem (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _efault() -> OSError:
    return OSError(errno.EFAULT, os.strerror(errno.EFAULT))


MAP_HUGETLB = 0x40000
"""<asm-generic/mman-common.h> (the same value on x86_64 and arm64)."""
MAP_POPULATE = 0x8000


def map_anonymous(length: int, *, align: int, page_size: int, shared: bool,
                  hugetlb: bool) -> tuple[int, int]:
    """An anonymous RW mapping of ``length`` (rounded up to pages) at an
    ``align``-aligned address; returns (address, mapped length).

    mmap only guarantees page alignment, so map ``align`` extra bytes and
    unmap the unaligned head and the tail. ``hugetlb`` maps as the kernel's
    tests do, ``MAP_HUGETLB | MAP_POPULATE``: the kernel places it on a huge page
    boundary itself and fails it (ENOMEM) when the reserved pool is short.
    """
    length = max(page_size, -(-length // page_size) * page_size)
    align = max(align, page_size)
    if align & (align - 1):
        raise OSError(errno.EINVAL, f"alignment {align:#x} is not a power of two")
    flags = (_mmap.MAP_SHARED if shared else _mmap.MAP_PRIVATE) | _mmap.MAP_ANONYMOUS
    prot = _mmap.PROT_READ | _mmap.PROT_WRITE
    if hugetlb:
        start = libc.mmap(length, prot, flags | MAP_HUGETLB | MAP_POPULATE)
        if start & (align - 1):
            libc.munmap(start, length)
            raise OSError(errno.EINVAL, f"alignment {align:#x} is above the huge page size")
        return start, length
    extra = align - page_size
    raw = libc.mmap(length + extra, prot, flags)
    start = (raw + align - 1) & ~(align - 1)
    if start > raw:
        libc.munmap(raw, start - raw)
    tail = raw + length + extra - (start + length)
    if tail:
        libc.munmap(start + length, tail)
    return start, length
