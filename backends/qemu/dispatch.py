"""The agent's side of the protocol: the served-backend
:class:`~backends.kernel.rpc.dispatch.Dispatcher` plus the agent's own ops
(``hello``, ``run``, ``stats``).

Pure request handling with no I/O of its own, so it is unit-tested in-process and
the agent's loop (:mod:`backends.qemu.agent`) only moves frames. Imports nothing
beyond the stdlib, cffi and backends.kernel.rpc: it runs in the guest initramfs,
where pexpect and the rest of the host side are absent.
"""

from __future__ import annotations

import importlib
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from backends.contract import Backend, BackendError
from backends.kernel.rpc import dispatch
from backends.kernel.rpc.protocol import AGENT_BUG, OK, PROTOCOL_VERSION, error_reply
from backends.qemu.jobio import JobIO

Reply = dispatch.Reply


class Dispatcher(dispatch.Dispatcher):
    """Runs wire requests on a backend made on first use by ``backend_factory``.

    When the factory fails (a guest kernel without /dev/iommu), the agent stays up:
    ``hello`` reports the reason, contract ops answer it as a BACKEND_ERROR, and
    ``run`` still works (the C selftests say it themselves).
    """

    def __init__(self, backend_factory: Callable[[], Backend]) -> None:
        super().__init__(backend_factory)
        self.requests = 0
        self.service_seconds = 0.0
        self._handlers.update({
            "hello": self._hello,
            "run": self._run,
            "stats": self._stats,
            "job": self._job,
            "put": self._put,
            "preload": self._preload,
        })
        #: the channel end of the current request, set by the agent's loop for ``job``
        self.job_io: JobIO | None = None

    def _hello(self, _args: tuple[Any, ...]) -> Reply:
        info: dict[str, Any] = {
            "version": PROTOCOL_VERSION,
            "kernel_release": os.uname().release,
            "machine": platform.machine(),
            "pid": os.getpid(),
            "features": [],
            "backend_error": None,
            "page_size": os.sysconf("SC_PAGE_SIZE"),
            "hugepage_size": 2 * 1024 * 1024,
        }
        try:
            backend = self.backend()
        except BackendError as exc:
            info["backend_error"] = str(exc)
        else:
            info["features"] = sorted(backend.features)
            info["page_size"] = backend.page_size
            info["hugepage_size"] = backend.hugepage_size
        return OK, info

    def _preload(self, args: tuple[Any, ...]) -> Reply:
        (modules,) = args
        started = time.monotonic()
        for name in modules:
            importlib.import_module(name)  # an ImportError becomes the error reply
        return OK, time.monotonic() - started

    def _run(self, args: tuple[Any, ...]) -> Reply:
        argv, timeout = args
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return error_reply(exc)
        try:
            output, _ = proc.communicate(timeout=timeout)
            return OK, (proc.returncode, output, False)
        except subprocess.TimeoutExpired:
            # The command's own children (a forking selftest) go with it.
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return OK, (proc.returncode, output, True)

    def account(self, seconds: float) -> None:
        """Count one request and the time the agent spent on it (read to reply written)."""
        self.requests += 1
        self.service_seconds += seconds

    def _stats(self, _args: tuple[Any, ...]) -> Reply:
        return OK, {"requests": self.requests, "service_seconds": self.service_seconds}

    def _put(self, args: tuple[Any, ...]) -> Reply:
        """``(path, data, mode)``: write a file in the guest (a program to run, a script)."""
        path, data, mode = args
        try:
            with open(str(path), "wb") as f:
                f.write(bytes(data))
            os.chmod(str(path), int(mode))
        except OSError as exc:
            return error_reply(exc)
        return OK, len(data)

    def _job(self, args: tuple[Any, ...]) -> Reply:
        """``(target, job_args)``: run ``target(io, *job_args)`` (``module:callable``)
        in a forked child that owns the channel until it returns; the reply is the
        child's exit status. A fork keeps the agent's state out of the job's way
        and the job's (a whole pytest session) out of the agent's."""
        target, job_args = args
        io = self.job_io
        if io is None:
            return AGENT_BUG, "job: no channel for the job's events"
        pid = os.fork()
        if pid == 0:  # the child: never returns into the agent's loop
            code = 70
            try:
                module, _, attr = str(target).partition(":")
                job = getattr(importlib.import_module(module), attr)
                code = int(job(io, *job_args))
            except BaseException:  # the host sees the exit status; the console the why
                traceback.print_exc(file=sys.stderr)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return OK, os.waitstatus_to_exitcode(status)
