"""The host's end: cases that use the backend run in the guest, reports come back.

:class:`GuestRunner` is a pytest plugin (registered by :mod:`harness.plugin` for a
lone ``qemu:ARCH`` backend). It takes over ``pytest_runtest_protocol`` for every
case that uses the ``backend`` fixture and leaves the rest (the framework's own
tests) to pytest. On the first such case it starts the guest's session
(:mod:`harness.guestrun.worker`) over the agent channel with the test files of all
of them; then each case is one command, and its reports are replayed here.

A guest that panics, hangs or logs a splat fails the case it was running with the
console excerpt, and the next case starts a session on a fresh guest. Ctrl-C (and
SIGTERM, which the qemu process guard turns into the same interrupt) kills the
guest at once and leaves pytest to print its interrupted summary.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator
from typing import Any, Literal

import pytest

from backends.contract import BackendError
from backends.qemu import QemuBackend
from backends.qemu.errors import GuestCrashed
from harness import marks
from harness.guestrun.files import suite_files
from harness.guestrun.pycache import rewritten_pycs

Phase = Literal["setup", "call", "teardown"]
_PHASES: tuple[Phase, ...] = ("setup", "call", "teardown")

#: the guest job that runs the session
WORKER = "harness.guestrun.worker:run_session"
#: env override of the per-case watchdog (seconds): a case is many calls, and under
#: TCG on a loaded host the heaviest (access_rw's sweeps) take minutes
CASE_TIMEOUT_ENV = "IOMMUFD_QEMU_CASE_TIMEOUT"
DEFAULT_CASE_TIMEOUT = 300.0


def uses_backend(item: pytest.Item) -> bool:
    """True for a case that needs the backend (directly or through a fixture)."""
    return "backend" in getattr(item, "fixturenames", ())


def runs_in_guest(item: pytest.Item) -> bool:
    """True for a case that runs inside the guest: it uses the backend and is not
    marked to stay on the host (:data:`harness.marks.on_host`)."""
    return uses_backend(item) and item.get_closest_marker(marks.ON_HOST) is None


def failed_report(item: pytest.Item, when: Phase, text: str) -> pytest.TestReport:
    """A failed report of ``item``'s phase ``when`` with ``text`` as the reason."""
    return pytest.TestReport(
        nodeid=item.nodeid, location=item.location,
        keywords=dict.fromkeys(item.keywords, 1), outcome="failed", longrepr=text,
        when=when, sections=[], duration=0.0, start=0.0, stop=0.0,
        user_properties=list(item.user_properties))


class _Session:
    """One pytest session in one guest boot."""

    def __init__(self, seq: int, collected: set[str], errors: dict[str, str]) -> None:
        self.seq = seq
        self.collected = collected
        self.errors = errors


class GuestRunner:
    """Runs the backend's cases in the guest; see the module docstring."""

    def __init__(self, config: pytest.Config, open_backend: Callable[[], QemuBackend],
                 guest_spec: str = "kernel") -> None:
        self.config = config
        self.guest_spec = guest_spec
        self._open_backend = open_backend
        self._backend: QemuBackend | None = None
        self._session: _Session | None = None
        self._start_error: str | None = None
        self.case_timeout = float(os.environ.get(CASE_TIMEOUT_ENV) or DEFAULT_CASE_TIMEOUT)
        #: the guest's timing of each session that ended cleanly (see the worker)
        self.stats: list[dict[str, Any]] = []

    # -- pytest hooks --------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> bool | None:
        if not runs_in_guest(item):
            if uses_backend(item):
                # Its calls cross to the guest's agent, which a session's job would hold.
                self._stop()
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        self._run(item, nextitem)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except KeyboardInterrupt:
            self._abandon()
            raise
        finally:
            self._stop()

    # -- one case ------------------------------------------------------------
    def _run(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        hook = item.ihook
        started: set[Phase] = set()

        def fail(text: str) -> None:
            when: Phase = next((w for w in _PHASES if w not in started), "teardown")
            hook.pytest_runtest_logreport(report=failed_report(item, when, text))

        try:
            session = self._session or self._start(item.session)
        except BackendError as error:  # GuestCrashed, or a guest that did not boot
            fail(f"the guest's pytest session did not start:\n{error}")
            return
        if session is None:
            fail(self._start_error or "the guest's pytest session did not start")
            return
        if item.nodeid not in session.collected:
            fail(session.errors.get(item.nodeid)
                 or "\n".join(session.errors.values())
                 or f"{item.nodeid} was not collected in the guest")
            return
        next_id = nextitem.nodeid if nextitem is not None and runs_in_guest(nextitem) else None
        if next_id not in session.collected:
            next_id = None
        backend = self._backend
        assert backend is not None
        try:
            backend.job_send(("run", item.nodeid, next_id))
            while True:
                final, _status, payload, splat = backend.job_receive(session.seq,
                                                                     self.case_timeout)
                if final:
                    self._session = None
                    fail(f"the guest's pytest session ended during the case "
                         f"(exit status {payload}); console log: {backend.console_log}")
                    return
                if payload[0] == "done":
                    return
                if payload[0] != "report":
                    continue
                report = self.config.hook.pytest_report_from_serializable(
                    config=self.config, data=payload[1])
                started.add(report.when)
                if splat is not None:
                    # The guest is torn down for a fresh one, as any splat ends a guest.
                    self._session = None
                    logged = backend.crash_logged(splat, item.nodeid)
                    hook.pytest_runtest_logreport(
                        report=failed_report(item, report.when, str(logged)))
                    return
                hook.pytest_runtest_logreport(report=report)
        except GuestCrashed as crash:
            self._session = None
            fail(str(crash))
        except pytest.fail.Exception as exc:
            # pytest-timeout's signal method fails the running test from its handler.
            self._abandon()
            fail(str(exc))

    # -- the guest's session ---------------------------------------------------
    def _start(self, session: pytest.Session) -> _Session | None:
        if self._start_error is not None:
            return None
        remote = [item for item in session.items if runs_in_guest(item)]
        # Unique, so that sessions sharing a machine (stand-in guests) never meet.
        root_dir = f"/tmp/iommufd-suite-{uuid.uuid4().hex[:12]}"
        try:
            files = suite_files(self.config.rootpath, {item.path for item in remote})
            files.update(rewritten_pycs(files, root_dir))
        except ValueError as exc:
            self._start_error = f"cannot run in the guest: {exc}"
            return None
        backend = self._backend = self._open_backend()
        seq = backend.job_start(WORKER, (files, self._guest_args(),
                                         [item.nodeid for item in remote], root_dir))
        # Starting pytest and collecting under TCG takes seconds: the boot's time limit.
        final, _status, payload, _splat = backend.job_receive(seq, backend.boot_timeout)
        if final or payload[0] != "ready":
            detail = payload[2] if not final and payload[0] == "failed" else ""
            self._start_error = (f"the guest's pytest session did not start "
                                 f"(status {payload if final else payload[1]}):\n{detail}")
            while not final:  # the job ends next: the channel is the agent's again
                final, _status, payload, _splat = backend.job_receive(seq,
                                                                      backend.call_timeout)
            return None
        _, collected, errors = payload
        self._session = _Session(seq, set(collected), dict(errors))
        return self._session

    def _guest_args(self) -> list[str]:
        """The guest session's options: its backend, and the host's options that
        shape a report (traceback style, locals, verbosity, runxfail)."""
        option = self.config.option
        args = ["--iommufd", "--iommufd-backend", self.guest_spec, f"--tb={option.tbstyle}"]
        if option.showlocals:
            args.append("-l")
        if option.verbose > 0:
            args.append("-" + "v" * option.verbose)
        if option.runxfail:
            args.append("--runxfail")
        return args

    def _stop(self) -> None:
        """End the guest's session (the guest stays up for the lineup and the rest)."""
        session, self._session = self._session, None
        if session is None or self._backend is None:
            return
        try:
            self._backend.job_send(("stop",))
            while True:
                final, _status, payload, _splat = self._backend.job_receive(session.seq)
                if final:
                    break
                if payload[0] == "stats":
                    self.stats.append(dict(payload[1]))
        except GuestCrashed:
            pass  # the crash is recorded on the backend; the session is over either way

    def _abandon(self) -> None:
        """Kill the guest mid-session (an interrupt): no polite end is quick enough."""
        self._session = None
        if self._backend is not None:
            self._backend.kill_guest()
