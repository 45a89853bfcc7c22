"""pytest side of the fail_nth sweep engine (:mod:`harness.fail_nth`).

A case is swept when it carries the ``iommufd_fail_nth`` marker, or with ``--iommufd-fail-nth``
every ported case (kselftest name) that uses the backend. A swept case runs its whole
setup / call / teardown once per fault point; pytest sees one result. The fault is
armed when the test body starts, or, for a scenario that asks for the ``fail_nth``
fixture, where it calls ``engine.enable()`` after its own setup steps (the kernel's
``fail_nth_enable()``). The read-back and disarm follow the body, before the teardown.

Each swept case's summary (points swept, outcomes, failures) goes to the terminal
summary and, as diagnostic lines, to the KTAP report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from _pytest.nodes import Node
from _pytest.runner import CallInfo, runtestprotocol

from backends.contract import Backend, BackendError, Features
from backends.kernel import faultinject
from harness import fail_nth as engine
from harness import kselftest, ktap, marks, options

MARKER = marks.FAIL_NTH
SWEEP_ENV = "IOMMUFD_FAIL_NTH"

_STATE = pytest.StashKey["ItemSweep"]()
#: set by a report that wants each sweep's injected faults counted (fail_nth_lineup)
TALLY = pytest.StashKey[engine.Tally]()
_REPORTS = pytest.StashKey[list[tuple[str, engine.SweepReport]]]()


def register(config: pytest.Config) -> None:
    """Hook the engine into the run (harness.session declares the marker)."""
    config.stash[_REPORTS] = []
    if options.value(config, options.FAIL_NTH_HOST):
        # The kernel backend reads the opt-in where it arms (backends.kernel.faultinject).
        os.environ[faultinject.HOST_OPT_IN_ENV] = "1"
    config.pluginmanager.register(_Hooks(config), "iommufd-fail-nth")
    from harness import fail_nth_lineup

    fail_nth_lineup.register(config)


class Arm:
    """What the ``fail_nth`` fixture gives a scenario: arm the sweep's fault point."""

    def __init__(self, state: ItemSweep | None, backend: Backend) -> None:
        self._state = state
        self._backend = backend

    def enable(self) -> None:
        """Arm the current run's fault point (nothing on the clean run), like the
        kernel's fail_nth_enable(): call it after the setup that needs no sweeping."""
        if self._state is not None:
            self._state.arm(self._backend)

    def watch(self, addr: int, length: int) -> None:
        """Have the leak check verify after each run that [addr, addr+length) is unpinned."""
        if self._state is not None:
            self._state.watch(self._backend, addr, length)


class ItemSweep:
    """The sweep state of one case: the run's fault point, arming and read-back."""

    def __init__(self, self_arming: bool, tally: engine.Tally | None = None) -> None:
        self.self_arming = self_arming
        self.tally = tally
        self.tally_before: dict[str, int] | None = None
        self.nth = 0
        self.armed = False
        self.fired = False
        self.leaks: engine.LeakCheck | None = None
        self.error: Exception | None = None

    def begin(self, nth: int) -> None:
        self.nth, self.armed, self.fired = nth, False, False
        self.error = None

    def checker(self, backend: Backend) -> engine.LeakCheck:
        if self.leaks is None or self.leaks.backend is not backend:
            self.leaks = engine.LeakCheck(backend)
            if self.tally is not None:  # first sight of the backend: nothing armed yet
                self.tally_before = self.tally(backend)
        return self.leaks

    def watch(self, backend: Backend, addr: int, length: int) -> None:
        self.checker(backend).watch(addr, length)

    def arm(self, backend: Backend) -> None:
        self.checker(backend)
        if not self.nth or self.armed:
            return
        try:
            backend.fail_nth_write(self.nth)
        except BackendError as error:
            # Fault injection is unavailable or refused here: a setup problem of the
            # whole run, not of this case (e.g. a real host without the opt-in).
            pytest.exit(f"iommufd-harness: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
        self.armed = True

    def read_back(self, backend: Backend) -> None:
        if self.armed:
            left = backend.fail_nth_read()
            backend.fail_nth_write(0)
            self.fired = left == 0


class _SameScope:
    """A stand-in "next item" that keeps everything but the case's own fixtures set up,
    so pytest tears down and sets up again only function-scoped fixtures between runs."""

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list[Node]:
        return self._chain


def _swept(item: pytest.Item) -> bool:
    if item.get_closest_marker(MARKER) is not None:
        return True
    fixturenames = getattr(item, "fixturenames", ())
    return (bool(options.value(item.config, options.FAIL_NTH))
            and kselftest.name_of(item) is not None and "backend" in fixturenames)


class _Hooks:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.fixture
    def fail_nth(self, request: pytest.FixtureRequest, backend: Backend) -> Arm:
        """The sweep's arming handle (a do-nothing one when the case is not swept)."""
        return Arm(request.node.stash.get(_STATE, None), backend)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if _swept(item):
                item.add_marker(marks.requires(
                    Features.FAIL_NTH, reason="the case is swept with fail_nth"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> bool | None:
        if not _swept(item):
            return None  # not ours: pytest runs it as usual
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        state = ItemSweep("fail_nth" in getattr(item, "fixturenames", ()),
                          self.config.stash.get(TALLY, None))
        item.stash[_STATE] = state
        name = kselftest.name_of(item) or item.nodeid
        last: list[pytest.TestReport] = []
        report = engine.SweepReport(name, "?")

        def run(nth: int) -> engine.RunResult:
            state.begin(nth)
            reports = runtestprotocol(item, nextitem=_SameScope(item), log=False)  # type: ignore[arg-type]
            last[:] = reports
            result: engine.RunResult = self._judge(state, reports)
            return result

        limit = int(options.value(self.config, options.FAIL_NTH_LIMIT) or engine.DEFAULT_LIMIT)
        engine.sweep(run, limit=limit, report=report)
        if state.leaks is not None:
            report.backend = state.leaks.backend.spec
            if state.tally is not None:
                report.injected = engine.injected_between(
                    state.tally_before, state.tally(state.leaks.backend))
        del item.stash[_STATE]
        self._finish(item, nextitem, last, report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _judge(self, state: ItemSweep, reports: list[pytest.TestReport]) -> engine.RunResult:
        by_phase = {r.when: r for r in reports}
        setup, call, teardown = (by_phase.get(w) for w in ("setup", "call", "teardown"))
        if setup is not None and setup.skipped:
            return engine.RunResult(state.nth, False, engine.SKIPPED)
        if setup is None or setup.failed:
            return engine.RunResult(state.nth, state.fired, "setup",
                                      f"fixture setup failed: {_longrepr_line(setup)}")
        if call is not None and call.skipped:
            outcome, failure = engine.SKIPPED, None
        else:
            outcome, failure = engine.outcome_of(state.error)
        if failure is None and state.nth and not state.armed:
            failure = "the scenario never armed its fault point (engine.enable())"
        if failure is None and teardown is not None and teardown.failed:
            failure = f"teardown failed: {_longrepr_line(teardown)}"
        if failure is None and state.leaks is not None:
            failure = state.leaks.check()
        return engine.judge(state.nth, state.fired, outcome, failure)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        state = item.stash.get(_STATE, None)
        if state is None:
            return (yield)
        backend: Backend = item.funcargs["backend"]  # type: ignore[attr-defined]
        globals_ = item.funcargs.get("kglobals")  # type: ignore[attr-defined]
        if globals_ is not None:
            state.watch(backend, globals_.buffer, globals_.buffer_size)
        if state.self_arming:
            state.checker(backend)
        else:
            state.arm(backend)
        try:
            yield
        except Exception as raised:
            state.error = raised
        finally:
            state.read_back(backend)
        error = state.error
        if error is not None and not (state.fired and engine.outcome_of(error)[1] is None):
            raise error
        # Otherwise an injected fault made the body fail as it may: the sweep judges
        # the run, and pytest need not format a traceback for each fault point.
        return None

    def _finish(self, item: pytest.Item, nextitem: pytest.Item | None,
                reports: list[pytest.TestReport], sweep: engine.SweepReport) -> None:
        # Scopes above the function stayed set up during the sweep; tear down now what
        # the next case does not share, as pytest would have after the case.
        teardown = CallInfo.from_call(
            lambda: item.session._setupstate.teardown_exact(nextitem), when="teardown")
        self.config.stash[_REPORTS].append((item.nodeid, sweep))
        line = sweep.summary()
        failures = sweep.failures
        final = sweep.runs[-1] if sweep.runs else None
        injected = final is not None and final.nth > 0 and final.fired
        for report in reports:
            report.user_properties.append((ktap.DIAGNOSTIC, line))
            if report.when == "call" and failures and (report.passed or injected):
                # An injected run may fail its body (any errno is allowed) or pass and
                # still break a rule (a leak): the sweep's verdict is what pytest shows.
                # A clean run that failed keeps its own traceback.
                report.outcome = "failed"
                report.longrepr = "fail_nth sweep failed:\n  " + "\n  ".join(failures)
            if report.when == "teardown" and teardown.excinfo is not None:
                report.outcome = "failed"
                report.longrepr = str(teardown.excinfo.getrepr())
            item.ihook.pytest_runtest_logreport(report=report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        sweeps = self.config.stash[_REPORTS]
        if not sweeps:
            return
        terminalreporter.section("fail_nth sweeps")
        for _nodeid, sweep in sweeps:
            terminalreporter.write_line(f"{sweep.name}: {sweep.summary()}")
            for failure in sweep.failures:
                terminalreporter.write_line(f"    {failure}")


def sweeps(config: pytest.Config) -> list[engine.SweepReport]:
    """Every sweep of the run so far, in run order."""
    return [sweep for _nodeid, sweep in config.stash.get(_REPORTS, [])]


def _longrepr_line(report: pytest.TestReport | None) -> str:
    if report is None:
        return "no report"
    text = report.longreprtext.strip()
    return text.splitlines()[-1] if text else report.outcome
