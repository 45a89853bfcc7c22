"""The guest-agent protocol, the agent, and QemuBackend's crash handling, without a guest.

The agent runs for real (a subprocess over a socketpair, or inside a stand-in
for QEMU) with a fake kernel behind it (tests/framework/qemu_fakes.py).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uapi_headers as u
from backends.contract import BackendError
from backends.kernel.rpc.channel import Channel, ChannelClosed
from backends.qemu import GuestCrashed, GuestError, QemuBackend, process
from backends.qemu.dispatch import Dispatcher
from backends.qemu.protocol import (
    AGENT_BUG,
    BACKEND_ERROR,
    ERRNO,
    OK,
    PROTOCOL_VERSION,
    FrameReader,
    ProtocolError,
    encode,
)
from tests.framework import qemu_fakes
from tests.framework.qemu_fakes import FAKE_HANG, FAKE_WARN, FakeKernel

ROOT = Path(__file__).resolve().parents[2]
FAKE_QEMU = Path(qemu_fakes.__file__).resolve()


def _alloc_cmd():
    return u.ffi.new("struct iommu_ioas_alloc *", {"size": u.ffi.sizeof("struct iommu_ioas_alloc")})


def _ranges_cmd(ioas_id, num=0, uptr=0):
    return u.ffi.new("struct iommu_ioas_iova_ranges *", {
        "size": u.ffi.sizeof("struct iommu_ioas_iova_ranges"), "ioas_id": ioas_id,
        "num_iovas": num, "allowed_iovas": uptr})


# -- framing ----------------------------------------------------------------------
def test_frames_survive_any_chunking():
    messages = [(1, "ioctl", (3, 0x3B81, b"\x0c\0\0\0" + bytes(8))), (2, OK, None),
                (3, "batch", ([("close", (4,))], True)), (4, ERRNO, (22, "Invalid", b"x" * 70000))]
    stream = b"".join(encode(m) for m in messages)
    for step in (1, 3, 4096, len(stream)):
        reader = FrameReader()
        got = []
        for i in range(0, len(stream), step):
            reader.feed(stream[i:i + step])
            while True:
                complete, message = reader.next()
                if not complete:
                    break
                got.append(message)
        assert got == messages and reader.pending == 0


def test_garbage_frames_are_protocol_errors():
    reader = FrameReader()
    reader.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="out of sync"):
        reader.next()
    reader = FrameReader()
    reader.feed(b"\x02\0\0\0\xfe\xfe")
    with pytest.raises(ProtocolError, match="undecodable"):
        reader.next()


# -- the dispatcher (in-process) ---------------------------------------------------
@pytest.fixture
def dispatcher():
    d = Dispatcher(FakeKernel)
    yield d
    d.close()


def _open_iommu(d):
    status, fd = d.handle("open", ("/dev/iommu", os.O_RDWR))
    assert status == OK
    return fd


def test_dispatch_ioctl_returns_updated_bytes(dispatcher):
    fd = _open_iommu(dispatcher)
    cmd = _alloc_cmd()
    status, (ret, data) = dispatcher.handle("ioctl", (fd, u.IOMMU_IOAS_ALLOC,
                                                     bytes(u.ffi.buffer(cmd))))
    assert status == OK and ret == 0
    assert len(data) == u.ffi.sizeof(cmd[0])
    u.ffi.buffer(cmd)[:] = data
    assert cmd.out_ioas_id == 1


def test_dispatch_errno_carries_bytes_written_before_failing(dispatcher):
    fd = _open_iommu(dispatcher)
    dispatcher.handle("ioctl", (fd, u.IOMMU_IOAS_ALLOC, bytes(u.ffi.buffer(_alloc_cmd()))))
    status, (err, strerror, data) = dispatcher.handle(
        "ioctl", (fd, u.IOMMU_IOAS_IOVA_RANGES, bytes(u.ffi.buffer(_ranges_cmd(1)))))
    assert (status, err, strerror) == (ERRNO, errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
    out = _ranges_cmd(0)
    u.ffi.buffer(out)[:] = data
    assert out.num_iovas == 2 and out.out_iova_alignment == 4096


def test_dispatch_int_and_null_args(dispatcher):
    fd = _open_iommu(dispatcher)
    assert dispatcher.handle("ioctl", (fd, u.VFIO_CHECK_EXTENSION, 3)) == (OK, (1, None))
    status, payload = dispatcher.handle("ioctl", (fd, 0x1234, None))
    assert status == ERRNO and payload[0] == errno.ENOTTY and payload[2] is None


def test_dispatch_batch_and_stop_on_error(dispatcher):
    fd = _open_iommu(dispatcher)
    cmd = bytes(u.ffi.buffer(_alloc_cmd()))
    calls = [("ioctl", (fd, u.IOMMU_IOAS_ALLOC, cmd)), ("close", (99,)),
             ("alloc", (4096, 0, True, False))]
    status, replies = dispatcher.handle("batch", (calls, False))
    assert status == OK and [r[0] for r in replies] == [OK, ERRNO, OK]
    status, replies = dispatcher.handle("batch", (calls, True))
    assert [r[0] for r in replies] == [OK, ERRNO]
    status, replies = dispatcher.handle("batch", ([("exit", ())], False))
    assert replies[0][0] == AGENT_BUG


def test_dispatch_unknown_op_and_bad_args_are_agent_bugs(dispatcher):
    assert dispatcher.handle("reboot", ())[0] == AGENT_BUG
    status, message = dispatcher.handle("close", ())
    assert status == AGENT_BUG and message.startswith("TypeError")


def test_dispatch_without_a_backend_still_answers():
    d = Dispatcher(qemu_fakes.broken_kernel)
    status, info = d.handle("hello", ())
    assert status == OK and "no /dev/iommu" in info["backend_error"]
    assert info["features"] == []
    status, message = d.handle("open", ("/dev/iommu", 2))
    assert status == BACKEND_ERROR and "no /dev/iommu" in message
    status, (code, output, timed_out) = d.handle("run", ([sys.executable, "-c", "print(42)"], 10))
    assert (status, code, output, timed_out) == (OK, 0, b"42\n", False)


def test_dispatch_run_times_out_and_kills_the_group(dispatcher):
    status, (code, _output, timed_out) = dispatcher.handle(
        "run", (["sh", "-c", "sleep 30 & sleep 30"], 0.3))
    assert status == OK and timed_out and code == -signal.SIGKILL


def test_dispatch_fork_child_relays_requests_to_the_child(dispatcher):
    fd = _open_iommu(dispatcher)
    dispatcher.handle("ioctl", (fd, u.IOMMU_IOAS_ALLOC, bytes(u.ffi.buffer(_alloc_cmd()))))
    status, handle = dispatcher.handle("fork_child", ())
    assert status == OK and isinstance(handle, int)
    status, pid = dispatcher.handle("child_call", (handle, "getpid", ()))
    assert status == OK and pid != os.getpid()
    # The child has the fd and the IOAS it inherited; an errno keeps the bytes written.
    status, (err, _strerror, data) = dispatcher.handle(
        "child_call", (handle, "ioctl", (fd, u.IOMMU_IOAS_IOVA_RANGES,
                                         bytes(u.ffi.buffer(_ranges_cmd(1))))))
    assert (status, err) == (ERRNO, errno.EMSGSIZE)
    out = _ranges_cmd(0)
    u.ffi.buffer(out)[:] = data
    assert out.num_iovas == 2
    status, replies = dispatcher.handle(
        "child_call", (handle, "batch", ([("close", (fd,)), ("close", (fd,))], False)))
    assert status == OK and [r[0] for r in replies] == [OK, ERRNO]
    assert dispatcher.handle("close", (fd,)) == (OK, None)  # the parent's fd is its own
    assert dispatcher.handle("child_call", (handle, "exit", ()))[0] == AGENT_BUG
    assert dispatcher.handle("child_exit", (handle,)) == (OK, 0)
    assert _gone(pid)
    status, message = dispatcher.handle("child_call", (handle, "getpid", ()))
    assert status == BACKEND_ERROR and f"no child process with handle {handle}" in message


def test_dispatch_close_ends_every_child():
    d = Dispatcher(FakeKernel)
    handles = [d.handle("fork_child", ())[1] for _ in range(2)]
    nested = d.handle("child_call", (handles[0], "fork_child", ()))[1]
    pids = [d.handle("child_call", (h, "getpid", ()))[1] for h in handles]
    status, grandchild = d.handle("child_call", (handles[0], "child_call",
                                                 (nested, "getpid", ())))
    assert status == OK and grandchild not in pids
    assert d.handle("exit", ()) == (OK, None)
    assert all(_gone(pid) for pid in [*pids, grandchild])


def test_dispatch_process_calls(dispatcher):
    assert dispatcher.handle("getpid", ()) == (OK, os.getpid())
    status, vm_rss = dispatcher.handle("proc_status", ("VmRSS", 0))
    assert status == OK and vm_rss > 0
    assert dispatcher.handle("proc_status", ("VmPin", 2**22 + 1))[0] == ERRNO  # no such pid
    assert dispatcher.handle("drop_capability", ("CAP_IPC_LOCK",)) == (OK, True)
    assert dispatcher.handle("drop_capability", ("CAP_IPC_LOCK",)) == (OK, False)
    assert dispatcher.handle("restore_capability", ("CAP_IPC_LOCK",)) == (OK, None)
    assert dispatcher.handle("drop_capability", ("CAP_IPC_LOCK",)) == (OK, True)


# -- the agent in a subprocess, over a socketpair ------------------------------------
@pytest.fixture
def agent_channel():
    host, guest = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.qemu.agent", "--fd", str(guest.fileno()),
         "--backend", "tests.framework.qemu_fakes:FakeKernel"],
        cwd=ROOT, pass_fds=[guest.fileno()])
    guest.close()
    channel = Channel(host)
    yield channel, proc
    channel.close()
    proc.wait(10)


def test_agent_round_trip_and_exit(agent_channel):
    channel, proc = agent_channel
    status, info, splat = channel.call("hello", (), 10)
    assert status == OK and splat is None and info["kernel_release"] == os.uname().release
    assert info["features"] == ["fail_nth", "memfd", "selftest"]
    status, fd, _ = channel.call("open", ("/dev/iommu", os.O_RDWR), 10)
    status, (_ret, data), _ = channel.call("ioctl", (fd, u.IOMMU_IOAS_ALLOC,
                                                     bytes(u.ffi.buffer(_alloc_cmd()))), 10)
    assert status == OK and data[8] == 1
    assert channel.call("exit", (), 10) == (OK, None, None)
    assert proc.wait(10) == 0


def test_agent_round_trip_time(agent_channel):
    """Per-call host -> agent -> ioctl -> host, with a fake ioctl (the floor of the channel)."""
    channel, _proc = agent_channel
    _, fd, _ = channel.call("open", ("/dev/iommu", os.O_RDWR), 10)
    cmd = bytes(u.ffi.buffer(_alloc_cmd()))
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        channel.call("ioctl", (fd, u.IOMMU_IOAS_ALLOC, cmd), 10)
    single = (time.perf_counter() - start) / n
    calls = [("ioctl", (fd, u.IOMMU_IOAS_ALLOC, cmd))] * 100
    start = time.perf_counter()
    for _ in range(n // 100):
        channel.call("batch", (calls, False), 10)
    batched = (time.perf_counter() - start) / n
    print(f"\nagent round trip (fake ioctl, socketpair): {single * 1e6:.1f} us/call, "
          f"batched {batched * 1e6:.1f} us/call")
    assert single < 0.005


def test_agent_exits_on_host_eof():
    host, guest = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "backends.qemu.agent", "--fd",
                             str(guest.fileno()), "--backend",
                             "tests.framework.qemu_fakes:FakeKernel"],
                            cwd=ROOT, pass_fds=[guest.fileno()])
    guest.close()
    host.close()
    assert proc.wait(10) == 0


# -- QemuBackend on a stand-in for QEMU -----------------------------------------------
class FakeLauncher:
    """Boots tests/framework/qemu_fakes.py instead of qemu-system-*."""

    arch = "x86_64"

    def __init__(self, log_dir: Path, *extra: str) -> None:
        self._log_dir = log_dir
        self.extra = list(extra)

    def prepare(self) -> None:
        pass

    def argv(self, socket_path: Path) -> list[str]:
        return [sys.executable, str(FAKE_QEMU), "--socket", str(socket_path), *self.extra]

    def log_dir(self) -> Path:
        return self._log_dir


@pytest.fixture
def fake_qemu(tmp_path):
    backend = QemuBackend("x86_64", launcher=FakeLauncher(tmp_path), call_timeout=5,
                          boot_timeout=20)
    yield backend
    backend.shutdown()
    assert process.live_pids() == []


def _fake_pid(backend):
    return backend._guest._child.pid


def _gone(pid, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie of ours counts as gone once reaped
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.02)
    return False


def test_backend_ioctls_update_cdata_in_place(fake_qemu):
    be = fake_qemu
    assert be.kernel_release == os.uname().release  # the fake guest is this host
    assert be.has("selftest", "fail_nth") and be.boots == 1
    fd = be.open("/dev/iommu")
    cmd = _alloc_cmd()
    assert be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd) == 0
    assert cmd.out_ioas_id == 1
    ranges = _ranges_cmd(cmd.out_ioas_id)
    with pytest.raises(OSError) as info:
        be.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, ranges)
    assert info.value.errno == errno.EMSGSIZE
    assert ranges.num_iovas == 2 and ranges.out_iova_alignment == 4096  # written back
    buf = be.alloc(2 * 16)
    ranges = _ranges_cmd(cmd.out_ioas_id, 2, buf)
    be.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, ranges)
    assert be.peek(buf, 16) == (0).to_bytes(8, "little") + (0xFEDFFFFF).to_bytes(8, "little")
    destroy = u.ffi.new("struct iommu_destroy *", {"size": 8, "id": 77})
    with pytest.raises(OSError) as info:
        be.ioctl(fd, u.IOMMU_DESTROY, destroy)
    assert info.value.errno == errno.ENOENT
    assert be.ioctl(fd, u.VFIO_CHECK_EXTENSION, u.VFIO_TYPE1v2_IOMMU) == 1


def test_backend_batch(fake_qemu):
    be = fake_qemu
    fd = be.open("/dev/iommu")
    cmds = [_alloc_cmd() for _ in range(3)]
    outcomes = be.batch([("ioctl", fd, u.IOMMU_IOAS_ALLOC, c) for c in cmds]
                        + [("close", 1234), ("alloc", 4096)])
    assert [c.out_ioas_id for c in cmds] == [1, 2, 3]
    assert [o.errno for o in outcomes] == [0, 0, 0, errno.EBADF, 0]
    assert outcomes[4].value % 4096 == 0


def test_backend_fail_nth_and_memory(fake_qemu):
    be = fake_qemu
    fd = be.open("/dev/iommu")
    be.fail_nth_write(2)
    be.ioctl(fd, u.IOMMU_IOAS_ALLOC, _alloc_cmd())
    with pytest.raises(OSError) as info:
        be.ioctl(fd, u.IOMMU_IOAS_ALLOC, _alloc_cmd())
    assert info.value.errno == errno.ENOMEM and be.fail_nth_read() == 0
    addr = be.alloc(8192, align=1 << 16)
    assert addr % (1 << 16) == 0
    be.poke(addr + 10, b"guest")
    assert be.peek(addr + 10, 5) == b"guest"
    with pytest.raises(OSError) as info:
        be.peek(addr + 8192, 1)
    assert info.value.errno == errno.EFAULT


def test_backend_run_returns_status_and_output(fake_qemu):
    code, output, timed_out = fake_qemu.run(["sh", "-c", "echo 'ok 1 iommufd.x'; exit 3"], 10)
    assert (code, output, timed_out) == (3, b"ok 1 iommufd.x\n", False)
    tap = fake_qemu.run_selftests(10, suites=["true", "/nonexistent/selftest"])
    assert tap == "# /nonexistent/selftest: not in the guest image\n"


def test_backend_fork_child_is_a_child_of_the_agent(fake_qemu):
    be = fake_qemu
    fd = be.open("/dev/iommu")
    alloc = _alloc_cmd()
    be.ioctl(fd, u.IOMMU_IOAS_ALLOC, alloc)
    agent = be.getpid()
    assert agent not in (0, os.getpid()) and be.proc_status("Pid") == agent
    child = be.fork_child()
    try:
        pid = child.getpid()
        assert pid not in (agent, os.getpid())
        assert child.proc_status("PPid") == agent and be.proc_status("PPid", pid) == agent
        assert child.has("selftest") and child.page_size == be.page_size
        # ioctls on the inherited fd, with the bytes written back (also on an errno).
        cmd = _alloc_cmd()
        assert child.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd) == 0 and cmd.out_ioas_id == 2
        ranges = _ranges_cmd(alloc.out_ioas_id)
        with pytest.raises(OSError) as info:
            child.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, ranges)
        assert info.value.errno == errno.EMSGSIZE and ranges.num_iovas == 2
        outcomes = child.batch([("ioctl", fd, u.IOMMU_IOAS_ALLOC, cmd), ("close", 99)])
        assert [o.errno for o in outcomes] == [0, errno.EBADF] and cmd.out_ioas_id == 3
        assert child.drop_capability("CAP_IPC_LOCK") is True
        assert be.drop_capability("CAP_IPC_LOCK") is True  # the agent's are its own
        # The child's IOAS are the child's: the agent's next one is 2.
        assert be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd) == 0 and cmd.out_ioas_id == 2
    finally:
        child.shutdown()
    assert child.exit_status == 0 and _gone(pid)
    child.shutdown()  # idempotent
    with pytest.raises(BackendError, match="has been shut down"):
        child.getpid()


def test_backend_children_nest_and_go_with_the_agent(fake_qemu):
    child = fake_qemu.fork_child()
    grandchild = child.fork_child()
    pids = [child.getpid(), grandchild.getpid()]
    assert grandchild.proc_status("PPid") == pids[0]
    assert "forked child" in grandchild.describe()
    fake_qemu.shutdown()  # never told to exit: the agent ends them on its way out
    assert all(_gone(pid) for pid in pids)


def test_children_go_away_with_a_crashed_guest(fake_qemu):
    be = fake_qemu
    child = be.fork_child()
    pid = child.getpid()
    sysrq = be.open(qemu_fakes.SYSRQ)
    with pytest.raises(GuestCrashed):
        be.write(sysrq, b"c")
    assert _gone(pid)
    with pytest.raises(BackendError, match="went away with the server that forked it"):
        child.getpid()
    child.shutdown()  # nothing to do, and no guest booted for it
    assert be.boots == 1 and child.exit_status is None
    assert be.getpid() != 0 and be.boots == 2


def test_stale_agent_protocol_is_a_guest_error(tmp_path):
    launcher = FakeLauncher(tmp_path, "--protocol-version", str(PROTOCOL_VERSION - 1))
    with pytest.raises(GuestError, match=f"speaks protocol {PROTOCOL_VERSION - 1}, the host "
                                         f"{PROTOCOL_VERSION}: rebuild the guest image"):
        QemuBackend("x86_64", launcher=launcher, boot_timeout=20)
    assert process.live_pids() == []


def test_panic_raises_guest_crashed_then_a_fresh_guest_answers(fake_qemu):
    be = fake_qemu
    first_pid = _fake_pid(be)
    fd = be.open(qemu_fakes.SYSRQ)
    with pytest.raises(GuestCrashed) as info:
        be.write(fd, b"c")
    crash = info.value
    assert crash.kind == "panic"
    assert crash.summary == "Kernel panic - not syncing: sysrq triggered crash"
    assert "sysrq_handle_crash" in crash.console and "sysrq: Trigger a crash" in crash.console
    assert "Kernel panic" in str(crash) and crash.during == "write"
    assert crash.log is not None and "end Kernel panic" in crash.log.read_text()
    assert isinstance(crash, BackendError)
    assert _gone(first_pid)
    # The next call boots a fresh guest, transparently.
    fd = be.open("/dev/iommu")
    cmd = _alloc_cmd()
    be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd)
    assert cmd.out_ioas_id == 1 and be.boots == 2 and be.crashes == [crash]
    assert process.live_pids() == [_fake_pid(be)]


def test_warning_splat_fails_the_running_call(fake_qemu):
    be = fake_qemu
    fd = be.open("/dev/iommu")
    with pytest.raises(GuestCrashed) as info:
        be.ioctl(fd, FAKE_WARN, None)
    assert info.value.kind == "warning"
    assert info.value.summary.startswith("WARNING: CPU: 0 PID: 85 at drivers/iommu/iommufd/")
    assert "iommufd_ioas_unmap" in info.value.console
    assert "cut here" in info.value.console
    be.open("/dev/iommu")
    assert be.boots == 2


def test_warning_logged_before_the_console_shows_it(fake_qemu):
    """The reply outruns the console: the agent's kernel-log check still pins
    the splat on the call that caused it, with the console excerpt."""
    be = fake_qemu
    fd = be.open("/dev/iommu")
    with pytest.raises(GuestCrashed) as info:
        be.ioctl(fd, qemu_fakes.FAKE_WARN_LATE, None)
    assert info.value.kind == "warning" and info.value.during == "ioctl"
    assert "iommufd_ioas_unmap" in info.value.console


def test_console_splat_between_calls_fails_the_next_call(tmp_path):
    launcher = FakeLauncher(tmp_path, "--no-kmsg")
    be = QemuBackend("x86_64", launcher=launcher, boot_timeout=20)
    try:
        fd = be.open("/dev/iommu")
        try:
            be.ioctl(fd, qemu_fakes.FAKE_WARN_LATE, None)  # no kernel-log check: not seen yet
        except GuestCrashed:
            pytest.fail("the console was faster than 0.3 s of fake delay")
        time.sleep(1.0)
        with pytest.raises(GuestCrashed) as info:
            be.open("/dev/iommu")
        assert info.value.kind == "warning"
    finally:
        be.shutdown()


def test_watchdog_turns_a_hang_into_guest_crashed(tmp_path):
    be = QemuBackend("x86_64", launcher=FakeLauncher(tmp_path), call_timeout=0.5,
                     boot_timeout=20)
    try:
        pid = _fake_pid(be)
        fd = be.open("/dev/iommu")
        start = time.monotonic()
        with pytest.raises(GuestCrashed) as info:
            be.ioctl(fd, FAKE_HANG, None)
        assert time.monotonic() - start < 5
        assert info.value.kind == "hang" and "no reply to ioctl within" in info.value.summary
        assert "Run /init as init process" in info.value.console  # the console's tail
        assert _gone(pid)
        assert be.ioctl(be.open("/dev/iommu"), u.IOMMU_IOAS_ALLOC, _alloc_cmd()) == 0
    finally:
        be.shutdown()
    assert process.live_pids() == []


def test_boot_panic_is_a_guest_error(tmp_path):
    with pytest.raises(BackendError, match=r"Kernel panic|did not come up"):
        QemuBackend("x86_64", launcher=FakeLauncher(tmp_path, "--boot-panic"),
                    boot_timeout=10)
    assert process.live_pids() == []


def test_guest_without_iommufd_is_one_line_backend_error(tmp_path):
    launcher = FakeLauncher(tmp_path, "--backend", "tests.framework.qemu_fakes:broken_kernel")
    with pytest.raises(BackendError) as info:
        QemuBackend("x86_64", launcher=launcher, boot_timeout=20)
    assert "\n" not in str(info.value) and "no /dev/iommu" in str(info.value)
    assert process.live_pids() == []


def test_shutdown_powers_off_and_leaves_no_process(tmp_path):
    be = QemuBackend("x86_64", launcher=FakeLauncher(tmp_path), boot_timeout=20)
    pid = _fake_pid(be)
    log = be.console_log
    be.shutdown()
    be.shutdown()
    assert _gone(pid) and process.live_pids() == []
    assert "reboot: Power down" in log.read_text()  # the agent exited, the guest powered off


_OWNER = (
    "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
    "from pathlib import Path\n"
    "from test_qemu_protocol import FakeLauncher\n"
    "from backends.qemu import QemuBackend\n"
    "be = QemuBackend('x86_64', launcher=FakeLauncher(Path(sys.argv[3])))\n"
    "print(be._guest._child.pid, be._socket_dir, flush=True)\n"
    "import time; time.sleep(60)\n")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_host_takes_qemu_with_it(tmp_path, signum):
    """SIGKILL: PR_SET_PDEATHSIG; SIGTERM, SIGINT: the handlers. QEMU dies with its owner,
    and but for SIGKILL its socket directory goes even though the owner never shut down."""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(ROOT), str(FAKE_QEMU.parent),
                              str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        pid, sockets = owner.stdout.readline().split()
        qemu_pid = int(pid)
        os.kill(qemu_pid, 0)  # running
        owner.send_signal(signum)
        assert _gone(qemu_pid)
        assert owner.wait(10) != 0
        # The agent's socket directory goes too, unless nothing could run (SIGKILL).
        assert Path(sockets).exists() == (signum == signal.SIGKILL)
    finally:
        owner.kill()
        owner.wait()


def test_channel_wake_interrupts_a_blocked_call():
    host, guest = socket.socketpair()
    channel = Channel(host)
    import threading
    threading.Timer(0.2, channel.wake).start()
    with pytest.raises(ChannelClosed):
        channel.call("hello", (), 10)
    guest.close()
    channel.close()


def test_receiver_spins_then_blocks():
    from backends.qemu.port import Receiver

    host, guest = socket.socketpair()
    receiver = Receiver(guest.fileno(), spin=0.05)
    host.send(b"early")
    assert receiver.read() == b"early"  # found while spinning
    import threading
    threading.Timer(0.2, host.send, (b"late",)).start()
    assert receiver.read() == b"late"  # found after blocking
    host.close()
    assert receiver.read() == b""
    guest.close()


def test_spin_from_env_or_kernel_cmdline(tmp_path, monkeypatch):
    from backends.qemu import agent

    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 iommufd.agent_spin_us=250 iommufd.mode=agent\n")
    monkeypatch.delenv(agent.SPIN_ENV, raising=False)
    assert agent.spin_us(str(cmdline)) == 250
    assert agent.spin_us(str(tmp_path / "none")) == agent.DEFAULT_SPIN_US
    monkeypatch.setenv(agent.SPIN_ENV, "10")
    assert agent.spin_us(str(cmdline)) == 10


def test_local_batch_on_a_backend_without_one():
    from backends.calls import batch

    be = FakeKernel()
    fd = be.open("/dev/iommu")
    cmd = _alloc_cmd()
    outcomes = batch(be, [("ioctl", fd, u.IOMMU_IOAS_ALLOC, cmd), ("close", 99), ("close", fd)],
                     stop_on_error=True)
    assert cmd.out_ioas_id == 1 and [o.errno for o in outcomes] == [0, errno.EBADF]
    with pytest.raises(OSError):
        outcomes[1].unwrap()
    with pytest.raises(ValueError, match="not a contract call"):
        batch(be, [("reboot",)])
