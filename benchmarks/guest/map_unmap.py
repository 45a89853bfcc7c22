"""The Python side of bench_qemu.py's per-ioctl figure, run inside the guest.

The same loop as map_unmap.c (one page mapped at a fixed IOVA and unmapped, LOOPS
times) twice: through the harness's ``kernel`` backend, as every scenario calls it,
and in bare Python (a cffi struct and ctypes' libc.ioctl, no harness). Prints
``backend_us bare_us``: mean microseconds per ioctl.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import uapi_headers as u
from backends import open_backend

IOVA = 1 << 24


def _structs(ioas_id: int, va: int, length: int) -> tuple[Any, Any]:
    flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE
    ioas_map = u.ffi.new("struct iommu_ioas_map *", {
        "size": u.ffi.sizeof("struct iommu_ioas_map"), "flags": flags, "ioas_id": ioas_id,
        "user_va": va, "length": length, "iova": IOVA})
    unmap = u.ffi.new("struct iommu_ioas_unmap *", {
        "size": u.ffi.sizeof("struct iommu_ioas_unmap"), "ioas_id": ioas_id, "iova": IOVA,
        "length": length})
    return ioas_map, unmap


def _timed(loops: int, one: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        one()
    return (time.perf_counter() - start) / (2 * loops) * 1e6


def through_backend(loops: int, page: int) -> float:
    """The loop through ``Backend.ioctl`` (what a scenario's helpers call)."""
    with open_backend("kernel") as be:
        fd = be.open("/dev/iommu")
        alloc = u.ffi.new("struct iommu_ioas_alloc *",
                          {"size": u.ffi.sizeof("struct iommu_ioas_alloc")})
        be.ioctl(fd, u.IOMMU_IOAS_ALLOC, alloc)
        va = be.alloc(page)
        be.poke(va, b"\1")
        ioas_map, unmap = _structs(alloc.out_ioas_id, va, page)
        ioctl = be.ioctl

        def one() -> None:
            ioctl(fd, u.IOMMU_IOAS_MAP, ioas_map)
            ioctl(fd, u.IOMMU_IOAS_UNMAP, unmap)
        return _timed(loops, one)


def bare(loops: int, page: int) -> float:
    """The loop as a person would write it with no harness: cffi structs, ctypes ioctl."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    fd = os.open("/dev/iommu", os.O_RDWR)
    alloc = u.ffi.new("struct iommu_ioas_alloc *",
                      {"size": u.ffi.sizeof("struct iommu_ioas_alloc")})
    if libc.ioctl(fd, u.IOMMU_IOAS_ALLOC, int(u.ffi.cast("uintptr_t", alloc))):
        raise OSError(ctypes.get_errno(), "IOMMU_IOAS_ALLOC")
    buf = mmap.mmap(-1, page)
    buf[0] = 1
    va = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ioas_map, unmap = _structs(alloc.out_ioas_id, va, page)
    map_arg, unmap_arg = (int(u.ffi.cast("uintptr_t", s)) for s in (ioas_map, unmap))
    ioctl, map_req, unmap_req = libc.ioctl, u.IOMMU_IOAS_MAP, u.IOMMU_IOAS_UNMAP

    def one() -> None:
        if ioctl(fd, map_req, map_arg) or ioctl(fd, unmap_req, unmap_arg):
            raise OSError(ctypes.get_errno(), "map/unmap")
    took = _timed(loops, one)
    os.close(fd)
    return took


def main() -> int:
    """``python3 map_unmap.py [LOOPS]``: prints ``backend_us bare_us``."""
    loops = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    page = os.sysconf("SC_PAGE_SIZE")
    # Alternated, best of two each: the first loop in a fresh guest also pays for
    # TCG translating the interpreter's paths, whichever loop comes first.
    backend_us = bare_us = float("inf")
    for _ in range(2):
        backend_us = min(backend_us, through_backend(loops, page))
        bare_us = min(bare_us, bare(loops, page))
    print(f"{backend_us:.3f} {bare_us:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
