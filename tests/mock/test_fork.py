"""fork(2) on the mock: a child task with a copy of the fds and the mm, whose exit
closes its fds and tears its mm down (tools/testing/selftests/iommu's fork cases)."""

from __future__ import annotations

from errno import EFAULT, ENOENT

import uapi_headers as u
from backends.mock import MockBackend
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of


def test_child_has_its_own_pid_and_copies_of_private_memory(be: MockBackend) -> None:
    shared = be.alloc(PAGE_SIZE, shared=True)
    private = be.alloc(PAGE_SIZE, shared=False)
    be.poke(shared, b"parent")
    be.poke(private, b"parent")
    child = be.fork_child()
    assert child.getpid() != be.getpid()
    assert child.peek(private, 6) == b"parent"
    child.poke(shared, b"child!")
    child.poke(private, b"child!")
    assert be.peek(shared, 6) == b"child!"  # MAP_SHARED: the same pages
    assert be.peek(private, 6) == b"parent"  # MAP_PRIVATE: the child's own copy
    # Memory the child maps is its own.
    mine = child.alloc(PAGE_SIZE)
    assert errno_of(be.peek, mine, 1) == EFAULT
    child.shutdown()
    assert be.peek(shared, 6) == b"child!"  # the child's exit leaves shared pages
    assert errno_of(be.proc_status, "VmPin", child.getpid()) == ENOENT


def test_child_shares_open_files_and_its_exit_closes_only_its_fds(be: MockBackend) -> None:
    fd = Fd(be)
    ioas = fd.ioas()
    child = be.fork_child()
    in_child = Fd.on(child, fd.fd)
    assert in_child.ioas() == ioas + 1  # the same iommufd context
    child.close(fd.fd)
    child.shutdown()
    assert fd.ioas() == ioas + 2
    fd.close()


def test_pages_of_an_exited_mm_cannot_be_pinned(be: MockBackend) -> None:
    fd = Fd(be)
    ioas = fd.ioas()
    child = be.fork_child()
    in_child = Fd.on(child, fd.fd)
    buf = child.alloc(PAGE_SIZE)
    iova = in_child.map(ioas, buf, PAGE_SIZE, iova=u.MOCK_APERTURE_START)
    # While the child lives, the parent pins the child's pages (a remote GUP).
    stdev, _hwpt, _idev = fd.mock_domain(ioas)
    fd.destroy(stdev)
    child.shutdown()
    # Its mm is gone: pin_user_pages_remote has nothing to pin from.
    assert errno_of(fd.mock_domain, ioas) == EFAULT
    fd.unmap(ioas, iova, PAGE_SIZE)
    fd.close()


def test_parent_shutdown_reaps_its_children(be: MockBackend) -> None:
    child = be.fork_child()
    pid = child.getpid()
    grandchild = child.fork_child()
    assert be.proc_status("VmPin", grandchild.getpid()) == 0
    be.shutdown()
    assert pid not in be.kernel.tasks


def test_fail_nth_is_per_task_and_not_inherited(be: MockBackend) -> None:
    fd = Fd(be)
    be.fail_nth_write(1)
    child = be.fork_child()
    assert child.fail_nth_read() == 0
    # The child's ioctls do not consume the parent's armed fault ...
    Fd.on(child, fd.fd).ioas()
    assert be.fail_nth_read() == 1
    # ... the parent's own next fault point fires it.
    assert errno_of(fd.ioas) != 0
    assert be.fail_nth_read() == 0
    child.shutdown()
    fd.close()
