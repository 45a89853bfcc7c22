"""An iommufd session: what the plugin does once a run has iommufd scenarios in it.

:func:`activate` is called by :mod:`harness.plugin` (cheap, always loaded) when the
session turns out to run iommufd scenarios; only then are the backends, cffi and the
report writers imported and the markers, fixtures and hooks below registered.
"""

from __future__ import annotations

from collections.abc import Generator
from types import ModuleType
from typing import Any

import pytest

from backends import BackendError, parse_spec
from harness import (
    compare_plugin,
    fail_nth_plugin,
    fixtures,
    junit_names,
    known_issues,
    kselftest,
    lineup_report,
    marks,
    options,
    plugin,
    report_files,
)
from harness.results import ResultCollector
from harness.state import STATE, SessionState

HEADER = "iommufd-harness backends: "
RESULTS = "iommufd-results"
JUNIT = "iommufd-junit"


def backend_specs(config: pytest.Config) -> list[str]:
    """The specs of ``--iommufd-backend`` (else ``$IOMMUFD_BACKEND``, else mock)."""
    raw: list[str] = options.value(config, options.BACKEND) or ["mock"]
    specs: list[str] = []
    for entry in raw:
        for spec in entry.split(","):
            try:
                parse_spec(spec)
            except BackendError as error:
                raise pytest.UsageError(str(error)) from None
            if spec.strip() not in specs:
                specs.append(spec.strip())
    return specs


class IommufdSession:
    """Parametrizes and names the cases, runs their checks, releases the backends."""

    def __init__(self, config: pytest.Config, explicit: bool, problem: str | None) -> None:
        self.config = config
        self.explicit = explicit
        #: a usage error found on waking up mid-collection, raised once collection ends
        self.problem = problem

    @property
    def state(self) -> SessionState:
        return self.config.stash[STATE]

    def pytest_report_header(self, config: pytest.Config) -> str:
        return HEADER + ", ".join(self.state.specs)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        marker = metafunc.definition.get_closest_marker(kselftest.MARKER)
        if marker is not None and marker.args:
            # Like TEST_F, every case of the group runs under every variant, whether or
            # not the function asks for the variant's fields; the test IDs are the
            # kernel's case names, so -v, --collect-only and -k show and take them.
            variants: list[str | None] = list(marker.kwargs.get("variants") or {}) or [None]
            ids = [kselftest.case_name(str(marker.args[0]), v, metafunc.function.__name__)
                   for v in variants]
            if "variant_name" not in metafunc.fixturenames:
                metafunc.fixturenames.append("variant_name")
            metafunc.parametrize("variant_name", variants, ids=ids, indirect=True)
        specs = self.state.specs
        if "backend_spec" in metafunc.fixturenames and len(specs) > 1:
            metafunc.parametrize("backend_spec", specs, ids=specs, indirect=True,
                                 scope="session")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.problem:
            raise pytest.UsageError(self.problem)
        names = self.state.names
        multi = len(self.state.specs) > 1
        for item in items:
            spec = _param(item, "backend_spec")
            self.state.item_backends[item.nodeid] = spec or self.state.specs[0]
            name = kselftest.name_of(item)
            if name is not None:
                names[item.nodeid] = f"{name}@{spec}" if multi and spec else name
            fixturenames: list[str] = getattr(item, "fixturenames", [])
            if (name is not None or item.get_closest_marker(marks.REQUIRES) is not None
                    or "backend" in fixturenames):
                # The capability and known-issue checks come before any other fixture,
                # so a case skipped for a missing feature never opens what it lacks; and
                # any case on a backend fails on a kernel WARN it caused.
                if fixtures.CASE_CHECKS not in fixturenames:
                    fixturenames.insert(0, fixtures.CASE_CHECKS)

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str | None:
        # Woken up while collecting: the header had been written already.
        return None if self.explicit else HEADER + ", ".join(self.state.specs)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
            self, item: pytest.Item,
            call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        # Plain attributes travel with the report to an xdist controller.
        name = self.state.names.get(item.nodeid)
        if name is not None:
            report.kselftest_name = name  # type: ignore[attr-defined]
        report.iommufd_backend = self.state.backend_of(report)  # type: ignore[attr-defined]
        return report

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # Backends hold guests and fds: always released, also after an interrupted run.
        for backend in self.state.backends.values():
            backend.shutdown()


def _param(item: pytest.Item, name: str) -> str | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get(name) if callspec is not None else None
    return str(value) if value else None


def activate(config: pytest.Config, explicit: bool,
             session: pytest.Session | None = None) -> None:
    """Turn the session into an iommufd session.

    ``explicit``: woken by an option before the run (usage errors are raised at once);
    otherwise woken while collecting or by a worker's report, and a usage error is
    raised when collection ends. ``session``: the session woken while collecting, whose
    project fixtures take precedence over the plugin's (see :func:`_fixtures_plugin`).
    """
    problem: str | None = None
    try:
        specs = backend_specs(config)
    except pytest.UsageError as error:
        specs, problem = ["mock"], str(error)
    problem = problem or report_files.check(config)
    if problem and explicit:
        raise pytest.UsageError(problem)
    for line in marks.DESCRIPTIONS:
        config.addinivalue_line("markers", line)
    config.stash[STATE] = SessionState(specs, known_issues.load())
    collector = ResultCollector(config)
    manager = config.pluginmanager
    manager.register(IommufdSession(config, explicit, problem), "iommufd-session")
    manager.register(_fixtures_plugin(session), "iommufd-fixtures")
    manager.register(collector, RESULTS)
    manager.register(report_files.ReportWriter(config, collector), "iommufd-reports")
    manager.register(junit_names.JunitNames(config), JUNIT)
    lineup_report.register(config, collector.outcomes, lambda: config.stash[STATE].backends)
    fail_nth_plugin.register(config)
    compare_plugin.register(manager)  # may turn the specs into compare:A+B pairs
    # Last: its runtest_protocol must come before fail_nth's (a swept case in a guest
    # is swept there, by the guest's own session).
    _register_guest_runner(config)


def _fixtures_plugin(session: pytest.Session | None) -> ModuleType:
    """harness.fixtures, less the fixtures the project already defines at the top.

    A project's own fixture (a root conftest's ``backend``, say) must override the
    plugin's. Woken before collection, the plugin registers first and pytest ranks the
    project's later registration higher. Woken mid-collection, the root conftest is
    already in, and since pytest 9.2 the fixture registered later at the same node wins:
    so the plugin leaves out the names the session already resolves.
    """
    if session is None:
        return fixtures
    manager = session._fixturemanager
    shadowed = {name for name in plugin.PLUGIN_FIXTURES
                if manager.getfixturedefs(name, session)}
    if not shadowed:
        return fixtures
    holder = ModuleType(fixtures.__name__)
    holder.__dict__.update((k, v) for k, v in vars(fixtures).items() if k not in shadowed)
    return holder


QEMU_RUN_MODES = ("guest", "agent")


def _register_guest_runner(config: pytest.Config) -> None:
    """A lone qemu backend runs the cases in the guest (see harness.guestrun)."""
    specs = config.stash[STATE].specs
    if len(specs) != 1 or not specs[0].startswith("qemu:"):
        return
    mode = options.value(config, options.QEMU_RUN) or "guest"
    if mode not in QEMU_RUN_MODES:
        raise pytest.UsageError(f"--iommufd-qemu-run {mode!r}: expected one of "
                                f"{', '.join(QEMU_RUN_MODES)}")
    if mode != "guest":
        return
    guest_spec = options.value(config, options.GUEST_BACKEND) or "kernel"
    try:
        parse_spec(guest_spec)
    except BackendError as error:
        raise pytest.UsageError(f"--iommufd-guest-backend: {error}") from None
    from harness.guestrun.host import GuestRunner

    def open_guest() -> Any:
        return fixtures.session_backend(config, specs[0])

    config.pluginmanager.register(GuestRunner(config, open_guest, guest_spec),
                                  "iommufd-guestrun")


def first_report(config: pytest.Config, report: pytest.TestReport, order: list[str]) -> None:
    """Hand the report that woke an xdist controller up to the parts registered since
    (pytest had already chosen the plugins that see it), with the collection order the
    workers reported before that."""
    collector = config.pluginmanager.get_plugin(RESULTS)
    if collector is not None and not collector.order:
        collector.order = list(order)
    for name in (JUNIT, RESULTS):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            plugin.pytest_runtest_logreport(report)
