"""The guest's end: a pytest session on the guest's ``kernel`` backend, driven by the host.

:func:`run_session` is the agent job (see :mod:`backends.qemu.jobio`). It writes the
test files the host shipped into the directory the host named (the host's rootdir,
mirrored, so node IDs match), collects the host's cases and
tells the host which it has (``("ready", nodeids, collect_errors)``), then runs one
case per ``("run", nodeid, next_nodeid)`` command, sending each of its reports
(``("report", serialised report)``, with the kernel splat the case logged, if any)
and ``("done", nodeid)``, until ``("stop",)``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from backends.qemu.jobio import JobIO
from harness.guestrun.pycache import SOURCE_MTIME

#: pytest's own output in the guest (collection and internal errors); never the console
LOG_NAME = "pytest.log"
_LOG_TAIL = 4000
#: built-in plugins whose work the host does (its reports, cache, stepwise): each
#: costs the guest's session a registration at a tenth of the host's speed
_UNUSED_PLUGINS = [arg for name in ("cacheprovider", "junitxml", "pastebin", "stepwise",
                                    "doctest", "setuponly", "setupplan")
                   for arg in ("-p", f"no:{name}")]


class Worker:
    """The pytest plugin that turns the guest's session into the host's worker."""

    def __init__(self, io: JobIO, nodeids: list[str]) -> None:
        self.io = io
        self.wanted = set(nodeids)
        self.collect_errors: list[tuple[str, str]] = []
        self.ready = False
        self.kmsg: Any = None
        self.config: pytest.Config | None = None
        self.started = time.monotonic()

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        if self.io.kmsg_path is None:
            return  # the agent watches no kernel log; the host's console watcher still does
        try:
            from backends.qemu.kmsg import KmsgMonitor
            self.kmsg = KmsgMonitor(self.io.kmsg_path)
        except OSError:
            self.kmsg = None

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.kmsg is not None:
            self.kmsg.close()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append((report.nodeid, report.longreprtext))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # Whole files were collected; the host decides which cases run, and when.
        items[:] = [item for item in items if item.nodeid in self.wanted]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {item.nodeid: item for item in session.items}
        self.io.emit(("ready", sorted(items), self.collect_errors))
        self.ready = True
        clock = time.monotonic
        ran, first, last = 0, 0.0, 0.0
        while True:
            command = self.io.receive()
            if command is None or command[0] != "run":
                break  # ("stop",), or the host is gone
            _, nodeid, next_nodeid = command
            item = items[nodeid]
            nextitem = items.get(next_nodeid) if next_nodeid else None
            started = clock()
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            last = clock()
            first = first if ran else started
            ran += 1
            self.io.emit(("done", nodeid))
        # The guest's own clock, for benchmarks: the cases' span without the host's
        # share of each round (reading the command, replaying the reports).
        self.io.emit(("stats", {"cases": ran, "cases_seconds": last - first if ran else 0.0,
                                "since_start": clock() - self.started}))
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        assert self.config is not None
        # The splat a case's phase logged travels with that phase's report: exact
        # attribution, where the console is read asynchronously on the host.
        splat = self.kmsg.poll() if self.kmsg is not None else None
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.io.emit(("report", data), splat)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(root, ignore_errors=True)  # an earlier session's, in this guest
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if path.suffix == ".py":  # the mtime the host's rewritten bytecode expects
            os.utime(path, (SOURCE_MTIME, SOURCE_MTIME))
    # An empty ini file pins the rootdir here and keeps any shipped config's addopts out.
    (root / "pytest.ini").write_text("[pytest]\n")


def run_session(io: JobIO, files: dict[str, bytes], args: list[str],
                nodeids: list[str], root_dir: str) -> int:
    """The agent job: run the host's cases ``nodeids`` from ``files`` (paths relative
    to the host's rootdir, written under ``root_dir``, the name the host compiled them
    for) with the pytest ``args``; the session's exit status."""
    root = Path(root_dir)
    _write_tree(root, files)
    os.chdir(root)
    log = root / LOG_NAME
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    worker = Worker(io, nodeids)
    paths = sorted({nodeid.split("::", 1)[0] for nodeid in nodeids})
    # The plugin by module name, and no entry-point plugins (so not the plugin's own
    # entry point either, where this worker runs on a host in the project's tests): the
    # host runs those that shape a run (xdist, timeout), and scanning every installed
    # distribution for them costs the guest's session a noticeable share of its start.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    argv = ["-c", "pytest.ini", "--rootdir", str(root), *_UNUSED_PLUGINS,
            "-p", "harness.plugin", *args, *paths]
    code = int(pytest.main(argv, plugins=[worker]))
    if not worker.ready:
        # pytest stopped before running anything (a usage or internal error): the
        # host waits for this event, so say why.
        os.fsync(1)
        tail = log.read_text(errors="replace")[-_LOG_TAIL:]
        io.emit(("failed", code, tail))
    return code
