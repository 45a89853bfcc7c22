"""The simulated machine's global state: what every iommufd fd and driver shares.

One :class:`Kernel` per backend: physical memory, the tasks (``current`` and the
children it forked) with their mm, fd table and credentials, the fail-nth counter,
the selftest knobs that are module globals in the kernel
(``iommufd_test_memory_limit``), the mock IOMMU instance, and a log of the WARN_ONs
the model hit (a kernel WARN is a bug; tests can assert there were none).
"""

from __future__ import annotations

from typing import Any

from backends.mock.fault import FaultInjector
from backends.mock.files import FdTable
from backends.mock.mm import Mm, PhysMem
from backends.mock.task import Task
from backends.mock.uaccess import UserAccess

FIRST_PID = 4242
"""The pid of the task a backend starts with."""
TEMP_MEMORY_LIMIT_DEFAULT = 65536
"""``iommufd_test_memory_limit`` at module load (selftest.c)."""


class Kernel:
    """Everything outside one iommufd context."""

    def __init__(self, ffi: Any) -> None:
        self.ffi = ffi
        self.phys = PhysMem()
        self.current = Task(FIRST_PID, Mm(self.phys), ffi)
        """The task the running call is made by (a backend sets it on every call)."""
        self.tasks: dict[int, Task] = {FIRST_PID: self.current}
        """Tasks not yet reaped, by pid."""
        self.test_memory_limit = TEMP_MEMORY_LIMIT_DEFAULT
        self.warnings: list[str] = []
        # The mock IOMMU driver instance is created lazily by mock_driver (import cycle).
        self.mock_iommu: Any = None

    # -- current ------------------------------------------------------------
    @property
    def task(self) -> Task:
        """``current``."""
        return self.current

    @property
    def fault(self) -> FaultInjector:
        """``current``'s fail-nth (/proc/thread-self/fail-nth is per task)."""
        return self.current.fault

    @property
    def mm(self) -> Mm:
        """``current->mm``."""
        return self.current.mm

    @property
    def files(self) -> FdTable:
        """``current->files``."""
        return self.current.files

    @property
    def uaccess(self) -> UserAccess:
        """The user memory of ``current``, as copy_*_user sees it."""
        return self.current.uaccess

    def fork(self) -> Task:
        """fork(2) of ``current``: the child, with the next free pid."""
        child = self.current.fork(max(self.tasks) + 1)
        self.tasks[child.pid] = child
        return child

    def reap(self, task: Task) -> None:
        """exit(2) and waitpid(2) of ``task``: its fds close as if it called close,
        its mm goes, and its pid is no more."""
        saved = self.current
        self.current = task
        try:
            task.exit()
        finally:
            self.current = saved
        self.tasks.pop(task.pid, None)

    def should_fail(self, site: str) -> bool:
        """``iommufd_should_fail()`` / failslab at ``site``."""
        return self.fault.should_fail(site)

    def warn_on(self, condition: bool, what: str) -> bool:
        """WARN_ON(): record ``what`` when ``condition`` holds; returns ``condition``."""
        if condition:
            self.warnings.append(what)
        return condition
