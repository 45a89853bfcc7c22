"""KernelBackend: the backend contract on this process's real file descriptors."""

from __future__ import annotations

import copy
import os
import platform
from collections.abc import Sequence
from typing import Any

from backends.calls import Call, Outcome, run_calls
from backends.contract import (
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Backend,
    BackendError,
    Features,
    IoctlArg,
)
from backends.kernel import caps, faultinject, features, libc, native, procfs
from backends.kernel.diagnose import DEV_IOMMU, missing_iommufd_reason
from backends.kernel.fork import fork_backend
from backends.kernel.guard import GuardArea
from backends.kernel.memory import (
    MappingTable,
    ProcessMemory,
    cpu_peek,
    cpu_poke,
    map_anonymous,
)


def _probe_iommufd(dev_iommu: str) -> frozenset[str]:
    """The features of the kernel behind ``dev_iommu``; BackendError (one line)
    when it cannot be opened."""
    if not os.path.exists(dev_iommu):
        raise BackendError(missing_iommufd_reason(dev_iommu))
    try:
        probe_fd = os.open(dev_iommu, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise BackendError(
            f"kernel backend: cannot open {dev_iommu}: {exc.strerror}") from None
    try:
        return features.detect(probe_fd)
    finally:
        os.close(probe_fd)


class KernelBackend(Backend):
    """Real ioctls on this host's /dev/iommu, with this process's memory.

    Opening the backend checks that ``dev_iommu`` (the iommufd device node) can
    be opened, and probes it once for the selftest and VFIO-compat features;
    without it, :class:`BackendError` says in one line why the node is missing.
    ``dev_iommu=None`` skips that check: the backend then offers only this
    process's files and memory (the framework's own tests use it on hosts
    without iommufd).

    Everything opened or mapped through the backend is released by
    :meth:`shutdown`; fds the kernel hands out inside ioctl replies (access,
    fault and event queue fds) belong to the caller.

    fail_nth: :meth:`fail_nth_write` sets the calling thread's count, and each
    following syscall of the contract (open, close, ioctl, read, write, mmap,
    munmap, memfd, ftruncate) runs with the kernel's counter armed immediately
    before it and disarmed right after (see :mod:`backends.kernel.faultinject`),
    so the Python work between calls consumes no fault points. ``alloc``,
    ``peek`` and ``poke`` are harness mechanics (the C tests' buffers and CPU
    accesses) and run unarmed.

    fork: :meth:`fork_child` forks this process; the child's backend
    (:meth:`_adopt_in_child`) owns the inherited fds and mappings as its own, and
    serves the calls the parent makes on the returned backend (see
    :mod:`backends.kernel.fork`).
    """

    def __init__(self, *, dev_iommu: str | None = DEV_IOMMU) -> None:
        self.features = (frozenset(features.host_features()) if dev_iommu is None
                         else _probe_iommufd(dev_iommu))
        self.spec = "kernel"
        self.dev_iommu = dev_iommu
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.hugepage_size = features.hugepage_size()
        self._fds: set[int] = set()
        self._maps = MappingTable()
        self._io_maps = MappingTable()
        """mmaps of /dev/iommu: driver pages mapped with io_remap_pfn_range, which
        /proc/self/mem cannot reach; peek/poke use CPU accesses there."""
        self._mem = ProcessMemory()
        self._fail_nth = faultinject.FailNth()
        self._lib_ioctl = libc.lib.ioctl
        self._loop = native.load()
        self._guard = GuardArea(self.page_size)
        self._closed = False

    # -- lifecycle -------------------------------------------------------
    def shutdown(self) -> None:
        """Close every tracked fd and unmap every tracked mapping (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._fail_nth.close()
        self._guard.close()
        for fd in sorted(self._fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        for addr, length in self._maps.ranges():
            try:
                libc.munmap(addr, length)
            except OSError:
                pass
        self._maps = MappingTable()
        self._io_maps = MappingTable()
        self._mem.close()

    def describe(self) -> str:
        """Kernel release and machine, e.g. ``kernel 7.3.4 x86_64``."""
        return f"kernel {self.kernel_release} {platform.machine()}"

    @property
    def kernel_release(self) -> str:
        """``uname -r`` of the running kernel."""
        return os.uname().release

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open(2); the fd is closed at shutdown unless closed before."""
        fd: int = self._fail_nth.call(os.open, path, flags | os.O_CLOEXEC)
        self._fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        """close(2)."""
        self._fds.discard(fd)
        self._fail_nth.call(os.close, fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2); a cdata argument is copied to end at a guard page (see
        :mod:`backends.kernel.guard`) and its bytes copied back after the call, on
        success and on failure alike."""
        if arg is None or isinstance(arg, int):
            carg = libc.ioctl_arg(arg)  # cast before arming: nothing allocates in the window
        else:
            length = libc.fast_argument_length(arg)
            if length and libc.reads_past(arg, length):
                return self._guarded_ioctl(fd, request, arg)
            # The kernel reads no further than the buffer: the cdata goes as it is (the
            # copy to the guard page costs more than the ioctl under TCG), and a pointer
            # cdata needs no cast to ioctl's void * argument.
            carg = arg
        if not self._fail_nth.idle:
            ret: int = self._fail_nth.call(libc.raw_ioctl, fd, request, carg)
            return ret
        # The hot path of every scenario, inlined: under TCG each Python call counts.
        ret = self._lib_ioctl(fd, request, carg)
        if ret < 0:
            libc.raise_errno()
        return ret

    def batch(self, calls: Sequence[Call], *, stop_on_error: bool = False) -> list[Outcome]:
        """Run ``calls`` as :func:`backends.calls.run_calls` does, each run of plain
        ioctls in one native loop (:mod:`backends.kernel.native`) when the library is
        there and no fail-nth count is pending (armed calls go one by one)."""
        return run_calls(self, calls, stop_on_error=stop_on_error,
                         run_ioctls=None if self._loop is None else self._native_ioctls)

    def _native_ioctls(self, calls: Sequence[Call], start: int, end: int,
                       stop_on_error: bool) -> list[Outcome] | None:
        if self._loop is None or not self._fail_nth.idle:
            return None  # an armed count: each call goes through FailNth.call
        return self._loop.run(calls, start, end, stop_on_error)

    def _guarded_ioctl(self, fd: int, request: int, arg: Any) -> int:
        buf = libc.ffi.buffer(arg)
        addr = self._guard.place(buf)
        carg = libc.ffi.cast("void *", addr)
        try:
            ret: int = self._fail_nth.call(libc.raw_ioctl, fd, request, carg)
        finally:
            buf[:] = self._guard.take(addr, len(buf))
        return ret

    def read(self, fd: int, length: int) -> bytes:
        """read(2)."""
        data: bytes = self._fail_nth.call(os.read, fd, length)
        return data

    def write(self, fd: int, data: bytes) -> int:
        """write(2)."""
        n: int = self._fail_nth.call(os.write, fd, data)
        return n

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """pread(2)."""
        data: bytes = self._fail_nth.call(os.pread, fd, length, offset)
        return data

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """pwrite(2)."""
        n: int = self._fail_nth.call(os.pwrite, fd, data, offset)
        return n

    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a backend fd; unmapped at shutdown unless unmapped before."""
        addr: int = self._fail_nth.call(libc.mmap, length, prot, flags, fd, offset)
        self._maps.add(addr, length)
        if fd >= 0 and os.readlink(f"/proc/self/fd/{fd}") == self.dev_iommu:
            self._io_maps.add(addr, -(-length // self.page_size) * self.page_size)
        return addr

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2)."""
        self._fail_nth.call(libc.munmap, addr, length)
        self._maps.remove(addr, length)
        self._io_maps.remove(addr, length)

    # -- user memory -----------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        """Anonymous zeroed memory aligned to ``align`` (default: the page size)."""
        addr, mapped = map_anonymous(length, align=align, page_size=self.page_size,
                                     shared=shared, hugetlb=hugetlb)
        self._maps.add(addr, mapped)
        return addr

    def peek(self, addr: int, length: int) -> bytes:
        """Read user memory; OSError(EFAULT) for unmapped addresses."""
        if self._io_maps.covers(addr, length):
            return cpu_peek(addr, length)
        return self._mem.peek(addr, length)

    def poke(self, addr: int, data: bytes) -> None:
        """Write user memory; OSError(EFAULT) for unmapped addresses."""
        if self._io_maps.covers(addr, len(data)):
            cpu_poke(addr, data)
            return
        self._mem.poke(addr, data)

    def memfd_create(self, name: str) -> int:
        """memfd_create(2)."""
        fd: int = self._fail_nth.call(libc.memfd_create, name)
        self._fds.add(fd)
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2)."""
        self._fail_nth.call(libc.ftruncate, fd, length)

    # -- processes and credentials -----------------------------------------
    def fork_child(self) -> Backend:
        """fork(2): a backend whose calls run in the child (see :mod:`backends.kernel.fork`)."""
        return fork_backend(self, self._adopt_in_child)

    def _adopt_in_child(self) -> KernelBackend:
        """In a freshly forked child: this backend's state as the child's own.

        The fds and the mapping table are the inherited ones (the child's copies):
        nothing the contract can see is re-opened. Only two private handles are
        made anew, as they belong to the parent's task: the /proc/self/mem fd keeps
        the mm it was opened on (the child's peeks would read the parent's private
        pages), and a fail-nth file arms the thread that opened it.
        """
        child = copy.copy(self)
        child._fds = set(self._fds)
        child._maps = copy.deepcopy(self._maps)
        child._io_maps = copy.deepcopy(self._io_maps)
        child._mem = ProcessMemory()
        child._fail_nth = faultinject.FailNth()
        child._closed = False
        return child

    def getpid(self) -> int:
        """getpid(2) of this process."""
        return os.getpid()

    def proc_status(self, field: str, pid: int = 0) -> int:
        """A /proc/<pid>/status value (VmPin, VmLck in kB); pid 0 is this process."""
        return procfs.status_value(field, pid)

    def drop_capability(self, name: str) -> bool:
        """Clear ``name`` from the calling thread's effective capabilities (it stays
        permitted); True when it was effective."""
        return caps.set_effective(name, False)

    def restore_capability(self, name: str) -> None:
        """Raise ``name`` into the calling thread's effective capabilities again."""
        caps.set_effective(name, True)

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Set the calling thread's fail-nth count (0 disarms); it is armed
        around each following contract syscall only."""
        self._require_fail_nth()
        self._fail_nth.write(n)

    def fail_nth_read(self) -> int:
        """The remaining count: 0 once the armed fault fired, N>0 if not reached."""
        self._require_fail_nth()
        return self._fail_nth.read()

    def _require_fail_nth(self) -> None:
        if Features.FAIL_NTH not in self.features:
            raise BackendError(
                f"kernel {self.kernel_release}: no fail_nth fault injection "
                f"({faultinject.FAIL_NTH} is missing: CONFIG_FAULT_INJECTION is off)")
