"""The pytest plugin: backends, kselftest names, capability markers, KTAP, known issues.

Options (group ``iommufd``), each with an environment fallback:

``--backend SPEC``   where the ioctls run (``IOMMUFD_BACKEND``, default ``mock``); give it
                     more than once, or comma-separated, to run every case on each backend.
``--ktap FILE``      write a KTAP v1 report with kselftest names and the ``# Totals:`` line
                     (``IOMMUFD_KTAP``).
``--qemu-run MODE``  with a ``qemu:ARCH`` backend: ``guest`` (default) runs the cases in a
                     pytest session inside the guest (harness.guestrun); ``agent`` runs
                     them on the host, each call crossing to the guest's agent
                     (``IOMMUFD_QEMU_RUN``).
``--guest-backend SPEC``  the backend that session uses (default ``kernel``;
                     ``IOMMUFD_GUEST_BACKEND``).

Fixtures: ``backend`` (session), ``kglobals`` (the selftest's shared buffers), ``iommufd``
(an open /dev/iommu, closed after the test and followed by the kernel's pin-leak check),
``variant`` / ``variant_name`` (the kernel fixture variant of a ported case).
Markers: ``kselftest(fixture, variants=...)`` (see harness.kselftest) and
``requires(*features, reason=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import BACKEND_SPECS, Backend, BackendError, Features, open_backend, parse_spec
from harness import (
    compare_plugin,
    fail_nth_plugin,
    known_issues,
    kselftest,
    ktap,
    lineup_report,
    vfio_options,
)
from harness.helpers.core import Iommufd, SelftestGlobals
from harness.helpers.selftest import check_refs

SPECS_KEY = pytest.StashKey[list[str]]()
NAMES_KEY = pytest.StashKey[dict[str, str]]()
BACKENDS_KEY = pytest.StashKey[dict[str, Backend]]()
ISSUES_KEY = pytest.StashKey[list[known_issues.KnownIssue]]()
QEMU_RUN_MODES = ("guest", "agent")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    compare_plugin.register(pluginmanager)  # --compare, --repro-dir
    group = parser.getgroup("iommufd", "iommufd-harness")
    group.addoption(
        "--backend", action="append", dest="iommufd_backends", metavar="SPEC", default=None,
        help=f"where the ioctls run: {', '.join(BACKEND_SPECS)} "
             "(repeatable; env IOMMUFD_BACKEND; default mock)")
    group.addoption(
        "--ktap", dest="iommufd_ktap", metavar="FILE", default=None,
        help="write a KTAP v1 report with kselftest case names (env IOMMUFD_KTAP)")
    group.addoption(
        "--kselftest-lineup", dest="iommufd_lineup", action="store_true",
        default=bool(os.environ.get("IOMMUFD_LINEUP")),
        help="after the run, run the kernel's C selftests in the same guest and line their "
             "results up with ours by case name (env IOMMUFD_LINEUP=1)")
    group.addoption(
        "--lineup-file", dest="iommufd_lineup_file", metavar="FILE", default=None,
        help="write the full lineup table (every case) to FILE")
    group.addoption(
        "--qemu-run", dest="iommufd_qemu_run", choices=QEMU_RUN_MODES, default=None,
        help="qemu backends: 'guest' runs the cases in pytest inside the guest (default), "
             "'agent' runs them here with every call crossing to the guest "
             "(env IOMMUFD_QEMU_RUN)")
    group.addoption(
        "--guest-backend", dest="iommufd_guest_backend", metavar="SPEC", default=None,
        help="the backend of the session inside the guest with --qemu-run=guest "
             "(default kernel: the guest's own /dev/iommu; env IOMMUFD_GUEST_BACKEND)")
    fail_nth_plugin.addoption(group)
    vfio_options.add_options(group)


def _specs(config: pytest.Config) -> list[str]:
    given: list[str] | None = config.getoption("iommufd_backends")
    raw = given if given else [os.environ.get("IOMMUFD_BACKEND", "") or "mock"]
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kselftest(fixture, variants): a ported case of the kernel fixture group")
    config.addinivalue_line(
        "markers", "requires(*features, reason=''): backend features the test needs")
    config.stash[SPECS_KEY] = _specs(config)
    config.stash[NAMES_KEY] = {}
    config.stash[BACKENDS_KEY] = {}
    config.stash[ISSUES_KEY] = known_issues.load()
    recorder = KtapRecorder(config)
    config.pluginmanager.register(recorder, "iommufd-ktap")
    fail_nth_plugin.register(config)

    def opened_backends() -> dict[str, Backend]:
        return config.stash[BACKENDS_KEY]

    lineup_report.register(config, recorder.outcomes, opened_backends)
    _register_guest_runner(config)


def _qemu_run_mode(config: pytest.Config) -> str:
    mode: str | None = config.getoption("iommufd_qemu_run")
    mode = mode or os.environ.get("IOMMUFD_QEMU_RUN") or "guest"
    if mode not in QEMU_RUN_MODES:
        raise pytest.UsageError(f"IOMMUFD_QEMU_RUN={mode!r}: expected one of "
                                f"{', '.join(QEMU_RUN_MODES)}")
    return mode


def _register_guest_runner(config: pytest.Config) -> None:
    """A lone qemu backend runs the cases in the guest (see harness.guestrun)."""
    specs = config.stash[SPECS_KEY]
    if len(specs) != 1 or not specs[0].startswith("qemu:"):
        return
    if _qemu_run_mode(config) != "guest":
        return
    from harness.guestrun.host import GuestRunner

    given: str | None = config.getoption("iommufd_guest_backend")
    guest_spec = given or os.environ.get("IOMMUFD_GUEST_BACKEND") or "kernel"
    try:
        parse_spec(guest_spec)
    except BackendError as error:
        raise pytest.UsageError(f"--guest-backend: {error}") from None

    def open_guest() -> Any:
        return session_backend(config, specs[0])

    runner = GuestRunner(config, open_guest, guest_spec)
    config.pluginmanager.register(runner, "iommufd-guestrun")


def pytest_unconfigure(config: pytest.Config) -> None:
    # Backends hold guests and fds: always released, also after an interrupted run.
    for backend in config.stash.get(BACKENDS_KEY, {}).values():
        backend.shutdown()


def pytest_report_header(config: pytest.Config) -> str:
    specs: list[str] = config.stash[SPECS_KEY]
    return "iommufd-harness backends: " + ", ".join(specs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    specs = metafunc.config.stash[SPECS_KEY]
    if "backend_spec" in metafunc.fixturenames and len(specs) > 1:
        metafunc.parametrize("backend_spec", specs, ids=specs, indirect=True, scope="session")
    marker = metafunc.definition.get_closest_marker(kselftest.MARKER)
    variants = marker.kwargs.get("variants") if marker is not None else None
    if variants:
        # Like TEST_F, every case of the group runs under every variant, whether or not
        # the function asks for the variant's fields.
        if "variant_name" not in metafunc.fixturenames:
            metafunc.fixturenames.append("variant_name")
        names = list(variants)
        metafunc.parametrize("variant_name", names, ids=names, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    names = config.stash[NAMES_KEY]
    multi = len(config.stash[SPECS_KEY]) > 1
    for item in items:
        name = kselftest.name_of(item)
        if name is None:
            continue
        if multi:
            callspec = getattr(item, "callspec", None)
            spec = callspec.params.get("backend_spec") if callspec is not None else None
            name = f"{name}@{spec}" if spec else name
        names[item.nodeid] = name
        item.user_properties.append(("kselftest_name", name))
        # So that `-k iommufd_ioas.mock_domain.area` selects the case.
        item.extra_keyword_matches.add(name)


# -- fixtures --------------------------------------------------------------

@pytest.fixture(scope="session")
def backend_spec(request: pytest.FixtureRequest) -> str:
    """The backend spec of this test (parametrized when several are given)."""
    param: str | None = getattr(request, "param", None)
    return param or request.config.stash[SPECS_KEY][0]


def session_backend(config: pytest.Config, spec: str) -> Backend:
    """The session's backend for ``spec``, opened on first use (and shut down at the
    end); one that cannot open ends the run with its one-line reason."""
    opened = config.stash[BACKENDS_KEY]
    if spec not in opened:
        try:
            candidate = open_backend(spec)
            candidate.__enter__()
        except BackendError as error:
            pytest.exit(f"iommufd-harness: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
        opened[spec] = candidate
    return opened[spec]


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, backend_spec: str) -> Backend:
    """The opened backend; a backend that cannot open ends the run with its one-line reason."""
    return session_backend(request.config, backend_spec)


@pytest.fixture(scope="session")
def kglobals(backend: Backend) -> SelftestGlobals:
    """PAGE_SIZE, HUGEPAGE_SIZE, BUFFER_SIZE and the shared ``buffer``/``mfd_buffer``."""
    return SelftestGlobals.create(backend)


def check_no_pins(backend: Backend, globals_: SelftestGlobals) -> None:
    """The kernel fixtures' teardown: no page of ``buffer`` may stay pinned."""
    with Iommufd.open(backend) as fd:
        try:
            check_refs(fd, globals_.buffer, globals_.buffer_size, 0)
        except OSError as error:
            raise AssertionError(f"pages of the shared buffer are still pinned: {error}") from None


@pytest.fixture
def iommufd(backend: Backend, kglobals: SelftestGlobals) -> Iterator[Iommufd]:
    """An open /dev/iommu; closed afterwards, then MD_CHECK_REFS(refs=0) over ``buffer``."""
    opened = Iommufd.open(backend)
    yield opened
    opened.close()
    if backend.has(Features.SELFTEST):
        check_no_pins(backend, kglobals)


@pytest.fixture
def variant_name(request: pytest.FixtureRequest) -> str:
    """The kernel variant name a ported case runs with."""
    name: str | None = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError(f"{request.node.nodeid}: no kselftest variants declared")
    return name


@pytest.fixture
def variant(request: pytest.FixtureRequest, variant_name: str) -> Any:
    """The kernel fixture variant's fields (the object declared for ``variant_name``)."""
    marker = request.node.get_closest_marker(kselftest.MARKER)
    assert marker is not None
    return marker.kwargs["variants"][variant_name]


@pytest.fixture(autouse=True)
def _iommufd_case(request: pytest.FixtureRequest) -> None:
    # Capability skips and known-issue xfails need the backend, so only ported or
    # feature-marked tests touch it.
    item = request.node
    # Module, class and function markers add up: each names features it needs.
    requires = list(item.iter_markers("requires"))
    name = kselftest.name_of(item)
    if not requires and name is None:
        return
    active: Backend = request.getfixturevalue("backend")
    for marker in reversed(requires):  # the outermost reason first
        missing = active.missing(*marker.args)
        if missing:
            why = marker.kwargs.get("reason", "")
            pytest.skip(f"backend {active.spec} lacks {', '.join(missing)}"
                        + (f": {why}" if why else ""))
    if name is not None:
        reason = known_issues.lookup(request.config.stash[ISSUES_KEY],
                                     active.kernel_release, name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))


@pytest.fixture(autouse=True)
def _kernel_splats(request: pytest.FixtureRequest) -> Iterator[None]:
    """A kernel WARN during a case, its teardown included, fails the case with the
    splat, as a WARN in the kernel's own run would taint it."""
    if "backend" not in request.fixturenames:
        yield
        return
    active: Backend = request.getfixturevalue("backend")
    active.take_splats()  # what came before this case is not its doing
    yield
    splats = active.take_splats()
    if splats:
        pytest.fail("kernel splat during the case: " + "; ".join(splats), pytrace=False)


# -- KTAP ------------------------------------------------------------------

def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        return report.longreprtext.strip().splitlines()[-1] if report.longreprtext else ""
    return ""


def _outcome(report: pytest.TestReport) -> str | None:
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


class KtapRecorder:
    """Collects each case's outcome under its kselftest name; writes the report at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, ktap.CaseResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = _outcome(report)
        if outcome is None:
            return
        previous = self.results.get(report.nodeid)
        if previous is not None and previous.outcome not in ("pass", "xpass"):
            return
        name = self.config.stash[NAMES_KEY].get(report.nodeid, report.nodeid)
        notes = tuple(str(v) for k, v in report.user_properties if k == ktap.DIAGNOSTIC)
        self.results[report.nodeid] = ktap.CaseResult(name, outcome, _reason(report), notes)

    def outcomes(self) -> dict[str, str]:
        """``{kselftest name: outcome}`` of the ported cases run so far."""
        names = self.config.stash[NAMES_KEY]
        return {r.name: r.outcome for nodeid, r in self.results.items() if nodeid in names}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption("iommufd_ktap") or os.environ.get("IOMMUFD_KTAP")
        if not path:
            return
        header = [f"backend {spec}: {b.describe()}"
                  for spec, b in self.config.stash[BACKENDS_KEY].items()]
        ktap.write(Path(path), list(self.results.values()), header)
