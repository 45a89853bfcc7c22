"""The contract's own surface on the mock: arguments as the kernel would see them.

A value C could pass reaches the model and gets the kernel's answer; a Python value
no C caller could pass (a float fd, a negative length) is a TypeError naming the
argument, never a silent conversion (``close(3.0)`` closed fd 3).
"""

from __future__ import annotations

from errno import EBADF, EFAULT, EINVAL, EOVERFLOW
from typing import Any

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of, new


def test_a_backend_address_cast_to_a_struct_pointer_is_user_memory(be: MockBackend,
                                                                    fd: Fd) -> None:
    # Mapped: the kernel reads the command from the backend's memory, as it would on
    # the kernel backend, and writes the answer there.
    addr = be.alloc(PAGE_SIZE)
    be.poke(addr, u.ffi.buffer(new("iommu_ioas_alloc"))[:])
    cmd = u.ffi.cast("struct iommu_ioas_alloc *", addr)
    assert fd.ioctl(u.IOMMU_IOAS_ALLOC, cmd) == 0
    out = u.ffi.from_buffer("struct iommu_ioas_alloc *", bytearray(be.peek(addr, 12)))
    assert out.out_ioas_id == 1
    # Unmapped (the model never dereferences it as a host pointer): EFAULT, as
    # copy_from_user of the size field gives.
    be.munmap(addr, PAGE_SIZE)
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_ALLOC, cmd) == EFAULT
    bogus = u.ffi.cast("struct iommu_destroy *", 0x10)
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY, bogus) == EFAULT
    fd.close()


def test_a_struct_pointer_into_a_host_buffer_still_works(fd: Fd) -> None:
    raw = u.ffi.new("char[]", 64)
    cmd = u.ffi.cast("struct iommu_ioas_alloc *", raw)
    cmd.size = u.ffi.sizeof("struct iommu_ioas_alloc")
    assert fd.ioctl(u.IOMMU_IOAS_ALLOC, cmd) == 0
    assert cmd.out_ioas_id == 1
    fd.close()


@pytest.mark.parametrize(("call", "args", "name"), [
    ("close", (3.0,), "fd"),
    ("close", (True,), "fd"),
    ("read", (3, 1.5), "length"),
    ("read", (3, -1), "length"),
    ("write", (3.0, b"x"), "fd"),
    ("write", (3, "text"), "data"),
    ("mmap", (3, -PAGE_SIZE), "length"),
    ("mmap", (3, PAGE_SIZE, 4096.0), "offset"),
    ("munmap", (-PAGE_SIZE, PAGE_SIZE), "addr"),
    ("alloc", (-1,), "length"),
    ("peek", (0x1000, -1), "length"),
    ("poke", (1.0, b"x"), "addr"),
    ("ftruncate", (3, 1.0), "length"),
    ("ioctl", (3.0, u.IOMMU_DESTROY), "fd"),
    ("fail_nth_write", (1.0,), "n"),
])
def test_values_no_c_caller_could_pass_are_type_errors(be: MockBackend, call: str,
                                                       args: tuple[Any, ...],
                                                       name: str) -> None:
    mfd = be.memfd(PAGE_SIZE)
    assert mfd == 3
    with pytest.raises(TypeError, match=rf"^{call}: {name} "):
        getattr(be, call)(*args)
    # Nothing happened to fd 3.
    assert be.read(mfd, 1) == b"\0"
    be.close(mfd)


def test_values_c_callers_pass_get_the_kernels_errno(be: MockBackend) -> None:
    mfd = be.memfd(2 * PAGE_SIZE)
    assert errno_of(be.close, -1) == EBADF
    assert errno_of(be.read, -1, 1) == EBADF
    # off_t is signed: -4096 reaches the kernel as pgoff 2^52 - 1, past any file
    # (do_mmap's file_mmap_ok: EOVERFLOW, as a real kernel answers for a memfd).
    assert errno_of(be.mmap, mfd, PAGE_SIZE, -PAGE_SIZE) == EOVERFLOW
    assert errno_of(be.mmap, mfd, PAGE_SIZE, 1) == EINVAL
    assert errno_of(be.mmap, mfd, 0) == EINVAL
    assert errno_of(be.ftruncate, mfd, -1) == EINVAL
    be.close(mfd)
