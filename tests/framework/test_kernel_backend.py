"""The kernel backend on this host: its one-line refusal without /dev/iommu, and
the parts of the contract that need no iommufd (memory, memfd, mmap, fail-nth,
forked children, /proc/<pid>/status, capabilities)."""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

import uapi_headers as u
from backends import BackendError, Features, open_backend
from backends.kernel import KernelBackend, caps, faultinject, features, libc
from backends.kernel.diagnose import DEV_IOMMU, config_iommufd, missing_iommufd_reason
from backends.kernel.memory import MappingTable

NO_IOMMU = not os.path.exists(DEV_IOMMU)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def be():
    """The kernel backend without its /dev/iommu check: files and memory only."""
    backend = KernelBackend(dev_iommu=None)
    yield backend
    backend.shutdown()


# -- no /dev/iommu ------------------------------------------------------------------
@pytest.mark.skipif(not NO_IOMMU, reason="this host has /dev/iommu")
def test_open_without_dev_iommu_is_one_line_error():
    with pytest.raises(BackendError) as info:
        open_backend("kernel")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"kernel backend: no /dev/iommu on kernel {os.uname().release}: ")
    config, _source = config_iommufd(os.uname().release)
    if config == "n":
        assert "built without iommufd (CONFIG_IOMMUFD is not set" in message


def test_missing_node_reason_names_the_path(tmp_path):
    path = str(tmp_path / "iommu")
    with pytest.raises(BackendError, match=f"no {path} on kernel"):
        KernelBackend(dev_iommu=path)
    assert missing_iommufd_reason(path).count("\n") == 0


def test_unopenable_node_is_one_line_error(tmp_path):
    path = tmp_path / "iommu"
    path.write_text("")
    path.chmod(0)
    if os.access(path, os.R_OK | os.W_OK):  # root ignores the mode: use a directory
        path.unlink()
        path.mkdir()
    with pytest.raises(BackendError, match=r"^kernel backend: cannot open .*iommu: "):
        KernelBackend(dev_iommu=str(path))


# -- features ---------------------------------------------------------------------
def test_probe_constants_match_the_uapi():
    assert features.IOMMU_TEST_CMD == u.IOMMU_TEST_CMD
    assert features.VFIO_CHECK_EXTENSION == u.VFIO_CHECK_EXTENSION
    assert features.VFIO_TYPE1v2_IOMMU == u.VFIO_TYPE1v2_IOMMU


def test_host_features_are_honest(be):
    found = be.features
    assert {Features.FORK, Features.MM_EXIT} <= found
    assert (Features.FAIL_NTH in found) == os.path.exists("/proc/thread-self/fail-nth")
    assert (Features.MEMFD in found) == features.memfd_works()
    # Only an iommufd fd can say these.
    assert Features.SELFTEST not in found and Features.VFIO_COMPAT not in found


def test_selftest_probe_tells_enotty_from_other_errnos(monkeypatch):
    def answer(err):
        def fake_ioctl(fd, request, arg=None):
            assert request == u.IOMMU_TEST_CMD
            raise OSError(err, os.strerror(err))
        return fake_ioctl

    monkeypatch.setattr(libc, "ioctl", answer(errno.ENOTTY))
    assert features.probe_selftest(-1) is False
    monkeypatch.setattr(libc, "ioctl", answer(errno.EOPNOTSUPP))
    assert features.probe_selftest(-1) is True


def test_iommu_names_from_sysfs(tmp_path):
    for name in ("dmar0", "smmu3.0x0000000009050000"):
        (tmp_path / name).mkdir()
    assert features.iommu_names(str(tmp_path)) == ["dmar0", "smmu3.0x0000000009050000"]
    assert features.iommu_names(str(tmp_path / "none")) == []


# -- ioctl argument passing -------------------------------------------------------
def test_ioctl_passes_cdata_address_int_and_null(monkeypatch):
    seen = []
    monkeypatch.setattr(libc, "raw_ioctl", lambda fd, req, carg: seen.append(carg) or 0)
    cmd = u.ffi.new("struct iommu_ioas_alloc *", {"size": 12})
    libc.ioctl(3, u.IOMMU_IOAS_ALLOC, cmd)
    libc.ioctl(3, u.VFIO_CHECK_EXTENSION, 3)
    libc.ioctl(3, u.VFIO_CHECK_EXTENSION, None)
    address = int(libc.ffi.cast("uintptr_t", seen[0]))
    assert address == int(u.ffi.cast("uintptr_t", cmd))
    assert int(libc.ffi.cast("uintptr_t", seen[1])) == 3
    assert seen[2] == libc.ffi.NULL


def test_real_ioctl_errno_is_oserror(be):
    fd = be.memfd(4096)
    cmd = u.ffi.new("struct iommu_ioas_alloc *", {"size": 12})
    with pytest.raises(OSError) as info:
        be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd)
    assert info.value.errno == errno.ENOTTY  # a memfd knows no iommufd ioctl


# -- memory -----------------------------------------------------------------------
def test_alloc_peek_poke(be):
    addr = be.alloc(3 * be.page_size)
    assert addr % be.page_size == 0
    assert be.peek(addr, 16) == bytes(16)
    be.poke(addr + 100, b"iommufd")
    assert be.peek(addr + 100, 7) == b"iommufd"
    # The kernel would read the same bytes from this address.
    assert bytes(libc.ffi.buffer(libc.ffi.cast("char *", addr + 100), 7)) == b"iommufd"


@pytest.mark.parametrize("shared", [True, False])
def test_alloc_alignment(be, shared):
    align = 1 << 21
    addr = be.alloc(5000, align=align, shared=shared)
    assert addr % align == 0
    be.poke(addr + 4999, b"x")


def test_alloc_hugetlb_maps_huge_pages(be):
    if Features.HUGEPAGES not in be.features:
        pytest.skip("no huge pages reserved (vm.nr_hugepages) on this host")
    addr = be.alloc(be.hugepage_size, hugetlb=True)
    assert addr % be.hugepage_size == 0
    with open("/proc/self/smaps") as f:
        text = f.read()
    block = text[text.index(f"{addr:x}-"):].split("VmFlags:", 1)[1].splitlines()[0]
    assert " ht" in block  # VM_HUGETLB
    be.munmap(addr, be.hugepage_size)


def test_peek_poke_unmapped_is_efault(be):
    addr = be.alloc(be.page_size)
    be.munmap(addr, be.page_size)
    for action in (lambda: be.peek(addr, 1), lambda: be.poke(addr, b"x")):
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == errno.EFAULT


def test_bad_alignment_is_einval(be):
    with pytest.raises(OSError) as info:
        be.alloc(4096, align=3 * 4096)
    assert info.value.errno == errno.EINVAL


def test_memfd_mmap_shares_pages(be):
    fd = be.memfd(2 * be.page_size, "shared-test")
    a = be.mmap(fd, 2 * be.page_size)
    b = be.mmap(fd, be.page_size, offset=be.page_size)
    be.poke(a + be.page_size + 8, b"memfd")
    assert be.peek(b + 8, 5) == b"memfd"
    assert os.fstat(fd).st_size == 2 * be.page_size
    be.ftruncate(fd, 3 * be.page_size)
    assert os.fstat(fd).st_size == 3 * be.page_size


def test_anonymous_mmap_takes_fd_minus_one(be):
    # MAP_ANONYMOUS with fd -1, as vfio_dma_mapping_test maps its buffers.
    addr = be.mmap(-1, be.page_size, 0, mmap.PROT_READ | mmap.PROT_WRITE,
                   mmap.MAP_ANONYMOUS | mmap.MAP_PRIVATE)
    be.poke(addr, b"anon")
    assert be.peek(addr, 4) == b"anon"
    be.munmap(addr, be.page_size)


def test_read_write_on_fds(be):
    r, w = os.pipe()
    assert be.write(w, b"event") == 5
    assert be.read(r, 16) == b"event"
    os.close(r)
    os.close(w)


def test_open_close_and_shutdown_releases(tmp_path):
    backend = KernelBackend(dev_iommu=None)
    fd = backend.open(str(tmp_path / "f"), os.O_RDWR | os.O_CREAT)
    kept = backend.open("/dev/null")
    backend.close(fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    addr = backend.alloc(4096)
    backend.shutdown()
    backend.shutdown()  # idempotent
    with pytest.raises(OSError):
        os.fstat(kept)
    with open("/proc/self/maps") as f:
        assert f"{addr:x}-" not in f.read()


def test_mapping_table_splits_partial_unmaps():
    table = MappingTable()
    table.add(0x10000, 0x4000)
    table.remove(0x11000, 0x1000)
    assert table.ranges() == [(0x10000, 0x1000), (0x12000, 0x2000)]
    assert table.covers(0x12000, 0x2000) and not table.covers(0x10000, 0x2000)
    table.remove(0x0, 0x100000)
    assert len(table) == 0


def test_iommufd_mappings_are_read_by_the_cpu(be):
    # /proc/self/mem cannot reach io_remap_pfn_range mappings (a vIOMMU's mmap region),
    # so mappings of the iommufd path go through CPU loads and stores; a memfd stands
    # in for /dev/iommu here.
    fd = be.memfd(be.page_size, "iommufd-standin")
    be.dev_iommu = os.readlink(f"/proc/self/fd/{fd}")
    addr = be.mmap(fd, be.page_size)
    be.poke(addr + 4, b"\x01\x02\x03")
    assert be.peek(addr, 8) == b"\0\0\0\0\x01\x02\x03\0"
    assert be._io_maps.covers(addr, be.page_size)
    be.munmap(addr, be.page_size)
    assert not be._io_maps.covers(addr, 1)


# -- fail-nth ---------------------------------------------------------------------
def test_fail_nth_unavailable_is_backend_error(be):
    if Features.FAIL_NTH in be.features:
        pytest.skip("this host has fail-nth")
    with pytest.raises(BackendError, match="no fail_nth fault injection"):
        be.fail_nth_write(1)


@pytest.mark.skipif(not faultinject.available(), reason="no /proc/thread-self/fail-nth")
def test_fail_nth_write_read_back(be):
    be.fail_nth_write(1000)
    assert be.fail_nth_read() == 1000  # armed around syscalls only: nothing counted yet
    fd = be.memfd(4096)
    be.ftruncate(fd, 8192)  # counts whatever fault points ftruncate passes
    assert 0 < be.fail_nth_read() <= 1000
    be.fail_nth_write(0)
    assert be.fail_nth_read() == 0


def test_fail_nth_window_arms_only_around_the_call(tmp_path):
    """The window with a stand-in fail-nth file: armed with the count right
    before the call, disarmed (0) right after, the remaining count kept."""
    path = tmp_path / "fail-nth"
    path.write_text("0")
    nth = faultinject.FailNth(str(path), debugfs=str(tmp_path), allowed=True)
    nth.write(7)
    assert path.read_text() == "0"  # not armed while Python runs

    def syscall():
        assert path.read_text() == "7"
        path.write_text("5")  # the kernel counted two fault points
        return "ret"

    assert nth.call(syscall) == "ret"
    assert path.read_text() == "0"
    assert nth.read() == 5
    with pytest.raises(OSError) as info:
        nth.write(-1)
    assert info.value.errno == errno.EINVAL


def test_fail_nth_counts_are_per_thread(tmp_path):
    path = tmp_path / "fail-nth"
    path.write_text("0")
    nth = faultinject.FailNth(str(path), debugfs=str(tmp_path), allowed=True)
    nth.write(3)
    other = []
    t = threading.Thread(target=lambda: other.append(nth.read()))
    t.start()
    t.join()
    assert other == [0] and nth.read() == 3


# -- fork_child, getpid, proc_status, capabilities -------------------------------------
def _state(pid):
    """The process's state letter (``Z``: a zombie), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def _dead(pid, within=5.0):
    deadline = time.monotonic() + within
    while _state(pid) not in (None, "Z", "X"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def child(be):
    forked = be.fork_child()
    yield forked
    forked.shutdown()


def test_child_shares_map_shared_memory_and_copies_private(be):
    page = be.page_size
    shared, private = be.alloc(page, shared=True), be.alloc(page, shared=False)
    be.poke(private, b"before")
    with be.fork_child() as child:
        # Written after the fork: seen through MAP_SHARED only.
        be.poke(shared, b"parent")
        be.poke(private, b"parent")
        assert child.peek(shared, 6) == b"parent"
        assert child.peek(private, 6) == b"before"  # the child's copy, made at the fork
        child.poke(shared + 8, b"child")
        child.poke(private, b"child!")
        assert be.peek(shared + 8, 5) == b"child"  # the child's write comes back
        assert be.peek(private, 6) == b"parent"
        assert child.peek(private, 6) == b"child!"


def test_child_memory_outside_its_mappings_is_efault(be, child):
    addr = be.alloc(be.page_size)  # after the fork: the parent's alone
    for bad in (0, addr):
        with pytest.raises(OSError) as info:
            child.peek(bad, 1)
        assert info.value.errno == errno.EFAULT


def test_child_inherits_fds_and_its_own_stay_its_own(be):
    fd = be.memfd(be.page_size, "fork-test")
    with be.fork_child() as second:
        second.ftruncate(fd, 2 * be.page_size)
        addr = second.mmap(fd, be.page_size)
        second.poke(addr, b"memfd")
        assert os.fstat(fd).st_size == 2 * be.page_size  # one file, both processes
        assert os.pread(fd, 5, 0) == b"memfd"
        mine = second.memfd(be.page_size, "child-only")
        with pytest.raises(OSError) as info:
            os.fstat(mine)  # the child's new fd is not the parent's
        assert info.value.errno == errno.EBADF


def test_child_ioctl_writes_the_argument_back(be, child):
    r, w = os.pipe()
    try:
        os.write(w, b"12345")
        with be.fork_child() as forked:  # has the pipe
            count = libc.ffi.new("int *")
            assert forked.ioctl(r, termios.FIONREAD, count) == 0
            assert count[0] == 5
            with pytest.raises(OSError) as info:
                forked.ioctl(r, 0x1234, count)
            assert info.value.errno == errno.ENOTTY
            outcomes = forked.batch([("ioctl", r, termios.FIONREAD, count), ("close", 999)])
            assert [o.errno for o in outcomes] == [0, errno.EBADF] and count[0] == 5
    finally:
        os.close(r)
        os.close(w)


def test_getpid_and_proc_status(be, child):
    me = os.getpid()
    assert be.getpid() == me
    pid = child.getpid()
    assert pid not in (0, me) and pid == child.pid
    assert child.proc_status("Pid") == pid and child.proc_status("PPid:") == me
    assert be.proc_status("Pid", pid) == pid
    assert child.proc_status("VmPin", me) == be.proc_status("VmPin") == 0
    assert child.proc_status("VmRSS") > 0
    with pytest.raises(BackendError, match="no field 'VmNope'"):
        child.proc_status("VmNope")
    with pytest.raises(BackendError, match="not a number"):
        child.proc_status("State")


def test_proc_status_of_a_missing_process_is_enoent(be):
    with be.fork_child() as forked:
        pid = forked.getpid()
    with pytest.raises(OSError) as info:
        be.proc_status("VmPin", pid)
    assert info.value.errno == errno.ENOENT


def test_shutdown_exits_and_reaps(be):
    forked = be.fork_child()
    pid = forked.pid
    forked.shutdown()
    forked.shutdown()  # idempotent
    assert forked.exit_status == 0 and _state(pid) is None  # reaped: no zombie left
    with pytest.raises(BackendError, match="has been shut down"):
        forked.getpid()


def test_a_killed_child_is_a_backend_error(be):
    forked = be.fork_child()
    os.kill(forked.pid, signal.SIGKILL)
    with pytest.raises(BackendError, match="killed by SIGKILL"):
        forked.getpid()
    forked.shutdown()
    assert os.WTERMSIG(forked.exit_status) == signal.SIGKILL


def test_children_nest(be):
    addr = be.alloc(be.page_size)
    child = be.fork_child()
    grandchild = child.fork_child()
    try:
        assert grandchild.proc_status("PPid") == child.getpid()
        grandchild.poke(addr, b"deep")
        assert be.peek(addr, 4) == b"deep"
        pid = grandchild.getpid()
    finally:
        grandchild.shutdown()
        child.shutdown()
    assert grandchild.exit_status == 0 and _dead(pid)


def test_capabilities_drop_and_restore_in_a_child(be, child):
    if not features.has_capability(caps.number("CAP_IPC_LOCK")):
        pytest.skip("this process has no CAP_IPC_LOCK to drop")
    bit = 1 << caps.number("CAP_IPC_LOCK")
    pid = child.getpid()
    assert child.drop_capability("CAP_IPC_LOCK") is True
    assert child.drop_capability("CAP_IPC_LOCK") is False  # already dropped
    assert not be.proc_status("CapEff", pid) & bit
    assert be.proc_status("CapPrm", pid) & bit  # still permitted ...
    assert be.proc_status("CapEff") & bit  # ... and the parent keeps its own
    child.restore_capability("CAP_IPC_LOCK")
    assert be.proc_status("CapEff", pid) & bit
    with pytest.raises(OSError) as info:
        child.drop_capability("CAP_NOPE")
    assert info.value.errno == errno.EINVAL


# Run as a script: what the child must never do with its parent's code.
_PARENT_CODE = """
import atexit, os, signal, sys
sys.path.insert(0, sys.argv[1])
from backends.kernel import KernelBackend
atexit.register(lambda: print("atexit ran in", os.getpid() == PID, flush=True))
signal.signal(signal.SIGTERM, lambda *_: print("handler ran", flush=True))
PID = os.getpid()
sys.stdout.write("buffered before the fork\\n")  # a pipe: block-buffered, not yet written
be = KernelBackend(dev_iommu=None)
child = be.fork_child()
child.getpid()
child.shutdown()
print("exit status", child.exit_status)
child = be.fork_child()
os.kill(child.getpid(), signal.SIGTERM)
child.shutdown()
print("terminated", os.WTERMSIG(child.exit_status) == signal.SIGTERM)
"""


def test_the_child_runs_none_of_the_parents_code():
    """No atexit hook, no second flush of the parent's buffers, no Python signal handler."""
    out = subprocess.run([sys.executable, "-c", _PARENT_CODE, str(ROOT)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.splitlines() == ["buffered before the fork", "exit status 0", "terminated True",
                                "atexit ran in True"]


_ORPHAN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from backends.kernel import KernelBackend
child = KernelBackend(dev_iommu=None).fork_child()
print(child.getpid(), flush=True)
time.sleep(60)
"""


def test_a_dying_parent_takes_the_child():
    owner = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(ROOT)],
                             stdout=subprocess.PIPE, text=True)
    try:
        pid = int(owner.stdout.readline())
        assert _state(pid) not in (None, "Z")
        owner.kill()  # no handler runs: PR_SET_PDEATHSIG does it
        owner.wait(10)
        assert _dead(pid)
    finally:
        owner.kill()
        owner.wait()
