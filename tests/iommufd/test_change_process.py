"""The kernel's ``change_process`` fixture group (tools/testing/selftests/iommu/iommufd.c).

IOMMU_IOAS_CHANGE_PROCESS moves the pin accounting (VmPin, and VmLck in the MM rlimit
mode) of an iommufd's file-backed maps to the calling process; it is refused while an
anonymous-memory map exists, since those pages belong to the old mm.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from errno import EINVAL

import pytest

import uapi_headers as u
from backends import Backend, Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    SelftestGlobals,
    change_process,
    expect_errno,
    mock_domain,
    option_set,
)


class IoptPagesAccount(IntEnum):
    """The kernel's accounting modes (io_pagetable.h; the selftest keeps its own copy)."""

    IOPT_PAGES_ACCOUNT_NONE = 0
    IOPT_PAGES_ACCOUNT_USER = 1
    IOPT_PAGES_ACCOUNT_MM = 2


@dataclass(frozen=True)
class ChangeProcessVariant:
    """FIXTURE_VARIANT(change_process)."""

    accounting: IoptPagesAccount


VARIANTS = {
    "account_none": ChangeProcessVariant(IoptPagesAccount.IOPT_PAGES_ACCOUNT_NONE),
    "account_user": ChangeProcessVariant(IoptPagesAccount.IOPT_PAGES_ACCOUNT_USER),
    "account_mm": ChangeProcessVariant(IoptPagesAccount.IOPT_PAGES_ACCOUNT_MM),
}

pytestmark = kselftest.fixture("change_process", VARIANTS)


@dataclass
class ChangeProcessFixture:
    """FIXTURE(change_process)."""

    fd: Iommufd
    ioas: Ioas
    g: SelftestGlobals
    variant: ChangeProcessVariant


class DroppedCapabilities:
    """Capabilities a case drops from the backend's process, raised again afterwards.

    The kernel's harness runs every TEST_F in a forked child, so its
    drop_cap_ipc_lock() ends with the case. Here the ioctls run in one long-lived
    process (this one, or the guest agent), so the drop is undone instead: only the
    effective set changes and the capability stays permitted, so capset can raise it
    again. Dropping in a forked child instead would move the case (and ``getpid()``,
    the "parent" whose VmPin it checks) out of the process the fixtures opened the
    iommufd and made the shared buffers in.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._dropped: list[str] = []

    def drop(self, name: str) -> None:
        """Clear ``name`` from the effective set (a no-op if it was not there)."""
        if self.backend.drop_capability(name):
            self._dropped.append(name)

    def restore(self) -> None:
        """Raise everything :meth:`drop` cleared, newest first."""
        while self._dropped:
            self.backend.restore_capability(self._dropped.pop())


@pytest.fixture
def capabilities(backend: Backend) -> Iterator[DroppedCapabilities]:
    """Restores what the case dropped. Requested before ``iommufd`` so that, as in the
    kernel, the iommufd teardown (close, pin-leak check) still runs without them."""
    dropped = DroppedCapabilities(backend)
    yield dropped
    dropped.restore()


@pytest.fixture(name="self")
def change_process_fixture(capabilities: DroppedCapabilities, iommufd: Iommufd,
                           kglobals: SelftestGlobals,
                           variant: ChangeProcessVariant) -> Iterator[ChangeProcessFixture]:
    """FIXTURE_SETUP(change_process); the teardown is the iommufd fixture's close and
    pin-leak check, then the capability's return.

    Like the kernel's setup, drop CAP_IPC_LOCK right after opening the iommufd: pages.c
    gives a capable task IOPT_PAGES_ACCOUNT_NONE, and the case checks the accounting.
    """
    capabilities.drop("CAP_IPC_LOCK")
    if variant.accounting != IoptPagesAccount.IOPT_PAGES_ACCOUNT_NONE:
        if not iommufd.backend.has(Features.CAP_SYS_RESOURCE):
            pytest.skip("setting IOMMU_OPTION_RLIMIT_MODE needs CAP_SYS_RESOURCE")
        option_set(iommufd, u.IOMMU_OPTION_RLIMIT_MODE,
                   int(variant.accounting == IoptPagesAccount.IOPT_PAGES_ACCOUNT_MM))
    ioas = Ioas.alloc(iommufd)
    # A domain, so that every map is pinned (and accounted) at once.
    mock_domain(iommufd, ioas.id)
    yield ChangeProcessFixture(iommufd, ioas, kglobals, variant)


@marks.requires(Features.SELFTEST, Features.FORK,
                reason="needs a second process's mm")
def test_basic(self: ChangeProcessFixture) -> None:
    backend, page = self.fd.backend, self.g.page_size
    parent = backend.getpid()
    mm_mode = self.variant.accounting == IoptPagesAccount.IOPT_PAGES_ACCOUNT_MM

    # Refused while a map of (anonymous) non-file memory exists.
    iova = self.ioas.map(self.g.buffer, page)
    with expect_errno(EINVAL):
        change_process(self.fd)
    self.ioas.unmap(iova, page)

    # With only file maps it works, here in the same process ...
    self.ioas.map_file(self.g.mfd, 0, page)
    change_process(self.fd)

    # ... and in a child, which then carries the accounting.
    child = backend.fork_child()
    try:
        me = child.getpid()
        nlock = page // 1024  # /proc/<pid>/status counts kB

        assert child.proc_status("VmPin", parent) == nlock
        if mm_mode:
            assert child.proc_status("VmLck", parent) == nlock
        assert child.proc_status("VmPin", me) == 0
        assert child.proc_status("VmLck", me) == 0

        change_process(Iommufd(child, self.fd.fd))

        assert child.proc_status("VmPin", parent) == 0
        assert child.proc_status("VmLck", parent) == 0
        assert child.proc_status("VmPin", me) == nlock
        if mm_mode:
            assert child.proc_status("VmLck", me) == nlock
    finally:
        child.shutdown()
