"""MockBackend: the backend contract on the in-Python kernel model.

Files, memory and ioctls all go to one :class:`~backends.mock.kernel.Kernel`, run as
this backend's task: the fd table holds iommufd contexts, selftest access fds, memfds
and dma-bufs; user memory is the task's mm; an ioctl's cdata argument is exposed to
the model as user memory for the duration of the call, exactly the bytes
``ffi.buffer(arg)`` covers (a plain pointer cast from an address is that address).
:meth:`MockBackend.fork_child` gives a backend whose calls run as a forked child task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from errno import EINVAL, ENOENT
from typing import Any

import uapi_headers as u
from backends.calls import Call, Outcome, direct_ioctls, run_calls
from backends.contract import (
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Backend,
    BackendError,
    Features,
    IoctlArg,
    bytes_arg,
    fd_arg,
    int_arg,
    offset_arg,
    size_arg,
)
from backends.kernel.memory import ProcessMemory
from backends.mock.errors import kerr
from backends.mock.files import MemfdFile, do_mmap_checks
from backends.mock.kernel import Kernel
from backends.mock.main import iommufd_fops_open
from backends.mock.mm import HPAGE_SIZE, PAGE_SIZE, MemFile, Mm
from backends.mock.task import Task

_U64 = (1 << 64) - 1
_INT_LIMIT = 1 << 31
_PLAIN_CDATA = type(u.ffi.cast("void *", 0))
"""The type of a cdata that neither owns nor holds memory (a cast, a NULL)."""
_DEVICES = {"/dev/iommu": False, "/dev/vfio/vfio": True}
_EXE = "/proc/self/exe"
_EXE_SIZE = 1024 * 1024
"""The task's executable: a read-only file, for private file mappings (ro_unshare)."""


class MockBackend(Backend):
    """A kernel in Python: iommufd (Linux 7.3.4 ABI) with its selftest mock driver."""

    spec = "mock"
    features = frozenset({
        Features.SELFTEST,
        Features.FORK,
        Features.MM_EXIT,
        Features.FAIL_NTH,
        Features.VFIO_COMPAT,
        Features.MEMFD,
        Features.HUGEPAGES,
        Features.CAP_SYS_RESOURCE,
        Features.DMABUF,
        Features.FAULT_QUEUE,
        Features.VIOMMU,
    })
    page_size = PAGE_SIZE
    hugepage_size = HPAGE_SIZE

    def __init__(self) -> None:
        self._kernel = Kernel(u.ffi)
        self._task = self._kernel.current
        self._children: list[MockBackend] = []
        self._forked_child = False
        self._closed = False
        self._splats_taken = 0
        self._host_mem = ProcessMemory()

    @classmethod
    def _forked(cls, parent: MockBackend, task: Task) -> MockBackend:
        child = cls.__new__(cls)
        child._kernel = parent._kernel
        child._task = task
        child._children = []
        child._forked_child = True
        child._closed = False
        child._splats_taken = parent._splats_taken
        child._host_mem = ProcessMemory()
        return child

    @property
    def kernel(self) -> Kernel:
        """The model, with this backend's task as ``current``: every call of this
        backend goes through here, so the model runs it as that task."""
        kernel = self._kernel
        kernel.current = self._task
        return kernel

    # -- lifecycle -------------------------------------------------------
    def shutdown(self) -> None:
        """Close every fd (destroying every context); a forked child exits and is
        reaped, its children first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for child in self._children:
            child.shutdown()
        kernel = self.kernel
        if self._forked_child:
            kernel.reap(self._task)
        else:
            for fd in kernel.files.fds():
                try:
                    kernel.files.close(fd)
                except OSError:
                    pass
        self._host_mem.close()

    def describe(self) -> str:
        """One line for reports."""
        return "mock: in-Python iommufd model (Linux 7.3.4 uAPI, selftest mock driver)"

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open("/dev/iommu") gives a new iommufd context (/dev/vfio/vfio: VFIO-style
        accounting); "/proc/self/exe" a read-only file; other paths do not exist."""
        if not isinstance(path, str):
            raise TypeError(f"open: path must be a str, not {type(path).__name__}")
        int_arg("open", "flags", flags)
        if path == _EXE:
            return self.kernel.files.install(
                MemfdFile(self._exe(), self._current_mm, writable=False, shmem=False))
        if path not in _DEVICES:
            raise kerr(ENOENT)
        return self.kernel.files.install(
            iommufd_fops_open(self.kernel, vfio_container=_DEVICES[path]))

    def _exe(self) -> MemFile:
        exe: MemFile | None = getattr(self, "_exe_file", None)
        if exe is None:
            exe = MemFile(self.kernel.phys, _EXE_SIZE, _EXE)
            exe.page(0).write(0, b"\x7fELF\x02\x01\x01")
            self._exe_file = exe
        return exe

    def close(self, fd: int) -> None:
        """close(2): closing an iommufd destroys all its objects (once no access holds it)."""
        self.kernel.files.close(fd_arg("close", fd))

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2): a cdata ``arg`` is user memory for the call; an int is passed as is
        (a value for value ioctls, an address in this backend's memory otherwise)."""
        kernel = self.kernel
        # Plain ints in range skip the argument checks' calls (the hot path of loops of
        # hundreds of thousands of ioctls); anything else gets them and their TypeError.
        if not (type(fd) is int and type(request) is int
                and -_INT_LIMIT <= fd < _INT_LIMIT and 0 <= request <= _U64):
            fd_arg("ioctl", fd)
            size_arg("ioctl", "request", request)
        file = kernel.files.lookup(fd)
        if arg is None:
            return file.ioctl(request, 0)
        if isinstance(arg, int):
            return file.ioctl(request, arg & _U64)
        ffi = kernel.ffi
        # A cdata that owns its memory (ffi.new) is a host buffer whatever its type;
        # only a plain pointer needs the closer look (typeof costs a few us per ioctl).
        if type(arg) is _PLAIN_CDATA and (ctype := ffi.typeof(arg)).kind == "pointer" \
                and not self._host_buffer(arg, ctype):
            # Its value is the address the kernel sees, in this backend's memory.
            return file.ioctl(request, int(ffi.cast("uintptr_t", arg)) & _U64)
        uaccess = kernel.uaccess
        addr = uaccess.map_arg(arg)
        try:
            return file.ioctl(request, addr)
        finally:
            uaccess.unmap_arg()

    def batch(self, calls: Sequence[Call], *, stop_on_error: bool = False) -> list[Outcome]:
        """Run ``calls`` as :func:`backends.calls.run_calls` does, runs of ioctls without
        its per-call dispatch (a suite sends a quarter of a million in batches)."""
        return run_calls(self, calls, stop_on_error=stop_on_error,
                         run_ioctls=direct_ioctls(self.ioctl))

    def _host_buffer(self, arg: IoctlArg, ctype: Any) -> bool:
        """Whether a typed pointer points at this process's memory (a cdata buffer the
        caller made) rather than at an address of the model's user memory (a backend
        address cast to a struct pointer), so the model never dereferences a host
        pointer that is not one: that address is then read as copy_from_user would."""
        if type(arg) is not _PLAIN_CDATA:
            return True  # ffi.new / ffi.from_buffer: memory it owns or holds
        ffi = self.kernel.ffi
        if ctype.item.kind == "void":
            return False
        addr = int(ffi.cast("uintptr_t", arg))
        if addr == 0 or self.kernel.mm.find_vma(addr) is not None:
            return False
        try:
            self._host_mem.peek(addr, len(ffi.buffer(arg)))
        except OSError:
            return False
        return True

    def read(self, fd: int, length: int) -> bytes:
        """read(2)."""
        file = self.kernel.files.lookup(fd_arg("read", fd))
        return file.read(size_arg("read", "length", length))

    def write(self, fd: int, data: bytes) -> int:
        """write(2)."""
        file = self.kernel.files.lookup(fd_arg("write", fd))
        return file.write(bytes_arg("write", "data", data))

    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a memfd (shared or private) or of the iommufd fd."""
        file = self.kernel.files.lookup(fd_arg("mmap", fd))
        length = size_arg("mmap", "length", length)
        offset = offset_arg("mmap", "offset", offset)
        int_arg("mmap", "prot", prot)
        int_arg("mmap", "flags", flags)
        do_mmap_checks(file, length, offset)
        return file.mmap(length, offset, prot, bool(flags & MAP_SHARED))

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2); later pins of the range fault (EFAULT)."""
        self.kernel.mm.munmap(size_arg("munmap", "addr", addr),
                              size_arg("munmap", "length", length))

    # -- user memory -----------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        """Anonymous zeroed memory; ``hugetlb`` gives 2 MiB compound pages
        (MAP_HUGETLB; the model's pool never runs short)."""
        length = size_arg("alloc", "length", length)
        align = size_arg("alloc", "align", align)
        return self.kernel.mm.mmap_anon(length, shared=shared, align=align or PAGE_SIZE,
                                        hugetlb=hugetlb)

    def peek(self, addr: int, length: int) -> bytes:
        """Read user memory; OSError(EFAULT) where nothing readable is mapped."""
        return self.kernel.mm.read(size_arg("peek", "addr", addr),
                                   size_arg("peek", "length", length))

    def poke(self, addr: int, data: bytes) -> None:
        """Write user memory; OSError(EFAULT) where nothing writable is mapped."""
        self.kernel.mm.write(size_arg("poke", "addr", addr), bytes_arg("poke", "data", data))

    def memfd_create(self, name: str) -> int:
        """memfd_create(2): an empty shared-memory file."""
        if not isinstance(name, str):
            raise TypeError(f"memfd_create: name must be a str, not {type(name).__name__}")
        memfile = MemFile(self.kernel.phys, 0, name)
        fd: int = self.kernel.files.install(MemfdFile(memfile, self._current_mm))
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) of a memfd (EINVAL for other files)."""
        file = self.kernel.files.lookup(fd_arg("ftruncate", fd))
        length = offset_arg("ftruncate", "length", length)
        if not isinstance(file, MemfdFile):
            raise kerr(EINVAL)
        file.memfile.truncate(length)

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Arm the N-th following fault point of the model (0 disarms)."""
        self.kernel.fault.write(int_arg("fail_nth_write", "n", n))

    def fail_nth_read(self) -> int:
        """0 once the armed fault fired, else the remaining count."""
        return self.kernel.fault.read()

    def _current_mm(self) -> Mm:
        return self._kernel.mm

    # -- processes -------------------------------------------------------
    def fork_child(self) -> MockBackend:
        """fork(2): a backend whose calls run as a child task, with a copy of this
        task's fds and mm; its ``shutdown()`` is the child's exit and reaping."""
        if self._closed:
            raise BackendError("mock: fork of a task that has exited")
        child = MockBackend._forked(self, self.kernel.fork())
        self._children.append(child)
        return child

    def getpid(self) -> int:
        """The pid of the task this backend's calls run as."""
        return self._task.pid

    def proc_status(self, field: str, pid: int = 0) -> int:
        """``VmPin`` (mm->pinned_vm) or ``VmLck`` (mm->locked_vm) of task ``pid`` (0:
        this one), in kB; ENOENT once that task has been reaped."""
        task = self._task if pid == 0 else self.kernel.tasks.get(pid)
        if task is None or task.exited:
            raise kerr(ENOENT)
        mm = task.mm
        pages = {"VmPin": mm.pinned_vm, "VmLck": mm.locked_vm}.get(field)
        if pages is None:
            raise BackendError(f"mock: /proc/<pid>/status has no modelled field {field!r}")
        return pages * (PAGE_SIZE // 1024)

    def drop_capability(self, name: str) -> bool:
        """Drop a capability of the simulated task (CAP_IPC_LOCK: new pages are
        accounted); True when it was held."""
        was = self.kernel.task.set_capability(name, False)
        if was is None:
            raise BackendError(f"mock: capability {name!r} is not modelled")
        return was

    def restore_capability(self, name: str) -> None:
        """Give the simulated task a dropped capability back."""
        if self.kernel.task.set_capability(name, True) is None:
            raise BackendError(f"mock: capability {name!r} is not modelled")

    def kernel_warnings(self) -> list[str]:
        """The WARN_ONs the model hit so far (see :attr:`warnings`); the contract's
        take_splats() hands each out once."""
        return list(self.kernel.warnings)

    @property
    def warnings(self) -> list[str]:
        """The WARN_ONs the model hit (a kernel WARN is a bug)."""
        return self.kernel.warnings
