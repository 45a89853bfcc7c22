"""The pytest plugin: backends, kselftest names, capability markers, KTAP, known issues.

Options (group ``iommufd``), each with an environment fallback:

``--backend SPEC``   where the ioctls run (``IOMMUFD_BACKEND``, default ``mock``); give it
                     more than once, or comma-separated, to run every case on each backend.
``--ktap FILE``      write a KTAP v1 report with kselftest names and the ``# Totals:`` line
                     (``IOMMUFD_KTAP``).

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
from harness import known_issues, kselftest, ktap, lineup_report, vfio_options
from harness.helpers.core import Iommufd, SelftestGlobals
from harness.helpers.selftest import check_refs

SPECS_KEY = pytest.StashKey[list[str]]()
NAMES_KEY = pytest.StashKey[dict[str, str]]()
BACKENDS_KEY = pytest.StashKey[dict[str, Backend]]()
ISSUES_KEY = pytest.StashKey[list[known_issues.KnownIssue]]()


def pytest_addoption(parser: pytest.Parser) -> None:
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

    def opened_backends() -> dict[str, Backend]:
        return config.stash[BACKENDS_KEY]

    lineup_report.register(config, recorder.outcomes, opened_backends)


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


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, backend_spec: str) -> Backend:
    """The opened backend; a backend that cannot open ends the run with its one-line reason."""
    opened = request.config.stash[BACKENDS_KEY]
    if backend_spec not in opened:
        try:
            candidate = open_backend(backend_spec)
            candidate.__enter__()
        except BackendError as error:
            pytest.exit(f"iommufd-harness: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
        opened[backend_spec] = candidate
    return opened[backend_spec]


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
        self.results[report.nodeid] = ktap.CaseResult(name, outcome, _reason(report))

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
