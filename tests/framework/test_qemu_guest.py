"""End to end on a real guest: qemu:x86_64 booted from the vm_images image.

Slow (a TCG boot is ~5 s, a first image build minutes): ``-m slow`` selects
these, ``-m "not slow"`` leaves them out.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest

import uapi_headers as u
from backends import open_backend
from backends.qemu import GuestCrashed, process
from harness import kselftest_tap
from vm_images.cache import CACHE_ENV, cache_root

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]


def _qemu_children() -> list[int]:
    """QEMU processes that are children of this test process (pgrep -P)."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "qemu-system"],
                         capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in out.split()]


def _ioas_alloc(be, fd):
    cmd = u.ffi.new("struct iommu_ioas_alloc *", {"size": u.ffi.sizeof("struct iommu_ioas_alloc")})
    be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd)
    return cmd.out_ioas_id


def _crash(be) -> None:
    """Panic the guest on purpose: sysrq-c where the kernel has CONFIG_MAGIC_SYSRQ,
    else the OOM killer with vm.panic_on_oom=1 (the same "Kernel panic" path)."""
    try:
        fd = be.open("/proc/sysrq-trigger", os.O_WRONLY)
    except FileNotFoundError:
        fd = be.open("/proc/sys/vm/panic_on_oom", os.O_WRONLY)
        be.write(fd, b"1\n")
        be.close(fd)
        be.run(["python3", "-c", "x = []\nwhile True: x.append(b'\\1' * (1 << 26))"], 300)
    else:
        be.write(fd, b"c")


@pytest.fixture(scope="module")
def guest():
    be = open_backend("qemu:x86_64")
    yield be
    be.shutdown()


def test_real_guest_ioctls_crash_and_recovery(guest):
    be = guest
    first = list(process.live_pids())
    assert be.kernel_release.startswith("7.")
    assert be.has("selftest", "fail_nth", "intel_vtd", "vfio_compat")
    fd = be.open("/dev/iommu")
    ioas_id = _ioas_alloc(be, fd)
    assert ioas_id == 1

    # The kernel writes num_iovas before failing with EMSGSIZE: the bytes come back.
    ranges = u.ffi.new("struct iommu_ioas_iova_ranges *", {
        "size": u.ffi.sizeof("struct iommu_ioas_iova_ranges"), "ioas_id": ioas_id})
    with pytest.raises(OSError) as info:
        be.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, ranges)
    assert info.value.errno == errno.EMSGSIZE
    assert ranges.num_iovas >= 1
    assert ranges.out_iova_alignment == 1  # no domain attached: any alignment

    # fail_nth is armed in the agent right before the ioctl: fault 1 fails IOAS_ALLOC.
    be.fail_nth_write(1)
    with pytest.raises(OSError) as info:
        _ioas_alloc(be, fd)
    assert info.value.errno == errno.ENOMEM and be.fail_nth_read() == 0
    be.fail_nth_write(10_000)
    _ioas_alloc(be, fd)
    left = be.fail_nth_read()
    be.fail_nth_write(0)
    assert 0 < left < 10_000  # the ioctl passed some fault points, and only it

    destroy = u.ffi.new("struct iommu_destroy *", {"size": 8, "id": 9999})
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        with pytest.raises(OSError):
            be.ioctl(fd, u.IOMMU_DESTROY, destroy)
    single = (time.perf_counter() - start) / n
    calls = [("ioctl", fd, u.IOMMU_DESTROY, destroy)] * 100
    start = time.perf_counter()
    for _ in range(3):
        be.batch(calls)
    batched = (time.perf_counter() - start) / 300
    print(f"\nguest round trip: {single * 1e6:.0f} us/call, batched {batched * 1e6:.0f} us/call")

    with pytest.raises(GuestCrashed) as crash:
        _crash(be)
    assert crash.value.kind == "panic"
    assert "Kernel panic - not syncing" in crash.value.summary
    assert "Kernel panic - not syncing" in crash.value.console
    assert crash.value.log is not None and crash.value.log.exists()
    for pid in first:
        assert pid not in _qemu_children()

    # The next call boots a fresh guest, transparently: a new IOAS numbering.
    assert _ioas_alloc(be, be.open("/dev/iommu")) == 1
    assert be.boots == 2 and be.crashes == [crash.value]

    # A call that never returns (open(2) of a FIFO nobody writes) trips the watchdog.
    assert be.run(["mkfifo", "/tmp/never"], 30)[0] == 0
    be.call_timeout = 3
    with pytest.raises(GuestCrashed) as hang:
        be.open("/tmp/never", os.O_RDONLY)
    assert hang.value.kind == "hang" and "no reply to open within 3 s" in hang.value.summary
    be.call_timeout = 60
    assert _ioas_alloc(be, be.open("/dev/iommu")) == 1 and be.boots == 3

    be.shutdown()
    assert _qemu_children() == [] and process.live_pids() == []


def test_real_guest_c_selftests_parse():
    be = open_backend("qemu:x86_64")
    ours = process.live_pids()
    try:
        text = be.run_selftests(900)
    finally:
        be.shutdown()
    run = kselftest_tap.parse(text)
    assert run.plans and sum(run.plans) == len(run.cases)
    totals = {key: sum(t[key] for t in run.totals) for key in ("pass", "fail", "skip", "xfail")}
    assert totals == run.counts()
    assert not set(ours) & set(_qemu_children())


CRASHING_SUITE = '''
import os

def test_1_panics_the_guest(backend):
    fd = backend.open("/proc/sys/vm/panic_on_oom", os.O_WRONLY)
    backend.write(fd, b"1\\n")
    backend.close(fd)
    if hasattr(backend, "run"):  # --iommufd-qemu-run=agent: the case runs on the host
        backend.run(["python3", "-c", "x = []\\nwhile True: x.append(b'1' * (1 << 26))"], 300)
    else:  # the case runs in the guest, and so does its memory
        x = []
        while True:
            x.append(b"1" * (1 << 26))

def test_2_runs_on_a_fresh_guest(iommufd):
    assert iommufd.ioas_alloc() == 1
'''


def _all_qemu() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True,
                         check=False).stdout
    return {int(pid) for pid in out.split()}


# Read before pytester points HOME at a temporary directory: the inner run must find
# the images already built, not build them again under an empty ~/.cache.
REAL_CACHE = cache_root()


@pytest.mark.parametrize("mode", ["guest", "agent"])
def test_a_panicking_guest_fails_that_test_with_the_console_and_the_run_goes_on(
        pytester, monkeypatch, mode):
    """Cases run in the guest (the default) or call by call from the host (agent)."""
    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))
    before = _all_qemu()
    pytester.makepyfile(test_crash=CRASHING_SUITE)
    result = pytester.runpytest_subprocess("--iommufd-backend", "qemu:x86_64",
                                           "--iommufd-qemu-run", mode, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*guest panic during*", "*Kernel panic - not syncing*"])
    assert _all_qemu() <= before  # no guest outlives the run


def test_ctrl_c_ends_a_real_guest_run_with_its_finished_cases(tmp_path, monkeypatch):
    """SIGINT to the run's process group (a terminal's Ctrl-C) mid-suite: pytest's
    interrupted summary, the KTAP file holds the finished cases and no failure, and
    no QEMU is left (how fast: benchmarks/bench_interrupt.py)."""
    import re
    import signal
    import sys

    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))
    before = _all_qemu()
    ktap = tmp_path / "run.ktap"
    run = subprocess.Popen(
        # -vv: the command's own -q and one -v cancel out; PASSED lines need one more.
        [sys.executable, "-m", "harness.cli", "run", "--backend", "qemu:x86_64",
         "--ktap", str(ktap), "-vv"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if sum("PASSED" in s for s in seen) >= 10:
            break
    os.killpg(run.pid, signal.SIGINT)
    rest, _ = run.communicate(timeout=60)
    out = "".join(seen) + rest
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out and "FAILED" not in out and " ERROR" not in out, out
    results = re.findall(r"^(not ok|ok) \d+ (\S+)", ktap.read_text(), re.MULTILINE)
    assert len(results) >= 10 and all(r == "ok" for r, _ in results), ktap.read_text()
    assert _all_qemu() <= before


def test_a_saved_guest_restores_and_a_bad_state_boots_afresh(tmp_path, capsys):
    from backends.qemu.backend import QemuBackend
    from backends.qemu.launcher import ImageLauncher
    from backends.qemu.snapshot import SnapshotStore, state_key

    class TmpSnapshots(ImageLauncher):
        def snapshot_store(self, argv, sockets):
            return SnapshotStore(tmp_path / "snapshots", state_key(argv, sockets))

    def boot():
        return QemuBackend("x86_64", launcher=TmpSnapshots("x86_64", log_dir=tmp_path))

    cold = boot()
    try:
        assert "restored" not in cold._info
        assert _ioas_alloc(cold, cold.open("/dev/iommu")) == 1  # it runs on after the save
    finally:
        cold.shutdown()
    states = list((tmp_path / "snapshots").glob("*/state"))
    assert len(states) == 1 and states[0].stat().st_size > 1 << 20
    assert "guest state saved for warm starts" in capsys.readouterr().err

    warm = boot()
    try:
        assert warm._info["restored"] == str(states[0])  # (its speed: bench_qemu)
        assert _ioas_alloc(warm, warm.open("/dev/iommu")) == 1
        assert {"selftest", "vfio_cdev"} <= warm.features
    finally:
        warm.shutdown()

    states[0].write_bytes(b"\0" * 4096)  # a state QEMU cannot load
    fresh = boot()
    try:
        assert "restored" not in fresh._info
        assert _ioas_alloc(fresh, fresh.open("/dev/iommu")) == 1
    finally:
        fresh.shutdown()
    err = capsys.readouterr().err
    assert "did not restore" in err and "guest state saved for warm starts" in err
    assert states[0].stat().st_size > 1 << 20  # saved again by the fresh boot
    assert _qemu_children() == []
