"""Each case's result, gathered where the reports are written.

That is the pytest process itself, or under pytest-xdist the controller: workers only
run cases, and their reports carry the kernel name (``report.kselftest_name``) and the
backend (``report.iommufd_backend``) across; each worker sends the descriptions of the
backends it opened in ``workeroutput``. Results come out in collection order, so a
serial run and an ``-n N`` run list the same cases in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from harness import ktap
from harness.state import STATE

#: the ``workeroutput`` key of the backends a worker opened
WORKER_BACKENDS = "iommufd_backends"
#: at most this many lines of a failure's message go into the diagnostics
MAX_DIAGNOSTIC_LINES = 20


@dataclass(frozen=True)
class BackendInfo:
    """What the reports say about one backend of the run."""

    spec: str
    description: str
    kernel_release: str
    architecture: str

    def as_dict(self) -> dict[str, str]:
        """For ``workeroutput`` (plain data crosses to the xdist controller)."""
        return {"spec": self.spec, "description": self.description,
                "kernel_release": self.kernel_release, "architecture": self.architecture}


@dataclass(frozen=True)
class CaseRecord:
    """One test's result: its KTAP line plus what KCIDB wants."""

    nodeid: str
    #: the kernel case name, or None for a test that is not a ported case
    kernel_name: str | None
    backend: str
    result: ktap.CaseResult
    duration: float = 0.0
    start: float | None = None


def outcome_of(report: pytest.TestReport) -> str | None:
    """The KTAP outcome a report phase decides, or None when it decides nothing."""
    xfailed = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.skipped:
            return "xfail" if xfailed else "skip"
        return "error" if report.failed else None
    if report.when == "call":
        if report.passed:
            return "xpass" if xfailed else "pass"
        if report.skipped:
            return "xfail" if xfailed else "skip"
        return "fail"
    # A teardown failure (the pin-leak check) fails the case, as in the kernel.
    return "fail" if report.failed else None


def _crash(report: pytest.TestReport) -> Any:
    return getattr(report.longrepr, "reprcrash", None)


def reason_of(report: pytest.TestReport) -> str:
    """The one-line reason of a skip, xfail, failure or error."""
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = _crash(report)
        if crash is not None and crash.message:
            return str(crash.message).splitlines()[0]
        text = report.longreprtext.strip()
        return text.splitlines()[-1] if text else ""
    return ""


def diagnostics_of(report: pytest.TestReport, name: str, rootdir: Path) -> tuple[str, ...]:
    """A case's own diagnostic lines (``ktap.DIAGNOSTIC`` user properties: a fail_nth
    sweep's summary), then where and why a phase failed, as kselftest prints it before
    ``not ok``."""
    own = tuple(str(value) for key, value in report.user_properties
                if key == ktap.DIAGNOSTIC)
    if not report.failed:
        return own
    crash = _crash(report)
    if crash is not None:
        path = Path(str(crash.path))
        where = os.path.relpath(path, rootdir) if path.is_absolute() else str(path)
        message = str(crash.message).splitlines() or [""]
        lines = [f"{where}:{crash.lineno}: {message[0]}"]
        lines += message[1:MAX_DIAGNOSTIC_LINES]
    else:
        lines = report.longreprtext.strip().splitlines()[-MAX_DIAGNOSTIC_LINES:]
    phase = "test" if report.when == "call" else report.when
    lines.append(f"{name}: {phase} failed")
    return own + tuple(lines)


@dataclass(eq=False)  # pluggy keeps plugins in sets: identity hashing
class ResultCollector:
    """Collects results (serial run or xdist controller); hands out backend info (worker)."""

    config: pytest.Config
    records: dict[str, CaseRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    worker_backends: dict[str, BackendInfo] = field(default_factory=dict)

    @property
    def is_worker(self) -> bool:
        """True in an xdist worker, which leaves reporting to the controller."""
        return hasattr(self.config, "workerinput")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        outcome = outcome_of(report)
        if outcome is None:
            return
        previous = self.records.get(report.nodeid)
        duration = report.duration + (previous.duration if previous else 0.0)
        if previous is not None and previous.result.outcome not in ("pass", "xpass"):
            self.records[report.nodeid] = replace(previous, duration=duration)
            return
        state = self.config.stash[STATE]
        kernel_name = state.kernel_name(report)
        name = kernel_name or report.nodeid
        result = ktap.CaseResult(name, outcome, reason_of(report),
                                 diagnostics_of(report, name, self.config.rootpath))
        backend = state.backend_of(report)
        start = previous.start if previous else getattr(report, "start", None)
        self.records[report.nodeid] = CaseRecord(report.nodeid, kernel_name, backend, result,
                                                 duration, start)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.order = [item.nodeid for item in session.items]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.order:
            self.order = list(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", {}) or {}
        for info in output.get(WORKER_BACKENDS, []):
            self.worker_backends.setdefault(info["spec"], BackendInfo(**info))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            workeroutput: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
            workeroutput[WORKER_BACKENDS] = [b.as_dict() for b in self.local_backends()]

    def local_backends(self) -> list[BackendInfo]:
        """The backends this process opened."""
        return [BackendInfo(spec, b.describe(), b.kernel_release, _architecture(spec))
                for spec, b in self.config.stash[STATE].backends.items()]

    def backends(self) -> list[BackendInfo]:
        """Every backend of the run, opened here or by an xdist worker."""
        found = {b.spec: b for b in self.local_backends()}
        for spec, info in self.worker_backends.items():
            found.setdefault(spec, info)
        return [found[s] for s in self.config.stash[STATE].specs if s in found]

    def ordered(self) -> list[CaseRecord]:
        """The records in collection order (a record not collected here goes last)."""
        rank = {nodeid: i for i, nodeid in enumerate(self.order)}
        return sorted(self.records.values(), key=lambda r: rank.get(r.nodeid, len(rank)))

    def outcomes(self) -> dict[str, str]:
        """``{kselftest name: outcome}`` of the ported cases run so far."""
        return {r.result.name: r.result.outcome for r in self.records.values()
                if r.kernel_name is not None}


def _architecture(spec: str) -> str:
    kind, _, arch = spec.partition(":")
    if arch:
        return arch
    return os.uname().machine if kind == "kernel" else ""
