"""The agent's side of the protocol: the served-backend
:class:`~backends.kernel.rpc.dispatch.Dispatcher` plus the agent's own ops
(``hello``, ``run``, ``stats``).

Pure request handling with no I/O of its own, so it is unit-tested in-process and
the agent's loop (:mod:`backends.qemu.agent`) only moves frames. Imports nothing
beyond the stdlib, cffi and backends.kernel.rpc: it runs in the guest initramfs,
where pexpect and the rest of the host side are absent.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from backends.contract import Backend, BackendError
from backends.kernel.rpc import dispatch
from backends.kernel.rpc.protocol import OK, PROTOCOL_VERSION, error_reply

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
        })

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
