"""The base of the helper layer: an open iommufd, command structs, expected errnos.

Like the kernel's iommufd_utils.h, but the same code runs on every backend: the calls
go through the backend contract, so a helper never knows whether the kernel is a
Python model, this host, or a QEMU guest.
"""

from __future__ import annotations

import errno as _errno
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uapi_headers as u
from backends.contract import Backend, IoctlArg

DEV_IOMMU = "/dev/iommu"


def errno_name(number: int) -> str:
    """``ENOENT`` for 2; the number itself when it has no name."""
    return _errno.errorcode.get(number, str(number))


@contextmanager
def expect_errno(expected: int) -> Iterator[None]:
    """Assert the block fails with OSError ``expected`` (the kernel's EXPECT_ERRNO)."""
    try:
        yield
    except OSError as error:
        if error.errno != expected:
            raise AssertionError(
                f"expected {errno_name(expected)}, got {errno_name(error.errno or 0)}: {error}"
            ) from error
        return
    raise AssertionError(f"expected {errno_name(expected)}, but the call succeeded")


def new_cmd(ctype: str, fields: dict[str, Any] | None = None, *, size: int | None = None) -> Any:
    """``ffi.new("struct x *")`` with ``size`` preset to sizeof (or ``size``) and ``fields``.

    ``ctype`` is the struct's kernel name with or without the ``struct`` keyword.
    """
    pointer, sizeof = _cmd_type(ctype)
    init = dict(fields) if fields else {}
    init.setdefault("size", sizeof if size is None else size)
    return u.ffi.new(pointer, init)


@functools.cache
def _cmd_type(ctype: str) -> tuple[Any, int]:
    """The cffi pointer type and sizeof of ``ctype``, parsed once per name (kernel test
    loops build hundreds of thousands of commands)."""
    if not ctype.startswith(("struct ", "union ")):
        ctype = f"struct {ctype}"
    return u.ffi.typeof(f"{ctype} *"), u.ffi.sizeof(ctype)


@dataclass(frozen=True)
class SelftestGlobals:
    """What the kernel's selftest sets up once per run (iommufd.c's constructor)."""

    page_size: int
    hugepage_size: int
    buffer_size: int
    buffer: int       # BUFFER_SIZE of shared anonymous memory, huge-page aligned
    mfd: int          # a memfd of BUFFER_SIZE ...
    mfd_buffer: int   # ... mapped MAP_SHARED here

    @classmethod
    def create(cls, backend: Backend) -> SelftestGlobals:
        """Allocate the shared buffers in ``backend``'s memory."""
        buffer_size = 16 * backend.page_size
        buffer = backend.alloc(buffer_size, align=backend.hugepage_size, shared=True)
        mfd = backend.memfd(buffer_size)
        mfd_buffer = backend.mmap(mfd, buffer_size)
        return cls(backend.page_size, backend.hugepage_size, buffer_size, buffer, mfd,
                   mfd_buffer)


class Iommufd:
    """One open ``/dev/iommu`` on a backend (the kernel tests' ``self->fd``)."""

    def __init__(self, backend: Backend, fd: int) -> None:
        self.backend = backend
        self.fd = fd
        self.closed = False

    @classmethod
    def open(cls, backend: Backend) -> Iommufd:
        """Open /dev/iommu on ``backend``."""
        return cls(backend, backend.open(DEV_IOMMU, os.O_RDWR))

    def close(self) -> None:
        """close(2) the fd: the kernel destroys every object it holds."""
        if not self.closed:
            self.closed = True
            self.backend.close(self.fd)

    def ioctl(self, request: int, arg: IoctlArg = None) -> int:
        """A raw ioctl on this fd; OSError carries the kernel's errno."""
        return self.backend.ioctl(self.fd, request, arg)

    def destroy(self, object_id: int) -> None:
        """IOMMU_DESTROY of any object ID."""
        self.ioctl(u.IOMMU_DESTROY, new_cmd("iommu_destroy", {"id": object_id}))

    def ioas_alloc(self, flags: int = 0) -> int:
        """IOMMU_IOAS_ALLOC; returns the new IOAS ID."""
        cmd = new_cmd("iommu_ioas_alloc", {"flags": flags})
        self.ioctl(u.IOMMU_IOAS_ALLOC, cmd)
        return int(cmd.out_ioas_id)

    def __enter__(self) -> Iommufd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
