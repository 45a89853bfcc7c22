"""The backend contract: the iommufd ioctl ABI, wherever the ioctls run.

A backend is "a kernel": it has file descriptors, user memory and ioctls. The
arguments are the bytes the kernel would see (cffi structs from
``uapi_headers.ffi``), and failures are ``OSError`` with the kernel's errno, so
one scenario suite, one helper layer and one comparison work on every backend.

Addresses handed to a backend (``user_va``, ``data_uptr``, ...) are addresses in
*that backend's* user memory: get them from :meth:`Backend.alloc`,
:meth:`Backend.mmap` or :meth:`Backend.memfd` and fill them with :meth:`Backend.poke`.
"""

from __future__ import annotations

import abc
import errno
import mmap as _mmap
import os
from types import TracebackType
from typing import Any, Self

# An ioctl argument: None (a NULL pointer), a plain integer (ioctls that take a
# value, such as VFIO_CHECK_EXTENSION), or a cffi cdata pointer/array whose
# whole buffer (len(ffi.buffer(arg))) is what the kernel may read and write.
IoctlArg = Any

PROT_READ = _mmap.PROT_READ
PROT_WRITE = _mmap.PROT_WRITE
PROT_EXEC = _mmap.PROT_EXEC
MAP_SHARED = _mmap.MAP_SHARED
MAP_PRIVATE = _mmap.MAP_PRIVATE


_U64_LIMIT = 1 << 64
_S64_LIMIT = 1 << 63
_INT_LIMIT = 1 << 31


def int_arg(call: str, name: str, value: object) -> int:
    """An int argument of contract call ``call``; anything else is a TypeError naming
    it (bool too: it is an int to Python, never what a caller of close() means)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{call}: {name} must be an int, not {type(value).__name__}")
    return value


def fd_arg(call: str, value: object) -> int:
    """A file descriptor (a C ``int``): a negative one reaches the kernel (EBADF)."""
    fd = int_arg(call, "fd", value)
    if not -_INT_LIMIT <= fd < _INT_LIMIT:
        raise TypeError(f"{call}: fd {fd} does not fit a C int")
    return fd


def size_arg(call: str, name: str, value: object) -> int:
    """A length or address (``size_t`` / ``unsigned long``): a negative value is no
    such number, so the kernel could never see it."""
    size = int_arg(call, name, value)
    if not 0 <= size < _U64_LIMIT:
        raise TypeError(f"{call}: {name} must be an int in [0, 2**64), not {size}")
    return size


def offset_arg(call: str, name: str, value: object) -> int:
    """A file offset (``off_t``, signed): negative values reach the kernel."""
    offset = int_arg(call, name, value)
    if not -_S64_LIMIT <= offset < _S64_LIMIT:
        raise TypeError(f"{call}: {name} {offset} does not fit an off_t")
    return offset


def bytes_arg(call: str, name: str, value: object) -> bytes:
    """A buffer of bytes (``bytes``, ``bytearray``, ``memoryview``)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{call}: {name} must be bytes-like, not {type(value).__name__}")
    return bytes(value)


class BackendError(RuntimeError):
    """The backend itself failed (not an errno of the kernel): a one-line message."""


class Features:
    """Names of what a backend offers; tests declare what they need with
    ``@pytest.mark.requires(...)``."""

    SELFTEST = "selftest"          # IOMMU_TEST_CMD and its mock devices (CONFIG_IOMMUFD_TEST)
    FAIL_NTH = "fail_nth"          # /proc/thread-self/fail-nth fault injection
    VFIO_CDEV = "vfio_cdev"        # /dev/vfio/devices/* bound to vfio-pci
    VFIO_COMPAT = "vfio_compat"    # VFIO type1 compat ioctls on the iommufd fd
    INTEL_VTD = "intel_vtd"        # a real or emulated VT-d
    SMMUV3 = "smmuv3"              # a real or emulated SMMUv3
    HUGEPAGES = "hugepages"        # hugetlb (MAP_HUGETLB) backed user memory
    FORK = "fork"                  # scenarios that fork a child process
    MM_EXIT = "mm_exit"            # scenarios that need another process's mm to exit
    MEMFD = "memfd"                # memfd_create-backed memory
    CAP_SYS_RESOURCE = "cap_sys_resource"  # RLIMIT_MODE needs it
    DMABUF = "dmabuf"              # the selftest's dma-buf exporter (IOMMU_TEST_OP_DMABUF_*)
    FAULT_QUEUE = "fault_queue"    # IOMMU_FAULT_QUEUE_ALLOC queues receiving TRIGGER_IOPF faults
    VIOMMU = "viommu"              # the selftest driver's vIOMMU (IOMMU_VIOMMU_TYPE_SELFTEST)


class Backend(abc.ABC):
    """One place where iommufd ioctls run. Use as a context manager."""

    #: the spec string this backend was opened with ("mock", "kernel", "qemu:x86_64")
    spec: str = ""
    #: feature names (see :class:`Features`)
    features: frozenset[str] = frozenset()
    #: the user page size of the backend's memory
    page_size: int = 4096
    #: the huge page size of the backend's memory (the kernel tests' HUGEPAGE_SIZE:
    #: hpage_pmd_size, also the default hugetlb size on x86_64 and 4K-page arm64)
    hugepage_size: int = 2 * 1024 * 1024

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Release everything the backend holds (fds, memory, guests). Idempotent."""
        return None

    def describe(self) -> str:
        """A one-line description for reports: kernel version, machine."""
        return self.spec

    @property
    def kernel_release(self) -> str:
        """The kernel release the ioctls run on (``uname -r``), or ``"mock"``."""
        return "mock"

    # -- files -----------------------------------------------------------
    @abc.abstractmethod
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open(2) ``path`` (``/dev/iommu``, a VFIO cdev); returns the fd."""

    @abc.abstractmethod
    def close(self, fd: int) -> None:
        """close(2); raises OSError as the kernel would."""

    @abc.abstractmethod
    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2): ``arg`` is read and written in place; returns the return value."""

    @abc.abstractmethod
    def read(self, fd: int, length: int) -> bytes:
        """read(2) from an event queue or access fd."""

    @abc.abstractmethod
    def write(self, fd: int, data: bytes) -> int:
        """write(2) to an event queue fd (page responses)."""

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """pread(2): VFIO device regions (config space, BARs) at their file offsets.
        Backends without such files answer ESPIPE, as a pipe would."""
        raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """pwrite(2) to a VFIO device region; ESPIPE where there is none (see pread)."""
        raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))

    @abc.abstractmethod
    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a backend fd (vIOMMU regions, memfds); returns the address."""

    @abc.abstractmethod
    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) part or all of a mapping in the backend's memory."""

    # -- user memory -----------------------------------------------------
    @abc.abstractmethod
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        """Anonymous user memory (zeroed); returns its address in the backend.

        ``align`` defaults to the page size; ``shared`` selects MAP_SHARED
        (the kernel's tests use shared anonymous memory); ``hugetlb`` maps it as the
        kernel's tests do their huge pages, ``MAP_HUGETLB | MAP_POPULATE``: backed by
        huge pages of the default hugetlb size from the reserved pool
        (``vm.nr_hugepages``), ENOMEM when the pool is short, ``length`` a multiple
        of the huge page size.
        """

    @abc.abstractmethod
    def peek(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes of the backend's user memory."""

    @abc.abstractmethod
    def poke(self, addr: int, data: bytes) -> None:
        """Write bytes into the backend's user memory."""

    def memfd(self, length: int, name: str = "iommufd-harness") -> int:
        """memfd_create(2) + ftruncate(2) to ``length``; returns the fd."""
        fd = self.memfd_create(name)
        try:
            self.ftruncate(fd, length)
        except OSError:
            self.close(fd)  # as a C caller would: no fd left behind on failure
            raise
        return fd

    def memfd_create(self, name: str) -> int:
        """memfd_create(2) of an empty memfd; backends that create memfds override it."""
        raise BackendError(f"{self.spec}: no memfd_create")

    @abc.abstractmethod
    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) a memfd."""

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Arm the N-th fault point of this task (``/proc/thread-self/fail-nth``); 0 disarms."""
        raise BackendError(f"{self.spec}: no fail_nth fault injection")

    def fail_nth_read(self) -> int:
        """Read back fail-nth: 0 once the fault fired, N>0 if the N-th point was not reached."""
        raise BackendError(f"{self.spec}: no fail_nth fault injection")

    def kernel_warnings(self) -> list[str]:
        """The kernel WARNs seen so far, oldest first, one line each: the single source
        of :meth:`take_splats`; leak checks compare the count before and after a run.
        ``[]`` where a splat surfaces otherwise (a guest's splat fails the call it
        happens during)."""
        return []

    # -- processes -------------------------------------------------------
    def fork_child(self) -> Backend:
        """fork(2): a backend whose calls run in a child process of this one.

        The child inherits the fds and the memory (shared mappings stay shared). Its
        ``shutdown()`` makes the child exit(0) and reaps it, so a scenario can leave
        objects created "by another mm" behind (the kernel's fork_gone / fork_present).
        """
        raise BackendError(f"{self.spec}: cannot fork a child process")

    def getpid(self) -> int:
        """The pid of the process the calls run in."""
        raise BackendError(f"{self.spec}: has no process id")

    def proc_status(self, field: str, pid: int = 0) -> int:
        """A ``/proc/<pid>/status`` value such as ``VmPin`` (kB); pid 0 is this process."""
        raise BackendError(f"{self.spec}: has no /proc/<pid>/status")

    def drop_capability(self, name: str) -> bool:
        """Clear capability ``name`` (``"CAP_IPC_LOCK"``) from the effective set of the
        process the calls run in, as the kernel's tests do with libcap; True when it
        was effective. It stays permitted, so :meth:`restore_capability` can raise it."""
        raise BackendError(f"{self.spec}: has no capabilities to drop")

    def restore_capability(self, name: str) -> None:
        """Raise a capability dropped by :meth:`drop_capability` back into the
        effective set (the kernel's tests never need to: each runs in its own fork)."""
        raise BackendError(f"{self.spec}: has no capabilities to restore")

    # -- kernel health ---------------------------------------------------
    _splats_taken = 0
    """How many of :meth:`kernel_warnings` :meth:`take_splats` has handed out."""

    def take_splats(self) -> list[str]:
        """The kernel WARN splats since the previous call, oldest first, as ``WARNING:``
        lines; a WARN is a kernel bug, so the caller fails whatever caused it.

        A consuming view of :meth:`kernel_warnings` (the one source); backends that
        report splats another way (the qemu backend fails the running call) have none
        left to give here."""
        seen = self.kernel_warnings()
        taken = seen[self._splats_taken:]
        self._splats_taken = len(seen)
        return [f"WARNING: {what}" for what in taken]

    # -- helpers every backend shares ------------------------------------
    def has(self, *features: str) -> bool:
        """True when the backend offers every named feature."""
        return all(f in self.features for f in features)

    def missing(self, *features: str) -> list[str]:
        """The named features this backend lacks."""
        return [f for f in features if f not in self.features]
