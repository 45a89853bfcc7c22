"""Simulated tasks: ``current`` and the children it forks.

A :class:`Task` has what the iommufd code reads from ``current``: its ``mm`` (the
address space, and the ``pinned_vm`` / ``locked_vm`` counters /proc/<pid>/status
reports as VmPin / VmLck), its fd table, its credentials and RLIMIT_MEMLOCK, and its
user (``current_user()``, whose ``locked_vm`` the USER accounting mode charges; a
forked child has the same user).

The tasks run as the kernel selftests do, as root: CAP_SYS_RESOURCE (RLIMIT_MODE may
be set), CAP_IPC_LOCK (new iopt_pages skip accounting) and CAP_SYS_RAWIO. Tests of the
accounting modes can drop capabilities.

:meth:`Task.fork` follows fork(2): the child gets a copy of the fd table (the same
open files) and of the mm (:meth:`~backends.mock.mm.Mm.fork`); :meth:`Task.exit`
closes the child's fds and tears its mm down, while an ``mm_struct`` someone grabbed
(iopt_pages' ``source_mm``) stays readable but can no longer be pinned from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.mock.fault import FaultInjector
from backends.mock.files import FdTable
from backends.mock.mm import Mm
from backends.mock.uaccess import UserAccess

RLIM_INFINITY = (1 << 64) - 1
#: the capabilities the model checks, by <linux/capability.h> name
_CAPABILITY_FIELDS = {
    "CAP_SYS_RESOURCE": "cap_sys_resource",
    "CAP_IPC_LOCK": "cap_ipc_lock",
    "CAP_SYS_RAWIO": "cap_sys_rawio",
}


@dataclass(eq=False)
class UserStruct:
    """``struct user_struct``: what one uid has locked (the USER accounting mode)."""

    locked_vm: int = 0
    """In pages."""


@dataclass(eq=False)
class Task:
    """A ``task_struct`` with the parts iommufd reads from ``current``."""

    pid: int
    mm: Mm
    ffi: Any
    files: FdTable = field(default_factory=FdTable)
    user: UserStruct = field(default_factory=UserStruct)
    cap_sys_resource: bool = True
    cap_ipc_lock: bool = True
    cap_sys_rawio: bool = True
    rlimit_memlock: int = 8 * 1024 * 1024
    """RLIMIT_MEMLOCK in bytes (the usual 8 MiB default)."""
    exited: bool = False
    fault: FaultInjector = field(default_factory=FaultInjector)
    """fail-nth, which a forked child does not inherit."""

    def __post_init__(self) -> None:
        self.uaccess = UserAccess(self.mm, self.ffi)

    def set_capability(self, name: str, on: bool) -> bool | None:
        """Grant or drop a modelled capability; whether it was held before, or None
        for a capability the model does not check."""
        attr = _CAPABILITY_FIELDS.get(name)
        if attr is None:
            return None
        was: bool = getattr(self, attr)
        setattr(self, attr, on)
        return was

    def memlock_limit_pages(self, page_shift: int) -> int:
        """task_rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT."""
        if self.rlimit_memlock >= RLIM_INFINITY:
            return RLIM_INFINITY
        return self.rlimit_memlock >> page_shift

    def fork(self, pid: int) -> Task:
        """fork(2): a child with copies of this task's fds, mm and credentials."""
        child = Task(pid, self.mm.fork(), self.ffi, self.files.dup(), self.user,
                     self.cap_sys_resource, self.cap_ipc_lock, self.cap_sys_rawio,
                     self.rlimit_memlock)
        return child

    def exit(self) -> None:
        """do_exit(): the fds close (exit_files), then the mm goes (exit_mm)."""
        if self.exited:
            return
        self.exited = True
        for fd in self.files.fds():
            self.files.close(fd)
        self.mm.exit()
