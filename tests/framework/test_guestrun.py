"""Cases run inside the guest (harness.guestrun), against a stand-in QEMU.

The stand-in (tests/framework/qemu_fakes.py) serves the real agent; the agent forks
the real worker, whose pytest session uses the mock backend "in the guest". So the
whole path is exercised: shipping the files, collection in the guest, one command
per case, the reports replayed on the host, splats, panics, hangs and signals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.framework import qemu_fakes

FAKE_QEMU = Path(qemu_fakes.__file__).resolve()
#: the run's backend: the stand-in guest
QEMU = ("--iommufd-backend", "qemu:x86_64")
ROOT = FAKE_QEMU.parents[2]

CONFTEST = f"""
import os, sys
from pathlib import Path
import backends.qemu.backend as qemu_backend

class FakeLauncher:
    arch = "x86_64"
    def __init__(self, arch, log_dir=None):
        self._log = Path(os.environ["FAKE_LOG_DIR"])
    def prepare(self):
        pass
    def argv(self, socket_path):
        return [sys.executable, {str(FAKE_QEMU)!r}, "--socket", str(socket_path)]
    def log_dir(self):
        return self._log

qemu_backend.ImageLauncher = FakeLauncher
"""

SUITE = """
import os, time
import pytest
from harness import kselftest
from harness.helpers.ioas import Ioas

pytestmark = kselftest.fixture("grp", {"first": 1, "second": 2})

def test_where(iommufd, variant):
    # Runs in the worker: a child of the fake QEMU, on the guest's mock backend.
    assert iommufd.backend.spec == "mock"
    Ioas.alloc(iommufd)

def test_fails_on_second(iommufd, variant_name):
    assert variant_name == "first"

@pytest.mark.xfail(reason="expected")
def test_xfails(iommufd, variant):
    assert False
"""

HOST_ONLY = """
def test_on_the_host():
    import os
    assert os.environ.get("FAKE_KMSG") is None  # not inside the fake guest
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv("FAKE_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("IOMMUFD_GUEST_BACKEND", "mock")
    monkeypatch.setenv("IOMMUFD_QEMU_CASE_TIMEOUT", "5")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return pytester


def _ktap_results(path: Path) -> dict[str, str]:
    results = {}
    for line in path.read_text().splitlines():
        match = re.match(r"(not ok|ok) \d+ (\S+)", line)
        if match:
            results[match.group(2)] = match.group(1)
    return results


def test_guest_run_reports_as_an_in_process_run(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_grp=SUITE, test_host=HOST_ONLY)
    ktap = suite.path / "guest.ktap"
    result = suite.runpytest_subprocess(*QEMU, "--iommufd-ktap", str(ktap), "-rA")
    result.assert_outcomes(passed=4, failed=1, xfailed=2)
    result.stdout.fnmatch_lines(
        ["*FAILED test_grp.py::test_fails_on_second[[]grp.second.fails_on_second[]]*"])
    assert _ktap_results(ktap) == {
        "grp.first.where": "ok", "grp.second.where": "ok",
        "grp.first.fails_on_second": "ok", "grp.second.fails_on_second": "not ok",
        "grp.first.xfails": "ok", "grp.second.xfails": "ok",
        "test_host.py::test_on_the_host": "ok"}
    # The same suite in-process on the mock: the same outcomes.
    local = suite.runpytest_subprocess("--iommufd-backend", "mock")
    local.assert_outcomes(passed=4, failed=1, xfailed=2)


def test_k_and_x_select_and_stop_in_the_guest(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_grp=SUITE)
    result = suite.runpytest_subprocess(*QEMU, "-k", "grp.second", "-x")
    result.assert_outcomes(passed=1, failed=1)


CRASHING = """
import os, time
from harness import kselftest
from tests.framework import qemu_fakes

pytestmark = kselftest.fixture("crash", {"v": 0})

def test_a_before(iommufd, variant):
    pass

def test_b_warns(iommufd, variant):
    qemu_fakes.guest_warn()

def test_c_after_warn(iommufd, variant):
    pass

def test_d_panics(iommufd, variant):
    qemu_fakes.guest_panic()

def test_e_after_panic(iommufd, variant):
    pass

def test_f_hangs(iommufd, variant):
    time.sleep(3600)

def test_g_after_hang(iommufd, variant):
    pass
"""


def test_a_splat_panic_or_hang_fails_that_case_and_the_run_goes_on(
        suite: pytest.Pytester) -> None:
    suite.makepyfile(test_crash=CRASHING)
    ktap = suite.path / "crash.ktap"
    result = suite.runpytest_subprocess(*QEMU, "--iommufd-ktap", str(ktap))
    assert _ktap_results(ktap) == {
        "crash.v.a_before": "ok", "crash.v.b_warns": "not ok", "crash.v.c_after_warn": "ok",
        "crash.v.d_panics": "not ok", "crash.v.e_after_panic": "ok",
        "crash.v.f_hangs": "not ok", "crash.v.g_after_hang": "ok"}
    out = result.stdout.str()
    assert "guest warning during test_crash.py::test_b_warns" in out
    assert "WARNING: CPU: 0 PID: 85 at drivers/iommu/iommufd/io_pagetable.c" in out
    assert "Kernel panic - not syncing: sysrq triggered crash" in out
    assert "guest hang" in out and "no reply to job within 5 s" in out
    assert not _fake_qemus(suite.path)


def _fake_qemus(tag: Path) -> list[str]:
    """Stand-in QEMUs still running (their argv names FAKE_QEMU)."""
    out = subprocess.run(["pgrep", "-af", str(FAKE_QEMU)], capture_output=True, text=True)
    return out.stdout.splitlines()


SLOW = """
import time
from harness import kselftest

pytestmark = kselftest.fixture("slow", {"v": 0})

def test_a(iommufd, variant): time.sleep(0.2)
def test_b(iommufd, variant): time.sleep(0.2)
def test_c(iommufd, variant): time.sleep(0.2)
def test_d(iommufd, variant): time.sleep(60)
def test_e(iommufd, variant): time.sleep(0.2)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_the_run_and_keeps_the_finished_cases(
        suite: pytest.Pytester, signum: int) -> None:
    """Ctrl-C (SIGINT to the run's process group) or SIGTERM mid-run: pytest's own
    interrupted summary, the finished cases in the KTAP, no false failure, no QEMU
    left. (How fast: benchmarks/bench_interrupt.py; a timed test would measure
    the machine's load.)"""
    suite.makepyfile(test_slow=SLOW)
    ktap = suite.path / "slow.ktap"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *QEMU,
         "--iommufd-ktap", str(ktap), "-v"],
        cwd=suite.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert run.stdout is not None
    lines = []
    for line in run.stdout:  # wait until the sleeping case has started
        lines.append(line)
        if "test_slow.py::test_c" in line and "PASSED" in line:
            break
    time.sleep(0.5)
    os.killpg(run.pid, signum)
    rest, _ = run.communicate(timeout=60)  # the interrupted run ends, whatever the load
    out = "".join(lines) + rest
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out and "FAILED" not in out and "ERROR" not in out, out
    assert _ktap_results(ktap) == {"slow.v.a": "ok", "slow.v.b": "ok", "slow.v.c": "ok"}
    assert not _fake_qemus(suite.path)


def test_sigkill_of_the_run_takes_the_guest_with_it(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_slow=SLOW)
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *QEMU,
         "-v"], cwd=suite.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert run.stdout is not None
    for line in run.stdout:
        if "test_slow.py::test_b" in line and "PASSED" in line:
            break
    assert _fake_qemus(suite.path)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while _fake_qemus(suite.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _fake_qemus(suite.path)


TIMED = """
import time
from harness import kselftest

pytestmark = kselftest.fixture("timed", {"v": 0})

def test_a(iommufd, variant): pass
def test_b_slow(iommufd, variant): time.sleep(60)
def test_c(iommufd, variant): pass
"""


def test_pytest_timeout_fails_the_case_and_the_run_goes_on(suite: pytest.Pytester) -> None:
    """pytest-timeout (signal method) fails the stuck case; its guest goes and the next
    case runs on a fresh one."""
    pytest.importorskip("pytest_timeout")
    suite.makepyfile(test_timed=TIMED)
    ktap = suite.path / "timed.ktap"
    result = suite.runpytest_subprocess(*QEMU, "--timeout", "3",
                                        "--iommufd-ktap", str(ktap))
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert _ktap_results(ktap) == {"timed.v.a": "ok", "timed.v.b_slow": "not ok",
                                   "timed.v.c": "ok"}
    assert not _fake_qemus(suite.path)


ON_HOST = """
import os
from harness import kselftest, marks
from harness.helpers.ioas import Ioas

pytestmark = kselftest.fixture("mixed")

def test_a_in_guest(iommufd):
    assert iommufd.backend.spec == "mock"  # the guest session's backend
    Ioas.alloc(iommufd)

@marks.on_host
def test_b_on_host(backend):
    # The host's qemu backend, each call crossing to the agent: the guest session ended.
    assert backend.spec == "qemu:x86_64"
    backend.close(backend.open("/dev/iommu"))

def test_c_in_guest_again(iommufd):
    assert iommufd.backend.spec == "mock"
"""


def test_a_case_marked_on_host_runs_there_between_guest_cases(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_mixed=ON_HOST)
    result = suite.runpytest_subprocess(*QEMU, "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_a_session_that_does_not_start_hands_the_channel_back(suite: pytest.Pytester) -> None:
    # A conftest that imports what the guest lacks: the guest's session stops at once;
    # the host's lineup still runs its commands in that guest afterwards.
    suite.makepyfile(test_grp=SUITE)
    (suite.path / "conftest.py").write_text(
        (suite.path / "conftest.py").read_text() + "\nif os.environ.get('FAKE_KMSG'):\n"
        "    import no_such_module_in_the_guest\n")
    result = suite.runpytest_subprocess(*QEMU, "--iommufd-kselftest-lineup")
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines(["*the guest's pytest session did not start*",
                                 "*no_such_module_in_the_guest*"])
    assert "owns the channel" not in result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str()
