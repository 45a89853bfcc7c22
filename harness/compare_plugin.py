"""``--iommufd-compare SPEC``: run every case on each backend and on SPEC in lockstep.

Each backend spec A becomes ``compare:A+SPEC`` (a :class:`backends.compare.CompareBackend`),
so the suite itself is unchanged: every contract call runs on both, and a case fails at
its first divergence that no known divergence explains. The run ends with one line per
pair, ``compare A vs B: N cases, M calls, D divergences (K known)``, and the divergences
are listed. ``--iommufd-repro-dir DIR`` writes a Python and a C reproducer of every failed case.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from backends import BackendError, parse_spec
from backends.compare import CompareBackend, Divergence
from harness import options
from harness.state import STATE


class ComparePlugin:
    """The ``--compare`` option, the per-case call logs and the summary lines."""

    def __init__(self) -> None:
        self.cases: dict[str, int] = {}
        self.repro_dir: Path | None = None
        self.written: list[Path] = []

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        other: str | None = options.value(config, options.COMPARE)
        if not other:
            return
        try:
            parse_spec(other)
        except BackendError as error:
            raise pytest.UsageError(f"--iommufd-compare: {error}") from None
        state = config.stash[STATE]
        state.specs[:] = [f"compare:{spec}+{other.strip()}" for spec in state.specs]
        given = options.value(config, options.REPRO_DIR)
        self.repro_dir = Path(given) if given else None

    def _pairs(self, config: pytest.Config) -> dict[str, CompareBackend]:
        state = config.stash.get(STATE, None)
        backends = state.backends if state is not None else {}
        return {spec: be for spec, be in backends.items() if isinstance(be, CompareBackend)}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        for pair in self._pairs(item.config).values():
            pair.begin_case()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        pair = funcargs.get("backend")
        if not isinstance(pair, CompareBackend):
            return
        ran = not report.skipped or hasattr(report, "wasxfail")
        if report.when == "call" and ran:  # a case that ran in lockstep
            self.cases[pair.spec] = self.cases.get(pair.spec, 0) + 1
        if not (report.failed and self.repro_dir):
            return
        if hasattr(report, "wasxfail"):
            return
        from harness.reproducer import write_reproducers

        error = call.excinfo.value if call.excinfo is not None else None
        divergence = error if isinstance(error, Divergence) else None
        name = item.user_properties and dict(item.user_properties).get("kselftest_name")
        stem = str(name or item.name).replace("/", "_").replace("@", "_at_")
        self.written += write_reproducers(pair, self.repro_dir, stem, divergence)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        pairs = self._pairs(terminalreporter.config)
        if not pairs:
            return
        write = terminalreporter.write_line
        terminalreporter.section("lockstep comparison")
        for spec, pair in pairs.items():
            for reported in pair.reported:
                write(f"{pair.primary.spec} vs {pair.secondary.spec}: {reported.line()}")
            write(summary_line(pair, self.cases.get(spec, 0)))
        for path in self.written:
            write(f"reproducer: {path}")


def summary_line(pair: CompareBackend, cases: int) -> str:
    """``compare A vs B: N cases, M calls, D divergences (K known)``."""
    return (f"compare {pair.primary.spec} vs {pair.secondary.spec}: {cases} cases, "
            f"{pair.calls} calls, {pair.divergences} divergences ({pair.known_count} known)")


def register(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the plugin (its options too: pytest_addoption is a historic hook)."""
    if pluginmanager.get_plugin("iommufd-compare") is None:
        pluginmanager.register(ComparePlugin(), "iommufd-compare")
