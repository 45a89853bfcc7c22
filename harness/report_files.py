"""The report files of an iommufd session (KTAP, KCIDB): checked before, written after.

Paths are checked before any case runs, so a typo costs one line, not a whole run. The
files are written once, by the process that saw every result: the pytest process, or
under pytest-xdist the controller (never the workers).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import kcidb, ktap, options
from harness.results import ResultCollector


def path_problem(path: Path) -> str | None:
    """Why a report cannot be written at ``path``, or None when it can."""
    parent = path.parent
    if path.is_dir():
        return f"{path} is a directory"
    if not parent.exists():
        return f"its directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"its directory {parent} is not writable"
    return None


def check(config: pytest.Config) -> str | None:
    """A one-line usage error for the first report path that cannot be written."""
    for option in options.REPORT_FILES:
        raw = options.value(config, option)
        if not raw:
            continue
        problem = path_problem(Path(raw))
        if problem:
            return f"{option.flag} {raw}: cannot write the report: {problem}"
    return None


class ReportWriter:
    """Writes the KTAP and KCIDB files at the end of the session."""

    def __init__(self, config: pytest.Config, collector: ResultCollector) -> None:
        self.config = config
        self.collector = collector
        self.started = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.collector.is_worker:
            return
        records = self.collector.ordered()
        backends = self.collector.backends()
        ktap_path = options.value(self.config, options.KTAP)
        if ktap_path:
            header = [f"backend {b.spec}: {b.description}" for b in backends]
            self._write(session, "KTAP", ktap_path,
                        lambda p: ktap.write(p, [r.result for r in records], header))
        kcidb_path = options.value(self.config, options.KCIDB)
        if kcidb_path:
            document = kcidb.build(records, backends, self.started)
            self._write(session, "KCIDB", kcidb_path, lambda p: kcidb.write(p, document))

    @staticmethod
    def _write(session: pytest.Session, what: str, raw: str,
               writer: Callable[[Path], None]) -> None:
        try:
            writer(Path(raw))
        except OSError as error:
            print(f"iommufd-harness: cannot write the {what} report {raw}: "
                  f"{error.strerror or error}", file=sys.stderr)
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
