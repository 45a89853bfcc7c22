"""Batches of ioctls with expected errnos: many kernel-test loops in one round trip.

A kernel test's tight loop ("for every length: map, then unmap the IOVA the kernel
chose") costs a round trip per ioctl on a QEMU guest. When no call's *arguments*
depend on Python looking at an earlier result, the loop can go as one batch; an
earlier ioctl's output that a later one needs travels as a :class:`~backends.calls.Link`.
Each call carries the errno the kernel test expects, checked in order afterwards, so
the first surprise is reported exactly as the C loop would have.
"""

from __future__ import annotations

import functools
from typing import Any

from backends.calls import Call, Link, Outcome, batch
from harness.helpers.core import Iommufd, errno_name
from uapi_headers import ffi


def field_link(src: int, src_cmd: Any, src_field: str, dst_cmd: Any, dst_field: str) -> Link:
    """A link copying ``src_cmd.src_field`` (as call ``src`` left it) into
    ``dst_cmd.dst_field`` before the linked call runs; both fields the same size."""
    src_offset, size = _field_span(ffi.typeof(src_cmd), src_field)
    dst_offset, dst_size = _field_span(ffi.typeof(dst_cmd), dst_field)
    if size != dst_size:
        raise ValueError(f"{src_field} and {dst_field} differ in size")
    return Link(dst_offset, src, src_offset, size)


@functools.cache
def _field_span(pointer_type: Any, field: str) -> tuple[int, int]:
    """(offset, size) of ``field`` in the struct ``pointer_type`` points to; computed once
    per pair (a kernel loop links thousands of calls)."""
    struct = pointer_type.item
    return ffi.offsetof(struct, field), ffi.sizeof(dict(struct.fields)[field].type)


class IoctlBatch:
    """Ioctls on one iommufd, each with the errno it must end with (0: success)."""

    def __init__(self, fd: Iommufd) -> None:
        self.fd = fd
        self.calls: list[Call] = []
        self.expected: list[int] = []

    def ioctl(self, request: int, arg: Any, *, expect: int = 0,
              links: tuple[Link, ...] = ()) -> int:
        """Queue an ioctl; returns its index (for links from later calls)."""
        call: Call = ("ioctl", self.fd.fd, request, arg, links) if links else (
            "ioctl", self.fd.fd, request, arg)
        self.calls.append(call)
        self.expected.append(expect)
        return len(self.calls) - 1

    def run(self) -> list[Outcome]:
        """Run the batch; AssertionError naming the first call whose errno differs."""
        outcomes = batch(self.fd.backend, self.calls)
        errnos = [0 if outcome.error is None else outcome.errno for outcome in outcomes]
        if errnos == self.expected:
            return outcomes
        for index, (outcome, expected) in enumerate(zip(outcomes, self.expected, strict=True)):
            if outcome.errno != expected:
                got = "success" if outcome.ok else errno_name(outcome.errno)
                want = "success" if not expected else errno_name(expected)
                raise AssertionError(
                    f"call {index} of the batch ({ffi.typeof(self.calls[index][3]).cname}): "
                    f"expected {want}, got {got}: {outcome.error}")
        return outcomes
