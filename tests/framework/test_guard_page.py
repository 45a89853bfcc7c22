"""Each ioctl argument of the kernel backend ends at a guard page: a kernel read past the
caller's buffer is EFAULT, as on the mock, whatever memory the caller has after it."""

from __future__ import annotations

import errno
import os

import cffi
import pytest

import uapi_headers as u
from backends import open_backend
from backends.kernel import KernelBackend, libc
from backends.kernel.guard import GuardArea

_sys = cffi.FFI()
_sys.cdef("struct ts { long sec; long nsec; }; int nanosleep(const struct ts *req, void *rem);")
_libc = _sys.dlopen(None)


def _nanosleep_errno(addr: int) -> int:
    """The errno of nanosleep(2) reading its 16-byte timespec at ``addr`` (0: success)."""
    if _libc.nanosleep(_sys.cast("struct ts *", addr), _sys.NULL) == 0:
        return 0
    return _sys.errno


def test_guard_area_faults_right_after_the_argument():
    area = GuardArea(os.sysconf("SC_PAGE_SIZE"))
    try:
        whole = area.place(bytes(16))        # a zero timespec: nanosleep reads all of it
        assert _nanosleep_errno(whole) == 0
        short = area.place(bytes(8))         # half a timespec: the rest is the guard page
        assert _nanosleep_errno(short) == errno.EFAULT
        big = area.place(bytes(3 * area.page_size + 5))  # grows, still ends at the guard
        assert (big + 3 * area.page_size + 5) % area.page_size == 0
    finally:
        area.close()


def _recording_ioctl(seen):
    def fake_ioctl(fd, request, carg):
        addr = int(libc.ffi.cast("uintptr_t", carg))
        seen.append(addr)
        # What a kernel would do: write an output field, then fail.
        libc.ffi.cast("struct { unsigned int size; unsigned int flags; unsigned int id; } *",
                      addr).id = 7
        raise OSError(errno.EINVAL, "fake")
    return fake_ioctl


def test_kernel_ioctl_runs_a_short_argument_on_the_guarded_copy_and_copies_back(monkeypatch):
    be = KernelBackend(dev_iommu=None)
    seen = []
    monkeypatch.setattr(libc, "raw_ioctl", _recording_ioctl(seen))
    try:
        arg = u.ffi.new("uint8_t[]", 16)  # 16 bytes that say they have 24
        arg[0] = 24
        with pytest.raises(OSError):
            be.ioctl(3, u.IOMMU_IOAS_ALLOC, arg)
        assert seen[0] != int(u.ffi.cast("uintptr_t", arg))   # not the caller's buffer
        assert (seen[0] + 16) % be.page_size == 0              # it ends at the guard page
        cmd = u.ffi.cast("struct iommu_ioas_alloc *", arg)
        assert cmd.out_ioas_id == 7 and cmd.size == 24         # and came back on failure
    finally:
        be.shutdown()


def test_kernel_ioctl_runs_a_whole_argument_in_place(monkeypatch):
    """The kernel reads no further than ``size``: an argument that holds its whole size
    needs no guard, and the copy would cost more than the ioctl under TCG."""
    be = KernelBackend(dev_iommu=None)
    seen = []
    record = _recording_ioctl(seen)

    def lib_ioctl(fd, request, carg):  # the hot path calls libc's ioctl itself
        try:
            record(fd, request, carg)
        except OSError as error:
            libc.ffi.errno = error.errno
        return -1

    monkeypatch.setattr(be, "_lib_ioctl", lib_ioctl)
    try:
        cmd = u.ffi.new("struct iommu_ioas_alloc *", {"size": 12})
        with pytest.raises(OSError) as failed:
            be.ioctl(3, u.IOMMU_IOAS_ALLOC, cmd)
        assert failed.value.errno == errno.EINVAL
        assert seen[0] == int(u.ffi.cast("uintptr_t", cmd))
        assert cmd.out_ioas_id == 7
    finally:
        be.shutdown()


def _short_ioas_alloc_errno(backend) -> int:
    fd = backend.open("/dev/iommu")
    try:
        arg = u.ffi.new("uint8_t[]", 12)   # a 12-byte struct iommu_ioas_alloc ...
        arg[0] = 24                        # ... that says it has 24 bytes
        try:
            backend.ioctl(fd, u.IOMMU_IOAS_ALLOC, arg)
        except OSError as error:
            return error.errno or 0
        return 0
    finally:
        backend.close(fd)


def test_short_argument_with_bigger_size_is_efault_on_mock():
    with open_backend("mock") as backend:
        assert _short_ioas_alloc_errno(backend) == errno.EFAULT


@pytest.mark.slow
def test_short_argument_with_bigger_size_is_efault_in_the_guest():
    with open_backend("qemu:x86_64") as backend:
        assert _short_ioas_alloc_errno(backend) == errno.EFAULT
