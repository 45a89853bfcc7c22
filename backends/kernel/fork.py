"""fork(2) for a backend: the child serves the contract over a socketpair.

:func:`fork_backend` forks this process. The child makes its own backend from the
state it inherited (the caller's ``adopt``: same fds, same memory, nothing
re-opened that the contract can see), then answers requests on its end of a
socketpair with a :class:`~backends.kernel.rpc.dispatch.Dispatcher` until the
parent sends ``exit`` or goes away. The parent gets a :class:`ForkedChild`, a
:class:`~backends.kernel.rpc.client.RemoteBackend` whose calls go over the
socketpair; its :meth:`~ForkedChild.shutdown` makes the child exit and reaps it.

The child never returns into the caller's code: it leaves through ``os._exit``
whatever happens, so no pytest hook, atexit handler or ``finally`` of the parent
runs twice, and no stdio buffer of the parent is flushed twice; the parent's
Python signal handlers (the qemu backend's QEMU cleanup) are reset, so a signal
to the child cannot act on the parent's behalf. It asks the kernel for SIGKILL
when the parent dies (PR_SET_PDEATHSIG), so a killed test run (or a crashed guest
agent) leaves no child behind. PR_SET_PDEATHSIG follows the forking *thread*:
fork from a thread that outlives the child (the main thread, the agent's only one).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Hashable
from typing import Any, NoReturn

from backends.contract import Backend, BackendError
from backends.kernel import libc
from backends.kernel.rpc.channel import Channel, ChannelClosed
from backends.kernel.rpc.client import RemoteBackend
from backends.kernel.rpc.dispatch import Dispatcher
from backends.kernel.rpc.protocol import FrameReader, ProtocolError, encode

_READ_SIZE = 1 << 18
#: the child's exit status when its server failed (EX_SOFTWARE)
_CHILD_BUG = 70
#: how long shutdown() waits for the child's answer to ``exit`` before SIGKILL
EXIT_TIMEOUT = 60.0


def fork_backend(parent: Backend, adopt: Callable[[], Backend]) -> ForkedChild:
    """fork(2); the child serves ``adopt()`` (called in the child), the parent gets
    the :class:`ForkedChild` that talks to it."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent_pid = os.getpid()
    # Whatever the parent has buffered would otherwise be written twice.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        parent_end.close()
        child_end.close()
        raise
    if pid == 0:
        _child_main(parent_end, child_end, parent_pid, adopt)
    child_end.close()
    return ForkedChild(parent, pid, parent_end)


def _child_main(parent_end: socket.socket, child_end: socket.socket, parent_pid: int,
                adopt: Callable[[], Backend]) -> NoReturn:
    """The child's whole life: serve, then ``os._exit`` (never return, never raise)."""
    status = _CHILD_BUG
    try:
        parent_end.close()
        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the prctl
            os._exit(_CHILD_BUG)
        _reset_signal_handlers()
        serve_stream(child_end, Dispatcher(adopt))
        status = 0
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(status)


def _reset_signal_handlers() -> None:
    """Python handlers back to the default action: they are the parent's code."""
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    # Ctrl-C is the parent's business: the child ends when told to, or with the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_stream(sock: socket.socket, dispatcher: Dispatcher) -> None:
    """Answer requests on a blocking stream socket until ``exit`` or the peer's EOF.

    Replies carry no splat: the process that forked this one watches the kernel log
    (the guest agent does), a forked child does not.
    """
    fd = sock.fileno()
    reader = FrameReader()
    try:
        while True:
            data = os.read(fd, _READ_SIZE)
            if not data:
                return
            reader.feed(data)
            while True:
                complete, message = reader.next()
                if not complete:
                    break
                seq, op, args = message
                status, payload = dispatcher.handle(op, args)
                sock.sendall(encode((seq, status, payload, None)))
                if op == "exit":
                    return
    finally:
        dispatcher.close()


def wait_status_text(status: int) -> str:
    """``exit status 1`` / ``killed by SIGKILL`` for a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class ForkedChild(RemoteBackend):
    """The parent's handle on a forked child: the contract, run in the child."""

    def __init__(self, parent: Backend, pid: int, sock: socket.socket) -> None:
        self.spec = parent.spec
        self.features = parent.features
        self.page_size = parent.page_size
        self.hugepage_size = parent.hugepage_size
        self.pid = pid
        #: the waitpid status once reaped (0: exit(0))
        self.exit_status: int | None = None
        self._release = parent.kernel_release
        self._channel = Channel(sock)
        self._closed = False

    # -- the transport -----------------------------------------------------
    def request(self, op: str, args: tuple[Any, ...]) -> tuple[int, Any]:
        """One request to the child (blocking: the child answers or dies)."""
        if self._closed:
            raise BackendError(f"{self.spec}: forked child {self.pid} has been shut down")
        try:
            status, payload, _splat = self._channel.call(op, args, None)
        except (ChannelClosed, ProtocolError) as exc:
            self._reap()
            how = wait_status_text(self.exit_status) if self.exit_status is not None else ""
            raise BackendError(f"{self.spec}: forked child {self.pid} is gone "
                               f"({how or exc}) during {op}") from None
        return status, payload

    @property
    def session(self) -> Hashable:
        """This child while it runs."""
        return None if self._closed else ("fork", self.pid)

    # -- lifecycle -------------------------------------------------------
    def shutdown(self) -> None:
        """The child exits (``exit``: it answers, releases and ``_exit(0)``s) and is
        reaped; once this returns its mm is gone. Idempotent."""
        if self._closed:
            return
        try:
            self._channel.call("exit", (), EXIT_TIMEOUT)
        except (ChannelClosed, ProtocolError, OSError):
            # Dead already (reaping tells how), or hung: then waitpid would be too.
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()

    def _reap(self) -> None:
        self._closed = True
        self._channel.close()
        if self.exit_status is None:
            _pid, self.exit_status = os.waitpid(self.pid, 0)

    def describe(self) -> str:
        """``kernel forked child 1234``."""
        return f"{self.spec} forked child {self.pid}"

    @property
    def kernel_release(self) -> str:
        """The parent's kernel (a child runs on the same one)."""
        return self._release
