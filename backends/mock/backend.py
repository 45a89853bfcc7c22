"""MockBackend: the backend contract on the in-Python kernel model.

Files, memory and ioctls all go to one :class:`~backends.mock.kernel.Kernel`: the fd
table holds iommufd contexts, selftest access fds and memfds; user memory is the
simulated task's mm; an ioctl's cdata argument is exposed to the model as user memory
for the duration of the call, exactly the bytes ``ffi.buffer(arg)`` covers.
"""

from __future__ import annotations

import os
from errno import EINVAL, ENOENT

import uapi_headers as u
from backends.contract import (
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Backend,
    BackendError,
    Features,
    IoctlArg,
)
from backends.mock.errors import kerr
from backends.mock.files import MemfdFile
from backends.mock.kernel import Kernel
from backends.mock.main import iommufd_fops_open
from backends.mock.mm import HPAGE_SIZE, PAGE_SIZE, MemFile

_U64 = (1 << 64) - 1
MOCK_PID = 4242
_DEVICES = {"/dev/iommu": False, "/dev/vfio/vfio": True}
_EXE = "/proc/self/exe"
_EXE_SIZE = 1024 * 1024
"""The task's executable: a read-only file, for private file mappings (ro_unshare)."""


class MockBackend(Backend):
    """A kernel in Python: iommufd (Linux 7.3.4 ABI) with its selftest mock driver."""

    spec = "mock"
    features = frozenset({
        Features.SELFTEST,
        Features.FAIL_NTH,
        Features.VFIO_COMPAT,
        Features.MEMFD,
        Features.HUGEPAGES,
        Features.CAP_SYS_RESOURCE,
    })
    page_size = PAGE_SIZE
    hugepage_size = HPAGE_SIZE

    def __init__(self) -> None:
        self.kernel = Kernel(u.ffi)
        self._closed = False

    # -- lifecycle -------------------------------------------------------
    def shutdown(self) -> None:
        """Close every fd (destroying every context). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for fd in self.kernel.files.fds():
            try:
                self.kernel.files.close(fd)
            except OSError:
                pass

    def describe(self) -> str:
        """One line for reports."""
        return "mock: in-Python iommufd model (Linux 7.3.4 uAPI, selftest mock driver)"

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open("/dev/iommu") gives a new iommufd context (/dev/vfio/vfio: VFIO-style
        accounting); "/proc/self/exe" a read-only file; other paths do not exist."""
        if path == _EXE:
            return self.kernel.files.install(
                MemfdFile(self._exe(), self.kernel.mm, writable=False, shmem=False))
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
        self.kernel.files.close(fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2): a cdata ``arg`` is user memory for the call; an int is passed as is
        (a value for value ioctls, an address in this backend's memory otherwise)."""
        kernel = self.kernel
        file = kernel.files.lookup(fd)
        if arg is None:
            return file.ioctl(request, 0)
        if isinstance(arg, int):
            return file.ioctl(request, arg & _U64)
        ffi = kernel.ffi
        ctype = ffi.typeof(arg)
        if arg == ffi.NULL or (ctype.kind == "pointer" and ctype.item.kind == "void"):
            # A NULL or untyped pointer: its value is the address the kernel sees.
            return file.ioctl(request, int(ffi.cast("uintptr_t", arg)) & _U64)
        uaccess = kernel.uaccess
        addr = uaccess.map_arg(arg)
        try:
            return file.ioctl(request, addr)
        finally:
            uaccess.unmap_arg()

    def read(self, fd: int, length: int) -> bytes:
        """read(2)."""
        return self.kernel.files.lookup(fd).read(length)

    def write(self, fd: int, data: bytes) -> int:
        """write(2)."""
        return self.kernel.files.lookup(fd).write(data)

    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a memfd (shared or private) or of the iommufd fd."""
        return self.kernel.files.lookup(fd).mmap(length, offset, prot, bool(flags & MAP_SHARED))

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2); later pins of the range fault (EFAULT)."""
        self.kernel.mm.munmap(addr, length)

    # -- user memory -----------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugepage: bool = False) -> int:
        """Anonymous zeroed memory; ``hugepage`` gives 2 MiB compound pages."""
        return self.kernel.mm.mmap_anon(length, shared=shared, align=align or PAGE_SIZE,
                                        hugepage=hugepage)

    def peek(self, addr: int, length: int) -> bytes:
        """Read user memory; OSError(EFAULT) where nothing readable is mapped."""
        return self.kernel.mm.read(addr, length)

    def poke(self, addr: int, data: bytes) -> None:
        """Write user memory; OSError(EFAULT) where nothing writable is mapped."""
        self.kernel.mm.write(addr, data)

    def memfd_create(self, name: str) -> int:
        """memfd_create(2): an empty shared-memory file."""
        memfile = MemFile(self.kernel.phys, 0, name)
        fd: int = self.kernel.files.install(MemfdFile(memfile, self.kernel.mm))
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) of a memfd (EINVAL for other files)."""
        file = self.kernel.files.lookup(fd)
        if not isinstance(file, MemfdFile):
            raise kerr(EINVAL)
        file.memfile.truncate(length)

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Arm the N-th following fault point of the model (0 disarms)."""
        self.kernel.fault.write(n)

    def fail_nth_read(self) -> int:
        """0 once the armed fault fired, else the remaining count."""
        return self.kernel.fault.read()

    # -- model introspection (not part of the contract) --------------------
    def getpid(self) -> int:
        """The simulated task's pid."""
        return MOCK_PID

    def proc_status(self, field: str, pid: int = 0) -> int:
        """``VmPin`` (mm->pinned_vm) or ``VmLck`` (mm->locked_vm) in kB; the model has
        one process."""
        if pid not in (0, MOCK_PID):
            raise kerr(ENOENT)
        task = self.kernel.task
        pages = {"VmPin": task.pinned_vm, "VmLck": task.locked_vm}.get(field)
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
        """The WARN_ONs the model hit so far (see :attr:`warnings`)."""
        return list(self.kernel.warnings)

    @property
    def warnings(self) -> list[str]:
        """The WARN_ONs the model hit (a kernel WARN is a bug)."""
        return self.kernel.warnings
