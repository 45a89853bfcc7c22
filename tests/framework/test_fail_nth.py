"""The fail_nth sweep engine: its loop and rules, its pytest side, the host refusal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from errno import EFAULT, ENOMEM
from pathlib import Path

import pytest

from backends.contract import BackendError
from backends.kernel import faultinject
from backends.mock import MockBackend
from harness import fail_nth, fail_nth_lineup

# A scenario in the style of the ported basic_fail_nth ones: setup, then enable, then a
# chain that pins pages into a mock domain in batches of 4 (the 32-byte memory limit).
SCENARIO = """
import pytest
from harness import kselftest, marks
from harness.helpers import Ioas, Iommufd, mock_domain, set_temp_memory_limit

pytestmark = [kselftest.fixture("sweep"), marks.fail_nth]

LENGTH = 64 * 1024

@pytest.fixture
def self(backend, fail_nth):
    buf = backend.alloc(LENGTH)
    fail_nth.watch(buf, LENGTH)
    fd = Iommufd.open(backend)
    yield fd, buf
    fd.close()

def test_pin(self, fail_nth):
    fd, buf = self
    ioas = Ioas.alloc(fd)
    set_temp_memory_limit(fd, 32)
    mock_domain(fd, ioas.id)
    fail_nth.enable()
    iova = ioas.map(buf, LENGTH)
    ioas.unmap(iova, LENGTH)
"""

# The deliberately wrong rule: pfn_reader_user_pin's unwind forgets the pages it pinned
# before the injected failure, so they stay pinned forever.
LEAKY_UNWIND = """
import pytest
from backends.mock.pages import IoptPages

@pytest.fixture(autouse=True)
def _leaky_unwind(monkeypatch):
    pin_runs, unpin = IoptPages._pin_runs, IoptPages.unpin
    pinning = []

    def leaky_pin_runs(self, runs, unum):
        pinning.append(self)
        try:
            return pin_runs(self, runs, unum)
        finally:
            pinning.pop()

    def leaky_unpin(self, indexes):
        if self not in pinning:  # only the unwind of a failed pin is broken
            unpin(self, indexes)

    monkeypatch.setattr(IoptPages, "_pin_runs", leaky_pin_runs)
    monkeypatch.setattr(IoptPages, "unpin", leaky_unpin)
"""


def _sweep_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("sweep.pin: fail_nth mock")]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_clean_sweep_passes_and_reports(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_sweep=SCENARIO)
    ktap = tmp_path / "run.ktap"
    result = pytester.runpytest("-p", "no:hypothesispytest", "--iommufd-ktap", str(ktap))
    result.assert_outcomes(passed=1)
    line = _sweep_line(result)
    points = int(line.split(": ")[2].split()[0])
    assert points > 5, line  # object alloc, lookups, batches, pins, accounting ...
    assert "EFAULT" in line and "ENOMEM" in line and "failures: 0" in line
    report = ktap.read_text().splitlines()
    case = report.index("ok 1 sweep.pin")
    assert report[case - 1].startswith("# fail_nth mock: ") and "points swept" in report[case - 1]


def test_sweep_that_leaks_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweep=SCENARIO)
    pytester.makeconftest(LEAKY_UNWIND)
    result = pytester.runpytest("-p", "no:hypothesispytest")
    # The sweep fails the case; the model's WARN on the leaked pins fails its teardown.
    result.assert_outcomes(failed=1, errors=1)
    line = _sweep_line(result)
    assert "failures: 1" in line, line
    result.stdout.fnmatch_lines(["*fail_nth sweep failed:*", "*N=*: *still pinned*"])
    result.stdout.fnmatch_lines(["*kernel splat during the case: WARNING: iopt_release_pages*"])


def test_clean_run_must_pass(pytester: pytest.Pytester) -> None:
    last = "ioas.unmap(iova, LENGTH)"
    pytester.makepyfile(test_sweep=SCENARIO.replace(
        last, f"{last}\n    assert False, 'broken scenario'"))
    result = pytester.runpytest("-p", "no:hypothesispytest")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*broken scenario*"])


def test_scenario_that_never_arms_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweep=SCENARIO.replace("    fail_nth.enable()\n", ""))
    result = pytester.runpytest("-p", "no:hypothesispytest")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*N=1: the scenario never armed its fault point*"])


def test_any_ported_case_sweeps_with_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_any="""
from harness import kselftest
from harness.helpers import Ioas

pytestmark = kselftest.fixture("plain")

def test_map(iommufd, kglobals):
    ioas = Ioas.alloc(iommufd)
    ioas.map(kglobals.buffer, kglobals.page_size)
""")
    plain = pytester.runpytest("-p", "no:hypothesispytest")
    plain.assert_outcomes(passed=1)
    assert "fail_nth sweeps" not in plain.stdout.str()
    swept = pytester.runpytest("-p", "no:hypothesispytest", "--iommufd-fail-nth")
    swept.assert_outcomes(passed=1)
    swept.stdout.fnmatch_lines(["plain.map: fail_nth mock: * points swept*failures: 0"])


# -- the loop and its rules, without pytest ---------------------------------------

def _runs(points: int, outcome: str = "ENOMEM", leak_at: int = -1
          ) -> fail_nth.SweepReport:
    def run(nth: int) -> fail_nth.RunResult:
        fired = 0 < nth <= points
        failure = "pages still pinned" if nth == leak_at else None
        return fail_nth.judge(nth, fired, outcome if fired else fail_nth.OK, failure)
    return fail_nth.sweep(run, report=fail_nth.SweepReport("s", "b"))


def test_sweep_walks_every_point_then_one_more() -> None:
    report = _runs(7)
    assert [r.nth for r in report.runs] == list(range(9))
    assert report.points == 7 and report.complete and not report.failures
    assert report.outcomes == {"ENOMEM": 7}


def test_sweep_stops_at_first_failure_and_at_the_limit() -> None:
    report = _runs(7, leak_at=3)
    assert [r.nth for r in report.runs] == [0, 1, 2, 3]
    assert report.failures == ["N=3: pages still pinned"] and not report.complete

    def endless(nth: int) -> fail_nth.RunResult:
        return fail_nth.judge(nth, nth > 0, "ENOMEM" if nth else fail_nth.OK, None)
    limited = fail_nth.sweep(endless, limit=5, report=fail_nth.SweepReport("s", "b"))
    assert limited.points == 5 and "raise --iommufd-fail-nth-limit" in limited.failures[0]


def test_outcome_classes() -> None:
    assert fail_nth.outcome_of(None) == ("ok", None)
    assert fail_nth.outcome_of(OSError(ENOMEM, "x")) == ("ENOMEM", None)
    assert fail_nth.outcome_of(AssertionError("saw EFAULT")) == ("assertion", None)
    assert fail_nth.outcome_of(BackendError("guest warning during ioctl"))[1]
    assert fail_nth.outcome_of(KeyError(3))[1] == "KeyError: 3"  # the model's "Oops"
    assert fail_nth.outcome_of(fail_nth.Invariant("test_reg 0"))[1]
    # Without an injected fault, only success passes.
    assert fail_nth.judge(0, False, "EFAULT", None).failure == "the clean run failed with EFAULT"
    assert fail_nth.judge(4, False, "ENOMEM", None).failure
    assert fail_nth.judge(4, True, "EFAULT", None).failure is None
    assert EFAULT  # the errno names above are the kernel's


# -- the real-host refusal -----------------------------------------------------------

def _no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set (and so restored afterwards) rather than deleted: --iommufd-fail-nth-on-host sets it.
    monkeypatch.setenv(faultinject.HOST_OPT_IN_ENV, "0")
    monkeypatch.setenv(faultinject.GUEST_ENV, "0")


def _fail_nth_file(tmp_path: Path) -> Path:
    proc_file = tmp_path / "fail-nth"
    proc_file.write_text("0")
    return proc_file


def test_kernel_backend_refuses_to_arm_on_a_real_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_opt_in(monkeypatch)
    nth = faultinject.FailNth(str(_fail_nth_file(tmp_path)), str(tmp_path))
    with pytest.raises(BackendError) as refused:
        nth.write(1)
    message = str(refused.value)
    assert "\n" not in message and "--iommufd-fail-nth-on-host" in message
    assert faultinject.HOST_OPT_IN_ENV in message
    nth.write(0)  # disarming is always allowed
    nth.close()


@pytest.mark.parametrize("env", [faultinject.HOST_OPT_IN_ENV, faultinject.GUEST_ENV])
def test_opt_in_or_a_project_guest_arms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        env: str) -> None:
    _no_opt_in(monkeypatch)
    monkeypatch.setenv(env, "1")
    proc_file = _fail_nth_file(tmp_path)
    nth = faultinject.FailNth(str(proc_file), str(tmp_path))
    nth.write(3)
    assert nth.armed
    nth.call(lambda: None)  # armed around the call: the file saw the count
    nth.close()


def test_option_opts_in_and_refusal_is_a_usage_error(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_opt_in(monkeypatch)
    pytester.makeconftest("""
import pytest
from backends.kernel import faultinject
from backends.mock import MockBackend

class HostLike(MockBackend):
    # A backend whose arming goes through the kernel backend's guard.
    def fail_nth_write(self, n):
        if n and not faultinject.arming_allowed():
            raise faultinject.BackendError(faultinject.refusal())
        super().fail_nth_write(n)

@pytest.fixture(scope="session")
def backend():
    return HostLike()
""")
    pytester.makepyfile(test_sweep=SCENARIO)
    refused = pytester.runpytest("-p", "no:hypothesispytest")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stdout.fnmatch_lines(["*refusing to arm fail_nth fault injection on this host*"
                                  "--iommufd-fail-nth-on-host*"])
    allowed = pytester.runpytest("-p", "no:hypothesispytest", "--iommufd-fail-nth-on-host")
    allowed.assert_outcomes(passed=1)


def test_count_injected_reads_the_drop_of_times(tmp_path: Path) -> None:
    for name in ("failslab", "fail_iommufd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "times").write_text("1\n")
    # The "program" stands in for injected faults by lowering the counters.
    script = (f"from pathlib import Path; p = Path({str(tmp_path)!r}); "
              "(p / 'failslab/times').write_text(str(1000000 - 5)); "
              "(p / 'fail_iommufd/times').write_text(str(1000000 - 2)); print('ran')")
    result = faultinject.count_injected(["python3", "-c", script], str(tmp_path))
    assert result["injected"] == {"fail_iommufd": 2, "failslab": 5} and result["total"] == 7
    assert result["status"] == 0 and result["output"] == "ran\n"
    assert (tmp_path / "failslab" / "times").read_text() == "1"  # restored


# -- the C lineup ---------------------------------------------------------------------

class FakeGuest:
    """A guest runner whose faultinject answers are canned (what ran is recorded)."""

    spec = "qemu:fake"

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    def run(self, argv: Sequence[str], timeout: float = 600.0) -> tuple[int, bytes, bool]:
        self.ran.append(list(argv))
        return 0, json.dumps(self.answers[argv[3]]).encode() + b"\n", False


def test_c_scenario_points_come_from_the_drop_of_times() -> None:
    tap = "TAP version 13\n1..1\nok 1 basic_fail_nth.map_domain\n# PASSED: 1 / 1\n"
    guest = FakeGuest({"count": {"status": 0, "output": tap, "total": 12,
                                 "injected": {"fail_iommufd": 5, "failslab": 7}}})
    points, injected, verdict = fail_nth_lineup.count_c_scenario(guest, "map_domain")
    assert (points, injected, verdict) == (12, {"fail_iommufd": 5, "failslab": 7}, "ok")
    assert guest.ran == [["python3", "-m", "backends.kernel.faultinject", "count", "--",
                          "/selftests/iommufd_fail_nth", "-t", "map_domain"]]
    guest.answers["tally"] = {"failslab": 3}
    assert fail_nth_lineup.tally(guest) == {"failslab": 3}  # type: ignore[arg-type]


def test_mock_tally_counts_per_fault_attribute() -> None:
    mock = MockBackend()
    assert fail_nth_lineup.tally(mock) == {}
    mock.fail_nth_write(1)
    with pytest.raises(OSError):
        mock.open("/dev/iommu")  # iommufd_fops_open's kzalloc: a failslab point
    assert fail_nth_lineup.tally(mock) == {"failslab": 1}
