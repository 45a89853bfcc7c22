"""fail_nth sweeps: a scenario once clean, then with fault N = 1, 2, 3, ... armed.

The method of the kernel's tools/testing/selftests/iommu/iommufd_fail_nth.c, on any
backend: run the scenario once with no fault; then, with its fixture torn down and set
up again between runs, re-run it with the N-th fault point after its setup armed
(``Backend.fail_nth_write``), until the read-back (``Backend.fail_nth_read``) says the
N-th point was never reached, so every fault point on the chain has been swept.

The rules a sweep enforces:

- the clean first run and the last run (the fault was armed but never reached) succeed;
- a run with an injected fault may fail with any errno (or have the scenario's own
  checks see that errno), but must leave the kernel consistent: after every run the
  fixture teardown succeeds and the leak checks (:class:`LeakCheck`) find no pinned page,
  no change in the task's pinned-memory accounting and no kernel WARN or splat;
- the backend itself must not fail (a guest crash, a model exception: the Python
  counterparts of an Oops).

A sweep stops at its first broken rule: a leak poisons every later run's checks.
This module is the engine; :mod:`harness.fail_nth_plugin` drives it from pytest.
"""

from __future__ import annotations

import errno as _errno
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from backends.contract import Backend, BackendError, Features
from harness.helpers.core import Iommufd
from harness.helpers.selftest import check_refs

#: iommufd_fail_nth.c's bound on the iterations of one scenario; reaching it means
#: "raise the limit", not a kernel bug.
DEFAULT_LIMIT = 1000

#: outcomes of a run besides an errno name
OK = "ok"
ASSERTION = "assertion"  # the scenario's own check saw the injected failure
SKIPPED = "skip"


class Invariant(Exception):
    """A scenario's check that must hold even under fault injection (the C
    scenarios' ``assert()`` on returned data): a failure in any run."""


@dataclass(frozen=True)
class RunResult:
    """One run of a sweep.

    ``nth`` is the armed fault point (0: the clean run); ``fired`` tells whether the
    read-back showed it injected; ``outcome`` is ``"ok"``, an errno name (``"ENOMEM"``),
    ``"assertion"`` or ``"skip"``; ``failure`` says which rule the run broke (None: none).
    """

    nth: int
    fired: bool
    outcome: str
    failure: str | None = None


@dataclass
class SweepReport:
    """A scenario's sweep on one backend: its runs and what they add up to."""

    name: str
    backend: str
    runs: list[RunResult] = field(default_factory=list)
    #: set when the sweep stopped for a reason that is no single run's (the limit)
    aborted: str | None = None
    #: faults injected during the sweep per kernel fault attribute (``failslab``,
    #: ``fail_iommufd``, ...), where the backend can count them; see ``Tally``
    injected: dict[str, int] | None = None

    @property
    def points(self) -> int:
        """The fault points swept: the runs in which the armed fault was injected."""
        return sum(1 for run in self.runs if run.nth and run.fired)

    @property
    def outcomes(self) -> Counter[str]:
        """How the injected runs ended: errno names, ``ok``, ``assertion``."""
        return Counter(run.outcome for run in self.runs if run.nth and run.fired)

    @property
    def failures(self) -> list[str]:
        """Every broken rule, ``"N=3: ..."`` (N=0 is the clean run)."""
        found = [f"N={run.nth}: {run.failure}" for run in self.runs if run.failure]
        if self.aborted:
            found.append(self.aborted)
        return found

    @property
    def complete(self) -> bool:
        """The sweep reached a run whose fault point did not exist, with no failure."""
        return (not self.failures and len(self.runs) > 1 and not self.runs[-1].fired)

    def summary(self) -> str:
        """One line: points, errnos seen, failures."""
        seen = ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items()))
        text = (f"fail_nth {self.backend}: {self.points} points swept; "
                f"outcomes: {seen or 'none'}; failures: {len(self.failures)}")
        if self.failures:
            text += f" (first: {self.failures[0]})"
        return text


#: Counts the faults injected so far on a backend, per fault attribute (None where the
#: backend cannot tell); the sweep reports the difference over each scenario.
Tally = Callable[[Backend], "dict[str, int] | None"]


def injected_between(before: dict[str, int] | None,
                     after: dict[str, int] | None) -> dict[str, int] | None:
    """Per-attribute faults injected between two :data:`Tally` readings."""
    if before is None or after is None:
        return None
    return {name: after[name] - before.get(name, 0) for name in sorted(after)}


def outcome_of(error: BaseException | None) -> tuple[str, str | None]:
    """Classify how a run's scenario body ended: ``(outcome, failure or None)``.

    An errno (OSError) or the scenario's own assertion are the kernel answering the
    injected fault; a BackendError (a crashed guest, a backend that gave up) or any
    other exception (the model raising where the kernel would Oops) is a failure.
    """
    if error is None:
        return OK, None
    if isinstance(error, BackendError):
        return "backend", f"backend failed: {_first_line(error)}"
    if isinstance(error, OSError):
        return errno_name(error.errno or 0), None
    if isinstance(error, Invariant):
        return "invariant", f"invariant broken: {_first_line(error)}"
    if isinstance(error, AssertionError):
        return ASSERTION, None
    return type(error).__name__, f"{type(error).__name__}: {_first_line(error)}"


def judge(nth: int, fired: bool, outcome: str, failure: str | None) -> RunResult:
    """Apply the run rules: a run without an injected fault must succeed."""
    if failure is None and not (nth and fired) and outcome not in (OK, SKIPPED):
        what = "the clean run" if nth == 0 else "the last run (fault not reached)"
        failure = f"{what} failed with {outcome}"
    return RunResult(nth, fired, outcome, failure)


def sweep(run: Callable[[int], RunResult], *, limit: int = DEFAULT_LIMIT,
          report: SweepReport) -> SweepReport:
    """Drive ``run(nth)``: 0 first, then 1, 2, ... until a run's fault was not reached.

    Stops at the first run that broke a rule, and at ``limit`` injected runs.
    """
    nth = 0
    while True:
        result = run(nth)
        report.runs.append(result)
        if result.failure is not None or result.outcome == SKIPPED:
            return report
        if nth and not result.fired:
            return report
        nth += 1
        if nth > limit:
            report.aborted = (f"fault point {limit} was still reached: the sweep stopped "
                              "at the limit (raise --iommufd-fail-nth-limit)")
            return report


class LeakCheck:
    """The checks after every run: nothing pinned, accounting back, no WARN or splat.

    ``watch`` names the user buffers whose pages the scenario may pin (the selftest's
    2 MiB ``buffer``); each is checked with MD_CHECK_REFS(refs=0) on a fresh iommufd, as
    the kernel's teardown_iommufd() does. The task's ``VmPin`` must equal its value
    after the clean run, and the backend's kernel may report no new WARN. A crashed
    guest makes these very calls fail with the console's splat.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.buffers: dict[int, int] = {}
        self._warnings = len(backend.kernel_warnings())
        self._vmpin: int | None = None
        self._reference_taken = False

    def watch(self, addr: int, length: int) -> None:
        """Check that no page of [addr, addr+length) stays pinned after each run."""
        self.buffers[addr] = max(length, self.buffers.get(addr, 0))

    def _read_vmpin(self) -> int | None:
        try:
            return self.backend.proc_status("VmPin")
        except (BackendError, OSError):
            return None  # a backend without /proc/<pid>/status: one check fewer

    def check(self) -> str | None:
        """Run the checks; the first problem found, or None."""
        try:
            problem = self._pins() or self._accounting()
        except BackendError as error:
            return f"backend failed during the leak check: {_first_line(error)}"
        warnings = self.backend.kernel_warnings()
        if len(warnings) > self._warnings:
            new = warnings[self._warnings:]
            self._warnings = len(warnings)
            return f"kernel WARN: {'; '.join(new)}"
        return problem

    def _pins(self) -> str | None:
        if not self.buffers or not self.backend.has(Features.SELFTEST):
            return None
        try:
            fd = Iommufd.open(self.backend)
        except OSError as error:
            return f"cannot open /dev/iommu for the leak check: {error}"
        try:
            for addr, length in self.buffers.items():
                try:
                    check_refs(fd, addr, length, 0)
                except OSError as error:
                    return (f"pages of the buffer at {addr:#x} (+{length:#x}) are still "
                            f"pinned (MD_CHECK_REFS: {errno_name(error.errno or 0)})")
        finally:
            fd.close()
        return None

    def _accounting(self) -> str | None:
        vmpin = self._read_vmpin()
        if not self._reference_taken:
            self._reference_taken = True
            self._vmpin = vmpin
            return None
        if vmpin != self._vmpin:
            return f"VmPin is {vmpin} kB, {self._vmpin} kB after the clean run"
        return None


def errno_name(number: int) -> str:
    """The kernel's name of an errno (``EOPNOTSUPP``, where Python says ``ENOTSUP``)."""
    if number == _errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return _errno.errorcode.get(number, str(number))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
