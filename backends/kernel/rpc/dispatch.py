"""The serving side: wire requests -> contract calls on a backend -> wire replies.

Pure request handling with no I/O of its own, so it is unit-tested in-process and a
server's loop (the guest agent, a forked child) only moves frames. The guest agent
extends :class:`Dispatcher` with its own ops (:mod:`backends.qemu.dispatch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cffi

from backends.calls import CONTRACT_CALLS, Link, apply_links
from backends.contract import Backend, BackendError
from backends.kernel.rpc.client import RemoteBackend
from backends.kernel.rpc.protocol import AGENT_BUG, OK, error_reply

_ffi = cffi.FFI()

Reply = tuple[int, Any]
Handler = Callable[[str, tuple[Any, ...]], Reply]


class Dispatcher:
    """Runs wire requests on a backend made on first use by ``backend_factory``.

    When the factory fails (a kernel without /dev/iommu), the server stays up:
    contract ops answer the reason as a BACKEND_ERROR.

    Children from ``fork_child`` are kept by handle. A child that is itself a
    :class:`RemoteBackend` (a forked process) gets ``child_call`` requests as they
    came, unparsed, so ioctl bytes and errno data pass through exactly; any other
    backend is served by a nested Dispatcher.
    """

    def __init__(self, backend_factory: Callable[[], Backend]) -> None:
        self._factory = backend_factory
        self._backend: Backend | None = None
        self._backend_error: str | None = None
        self._children: dict[int, tuple[Backend, Handler]] = {}
        self._next_handle = 1
        self._handlers: dict[str, Callable[[tuple[Any, ...]], Reply]] = {
            "ioctl": self._ioctl,
            "batch": self._batch,
            "fork_child": self._fork_child,
            "child_call": self._child_call,
            "child_exit": self._child_exit,
            "exit": self._exit,
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
        """End every child, then shut the backend down (closes every fd it opened)."""
        for handle in sorted(self._children):
            try:
                self._end_child(handle)
            except Exception:  # best effort: the next child must still end
                pass
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
        # Each ioctl's argument bytes after it ran (None for other calls), for links.
        outputs: list[bytes | None] = []
        for op, call_args in calls:
            if op not in CONTRACT_CALLS:  # batches are of contract calls only
                reply: Reply = (AGENT_BUG, f"{op!r} cannot be batched")
            elif op == "ioctl" and len(call_args) > 3:
                fd, request, arg, links = call_args
                try:
                    patched = bytearray(arg)
                    apply_links(patched, [Link(*link) for link in links], outputs)
                except (TypeError, ValueError) as exc:
                    reply = error_reply(exc)
                else:
                    reply = self.handle(op, (fd, request, bytes(patched)))
            else:
                reply = self.handle(op, call_args)
            outputs.append(_ioctl_output(op, reply))
            replies.append(reply)
            if stop_on_error and reply[0] != OK:
                break
        return OK, replies

    def _exit(self, _args: tuple[Any, ...]) -> Reply:
        self.close()
        return OK, None

    # -- children --------------------------------------------------------
    def _fork_child(self, _args: tuple[Any, ...]) -> Reply:
        child = self.backend().fork_child()
        if isinstance(child, RemoteBackend):
            handler: Handler = child.request
        else:
            handler = Dispatcher(lambda: child).handle
        handle = self._next_handle
        self._next_handle += 1
        self._children[handle] = (child, handler)
        return OK, handle

    def _child(self, handle: int) -> tuple[Backend, Handler]:
        found = self._children.get(handle)
        if found is None:
            raise BackendError(f"no child process with handle {handle} (it exited, "
                               f"or was forked by an earlier server)")
        return found

    def _child_call(self, args: tuple[Any, ...]) -> Reply:
        handle, op, call_args = args
        _child, handler = self._child(handle)
        if op == "exit":  # it would stop serving yet stay in the table, unreaped
            return AGENT_BUG, "a child is ended with child_exit, not exit"
        return handler(op, tuple(call_args))

    def _child_exit(self, args: tuple[Any, ...]) -> Reply:
        (handle,) = args
        self._child(handle)
        return OK, self._end_child(handle)

    def _end_child(self, handle: int) -> int | None:
        """Shut a child down and forget it; its wait status where it has one."""
        child, _handler = self._children.pop(handle)
        child.shutdown()
        status: int | None = getattr(child, "exit_status", None)
        return status


def _ioctl_output(op: str, reply: Reply) -> bytes | None:
    # An ioctl's reply carries its argument bytes: (ret, bytes) on success,
    # (errno, strerror, bytes) on failure.
    status, payload = reply
    if op != "ioctl" or not isinstance(payload, tuple):
        return None
    data = payload[1] if status == OK else payload[-1]
    return data if isinstance(data, bytes) else None
