"""The agent's side of the protocol: wire requests -> contract calls -> wire replies.

Pure request handling with no I/O of its own, so it is unit-tested in-process
and the agent's loop (:mod:`backends.qemu.agent`) only moves frames. Imports
nothing beyond the stdlib, cffi and the contract: it runs in the guest
initramfs, where pexpect and the rest of the host side are absent.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import cffi

from backends.contract import Backend, BackendError
from backends.qemu import protocol
from backends.qemu.calls import CONTRACT_CALLS
from backends.qemu.protocol import AGENT_BUG, OK, PROTOCOL_VERSION, error_reply

_ffi = cffi.FFI()

Reply = tuple[int, Any]


class Dispatcher:
    """Runs wire requests on a backend made on first use by ``backend_factory``.

    When the factory fails (a guest kernel without /dev/iommu), the agent
    stays up: ``hello`` reports the reason, contract ops answer it as a
    BACKEND_ERROR, and ``run`` still works (the C selftests say it themselves).
    """

    def __init__(self, backend_factory: Callable[[], Backend]) -> None:
        self._factory = backend_factory
        self._backend: Backend | None = None
        self._backend_error: str | None = None
        self.requests = 0
        self.service_seconds = 0.0
        self._handlers: dict[str, Callable[[tuple[Any, ...]], Reply]] = {
            "hello": self._hello,
            "batch": self._batch,
            "run": self._run,
            "exit": self._exit,
            "stats": self._stats,
            "ioctl": self._ioctl,
        }

    # -- the backend -----------------------------------------------------
    def backend(self) -> Backend:
        """The backend, made on first use; BackendError if it cannot be."""
        if self._backend is None:
            if self._backend_error is not None:
                raise BackendError(self._backend_error)
            try:
                self._backend = self._factory()
            except BackendError as exc:
                self._backend_error = str(exc)
                raise
        return self._backend

    def close(self) -> None:
        """Shut the backend down (closes every fd the host opened)."""
        if self._backend is not None:
            self._backend.shutdown()
            self._backend = None

    # -- requests --------------------------------------------------------
    def handle(self, op: str, args: tuple[Any, ...]) -> Reply:
        """One request -> ``(status, payload)``; never raises."""
        try:
            handler = self._handlers.get(op)
            if handler is not None:
                return handler(args)
            call = CONTRACT_CALLS.get(op)
            if call is None:
                return AGENT_BUG, f"unknown op {op!r}"
            return OK, call(self.backend(), *args)
        except Exception as exc:
            return error_reply(exc)

    def _ioctl(self, args: tuple[Any, ...]) -> Reply:
        fd, request, arg = args
        backend = self.backend()
        if not isinstance(arg, bytes):
            return OK, (backend.ioctl(fd, request, arg), None)
        buf = bytearray(arg)
        # from_buffer: the kernel reads and writes the bytearray itself, no copy back.
        try:
            ret = backend.ioctl(fd, request, _ffi.from_buffer("char[]", buf))
        except OSError as exc:
            # The kernel may have written outputs before failing: send them too.
            return error_reply(exc, bytes(buf))
        return OK, (ret, bytes(buf))

    def _batch(self, args: tuple[Any, ...]) -> Reply:
        calls, stop_on_error = args
        replies: list[Reply] = []
        for op, call_args in calls:
            if op in protocol.AGENT_OPS:
                reply: Reply = (AGENT_BUG, f"{op!r} cannot be batched")
            else:
                reply = self.handle(op, call_args)
            replies.append(reply)
            if stop_on_error and reply[0] != OK:
                break
        return OK, replies

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

    def _exit(self, _args: tuple[Any, ...]) -> Reply:
        self.close()
        return OK, None
