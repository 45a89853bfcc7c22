"""The user memory an ioctl writes besides its own argument, to compare after the call.

Each entry names the pointer field and how many bytes the kernel may write there
(from the primary's argument as the call left it). Memory the call only reads is not
listed: the comparison of the argument and the errno already covers it.
"""

from __future__ import annotations

from collections.abc import Callable

import uapi_headers as u

_MAX = 1 << 20  # never compare more than this much per pointer

Lengths = Callable[[Callable[[str], int]], int]
"""Given a reader of the argument's fields (by dotted name), the byte count."""


def _bitmap_bytes(length: int, page_size: int) -> int:
    if page_size <= 0:
        return 0
    bits = (length + page_size - 1) // page_size
    return (bits + 63) // 64 * 8


WRITTEN: dict[str, tuple[tuple[str, Lengths], ...]] = {
    "IOMMU_IOAS_IOVA_RANGES": (
        ("allowed_iovas",
         lambda f: 16 * min(f("num_iovas"), f("in:num_iovas"))),),
    "IOMMU_GET_HW_INFO": (("data_uptr", lambda f: f("in:data_len")),),
    "IOMMU_HWPT_ALLOC": (("data_uptr", lambda f: f("data_len")),),
    "IOMMU_VIOMMU_ALLOC": (("data_uptr", lambda f: f("data_len")),),
    "IOMMU_HWPT_GET_DIRTY_BITMAP": (
        ("data", lambda f: _bitmap_bytes(f("length"), f("page_size"))),),
    "IOMMU_TEST_CMD/IOMMU_TEST_OP_ACCESS_RW": (
        ("access_rw.uptr",
         lambda f: 0 if f("access_rw.flags") & u.MOCK_ACCESS_RW_WRITE
         else f("access_rw.length")),),
    "IOMMU_TEST_CMD/IOMMU_TEST_OP_DIRTY": (
        ("dirty.uptr", lambda f: _bitmap_bytes(f("dirty.length"), f("dirty.page_size"))),),
}


def written(call: str, read: Callable[[str], int]) -> list[tuple[str, int]]:
    """``(pointer field, byte count)`` the call ``call`` may have written, capped."""
    return [(name, max(0, min(size(read), _MAX))) for name, size in WRITTEN.get(call, ())]
