"""``--iommufd-kselftest-lineup``: run the kernel's C selftests in the same guest after the suite
and line their results up with ours by kselftest name, in the terminal summary.

Only backends that can run programs where the ioctls ran (``run_selftests``, the qemu
backend) take part; for others the summary says why there is no lineup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness import kselftest_tap, lineup, options


class LineupReporter:
    """Runs the C suites at the end of the session and prints the comparison."""

    def __init__(self, results: Callable[[], Mapping[str, str]],
                 backends: Callable[[], Mapping[str, Any]], out_file: str | None) -> None:
        self._results = results
        self._backends = backends
        self._out_file = out_file
        #: wall seconds of the C suites per backend spec (read by benchmarks/bench_qemu.py)
        self.c_seconds: dict[str, float] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("kernel C selftests, same guest")
        for spec, backend in self._backends().items():
            runner = getattr(backend, "run_selftests", None)
            if runner is None:
                write(f"{spec}: no lineup (this backend cannot run the C selftests)")
                continue
            write(f"{spec}: running the C selftests in the guest ...")
            start = time.monotonic()
            run = kselftest_tap.parse(runner())
            seconds = time.monotonic() - start
            self.c_seconds[spec] = seconds
            ours = {name.split("@", 1)[0]: outcome
                    for name, outcome in self._results().items()
                    if name.endswith(f"@{spec}") or "@" not in name}
            table = lineup.line_up(ours, run.outcomes())
            write(f"{spec}: C suites, {len(run.cases)} cases in {seconds:.1f} s")
            for totals in run.totals or [run.counts()]:
                write(f"{spec}: C totals " + " ".join(f"{k}:{v}" for k, v in totals.items()))
            shown = lineup.format_lineup(
                lineup.Lineup([r for r in table.rows if r.status != lineup.ONLY_THEIRS]),
                ours_label="python", theirs_label="C", show_agreements=False)
            for line in shown.splitlines():
                write(line)
            write(f"{spec}: {table.count(lineup.AGREE)} agree, {table.count(lineup.DIFFER)} "
                  f"differ, {table.count(lineup.ONLY_THEIRS)} C cases not ported")
            if self._out_file:
                path = Path(self._out_file)
                full = lineup.format_lineup(table, ours_label="python", theirs_label="C")
                path.write_text(f"# {spec}\n{full}\n")
                write(f"{spec}: full lineup written to {path}")


def register(config: pytest.Config, results: Callable[[], Mapping[str, str]],
             backends: Callable[[], Mapping[str, Any]]) -> None:
    """Register the reporter when ``--iommufd-kselftest-lineup`` is given."""
    if options.value(config, options.LINEUP):
        reporter = LineupReporter(results, backends, options.value(config, options.LINEUP_FILE))
        config.pluginmanager.register(reporter, "iommufd-lineup")
