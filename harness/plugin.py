"""The pytest plugin (entry point ``iommufd``): inert until a session runs iommufd scenarios.

Installing iommufd-harness loads this module into every pytest run in the environment,
so it registers only its ``--iommufd-*`` options (:mod:`harness.options`) and imports
nothing heavy. The session becomes an iommufd session, and the backends, fixtures,
markers, header line and reports of :mod:`harness.session` wake up, when

* an ``--iommufd-*`` option is given (``iommufd-harness run`` passes ``--iommufd``), or
* collection meets an iommufd scenario: a test marked ``iommufd_kselftest`` (ported
  cases, :func:`harness.kselftest.fixture`) or ``iommufd_requires``, or one that asks
  for a fixture of the plugin (``iommufd``, ``backend``, ``kglobals``, ...) that nothing
  else in the project provides, or
* under pytest-xdist, the controller receives a report from a worker that woke up.

Until then it reads no environment variable, adds no marker, fixture or header line,
and another project's own ``--backend`` option or ``requires`` marker are its own.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from harness import marks, options

#: the fixtures harness.fixtures provides (asking for one makes a test a scenario)
PLUGIN_FIXTURES = frozenset(
    {"backend", "backend_spec", "kglobals", "iommufd", "variant", "variant_name"})
SCENARIO_MARKERS = frozenset({marks.KSELFTEST, marks.REQUIRES})


class Gate:
    """Whether this session is an iommufd session yet; wakes the plugin up once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.active = False
        #: an xdist controller's collection order, kept in case a worker's report wakes
        #: the plugin up after collection (then it is too late to ask for it)
        self.collected: list[str] = []

    def activate(self, explicit: bool, session: pytest.Session | None = None) -> None:
        """Import and register the plugin proper (:func:`harness.session.activate`);
        ``session``: woken while it collects (its fixtures so far are the project's)."""
        if self.active:
            return
        self.active = True
        from harness import session as plugin_session  # the heavy part: backends, cffi, reports

        plugin_session.activate(self.config, explicit, session)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # An xdist controller collects nothing: a report from a worker that woke up
        # tells it the session runs iommufd scenarios.
        if self.active or getattr(report, "iommufd_backend", None) is None:
            return
        self.activate(explicit=False)
        from harness import session

        session.first_report(self.config, report, self.collected)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        if not self.active and not self.collected:
            self.collected = list(ids)


GATE = pytest.StashKey[Gate]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.register(parser)


#: This distribution's packages that hold no assertion helpers for scenarios (those are in
#: harness.helpers). pytest rewrites the asserts of every package of a plugin's
#: distribution; through its rewriter the model and the backends took half a second of
#: every fresh run where bytecode is not cached (PYTHONDONTWRITEBYTECODE).
NOT_REWRITTEN = frozenset({"backends", "uapi_headers", "vm_images"})


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Nothing of these packages is imported yet. The set is pytest's own (not public):
    # where it is missing, everything stays rewritten, as before.
    marked = getattr(early_config.pluginmanager.rewrite_hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.difference_update(NOT_REWRITTEN)


def pytest_configure(config: pytest.Config) -> None:
    gate = Gate(config)
    config.stash[GATE] = gate
    config.pluginmanager.register(gate, "iommufd-gate")
    if options.given(config):
        gate.activate(explicit=True)


def _is_scenario(collector: pytest.Collector, name: str, obj: object) -> bool:
    if not (inspect.isfunction(obj) and collector.funcnamefilter(name)):  # type: ignore[attr-defined]
        return False
    own = getattr(obj, "pytestmark", [])
    found = {m.name for m in collector.iter_markers()} | {m.name for m in own}
    if found & SCENARIO_MARKERS:
        return True
    wanted = PLUGIN_FIXTURES & inspect.signature(obj).parameters.keys()
    manager: Any = collector.session._fixturemanager
    return any(manager.getfixturedefs(n, collector) is None for n in wanted)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    gate = collector.config.stash.get(GATE, None)
    if gate is not None and not gate.active and _is_scenario(collector, name, obj):
        gate.activate(explicit=False, session=collector.session)
