"""The simulated machine's global state: what every iommufd fd and driver shares.

One :class:`Kernel` per backend: physical memory, the one task ("current") with its mm,
fd table, credentials and fail-nth counter, the selftest knobs that are module globals
in the kernel (``iommufd_test_memory_limit``), the mock IOMMU instance, and a log of
the WARN_ONs the model hit (a kernel WARN is a bug; tests can assert there were none).
"""

from __future__ import annotations

from typing import Any

from backends.mock.fault import FaultInjector
from backends.mock.files import FdTable
from backends.mock.mm import Mm, PhysMem
from backends.mock.task import Task
from backends.mock.uaccess import UserAccess

TEMP_MEMORY_LIMIT_DEFAULT = 65536
"""``iommufd_test_memory_limit`` at module load (selftest.c)."""


class Kernel:
    """Everything outside one iommufd context."""

    def __init__(self, ffi: Any) -> None:
        self.ffi = ffi
        self.phys = PhysMem()
        self.mm = Mm(self.phys)
        self.uaccess = UserAccess(self.mm, ffi)
        self.task = Task()
        self.fault = FaultInjector()
        self.files = FdTable()
        self.test_memory_limit = TEMP_MEMORY_LIMIT_DEFAULT
        self.warnings: list[str] = []
        # The mock IOMMU driver instance is created lazily by mock_driver (import cycle).
        self.mock_iommu: Any = None

    def should_fail(self, site: str) -> bool:
        """``iommufd_should_fail()`` / failslab at ``site``."""
        return self.fault.should_fail(site)

    def warn_on(self, condition: bool, what: str) -> bool:
        """WARN_ON(): record ``what`` when ``condition`` holds; returns ``condition``."""
        if condition:
            self.warnings.append(what)
        return condition
