"""One boot of a guest: the QEMU process, its console watcher, the agent channel.

A :class:`Guest` turns every way a call can go wrong into one exception:
:class:`~backends.qemu.errors.GuestCrashed` when the kernel splats (seen on the
console), the call hangs (no reply within its watchdog timeout) or QEMU exits;
the guest is then dead and killed, and the backend boots another.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.kernel.rpc.channel import Channel, ChannelClosed, ChannelTimeout
from backends.qemu import process
from backends.qemu.console import ConsoleWatcher
from backends.qemu.errors import GuestCrashed, GuestError
from backends.qemu.protocol import OK, PROTOCOL_VERSION, ProtocolError
from backends.qemu.splats import Splat, classify

#: after the channel breaks: how long the console gets to show why
_SETTLE = 3.0
_CONNECT_POLL = 0.01


class Guest:
    """A booted guest whose agent answers on ``socket_path``.

    ``argv`` starts QEMU (or, in tests, a stand-in that serves the same socket
    and prints a console); ``call_timeout`` is the per-call watchdog.
    """

    def __init__(self, argv: Sequence[str], socket_path: Path, console_log: Path, *,
                 call_timeout: float, boot_timeout: float) -> None:
        self.argv = list(argv)
        self.socket_path = socket_path
        self.console_log = console_log
        self.call_timeout = call_timeout
        self.boot_timeout = boot_timeout
        self.info: dict[str, Any] = {}
        self.alive = False
        self.exit_status: int | None = None
        self._child: Any = None
        self._watcher: ConsoleWatcher | None = None
        self._channel: Channel | None = None
        self._streaming = False

    # -- boot ------------------------------------------------------------
    def boot(self) -> dict[str, Any]:
        """Start QEMU, connect to the agent and greet it; returns the hello info."""
        started = time.monotonic()
        deadline = started + self.boot_timeout
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._child = process.spawn(self.argv)
        self._watcher = ConsoleWatcher(self._child, self.console_log, on_splat=self._on_splat)
        self._watcher.start()
        self.alive = True
        try:
            self._channel = Channel(self._connect(deadline))
            status, info, _splat = self._channel.call(
                "hello", (), max(0.1, deadline - time.monotonic()))
        except (ChannelTimeout, ChannelClosed, ProtocolError, GuestError) as exc:
            tail = self._watcher.tail()
            self.kill()
            raise GuestError(f"guest did not come up within {self.boot_timeout:.0f} s "
                             f"({exc}); console log: {self.console_log}\n{tail}") from None
        if status != OK:
            self.kill()
            raise GuestError(f"agent hello failed: {info}")
        if info.get("version") != PROTOCOL_VERSION:
            # The image is keyed on the agent's sources, so this is a stale or foreign one.
            self.kill()
            raise GuestError(f"the guest agent speaks protocol {info.get('version')}, the "
                             f"host {PROTOCOL_VERSION}: rebuild the guest image")
        if self._watcher.splat_started.is_set():
            raise self._crashed(self._watcher.wait_splat(_SETTLE), "boot", "")
        self.info = dict(info)
        self.info["boot_seconds"] = time.monotonic() - started
        return self.info

    def _connect(self, deadline: float) -> socket.socket:
        """Connect to QEMU's chardev socket once QEMU has made it."""
        assert self._watcher is not None
        path = str(self.socket_path)
        while True:
            if self._watcher.eof.is_set():
                raise GuestError("QEMU exited before the agent socket appeared")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            if time.monotonic() > deadline:
                raise GuestError(f"no agent socket at {path}")
            time.sleep(_CONNECT_POLL)

    # -- calls -----------------------------------------------------------
    def call(self, op: str, args: tuple[Any, ...], timeout: float | None = None) -> tuple[int, Any]:
        """One request; GuestCrashed if the guest splats, hangs or exits meanwhile."""
        seq = self._start(op, args)
        limit = self.call_timeout if timeout is None else timeout
        final, status, payload, logged = self._receive(seq, op, limit)
        if not final:
            self._streaming = False
            raise self._crashed(None, op, f"unexpected event frame for {op}", kind="exited")
        if logged is not None:
            raise self.crash_logged(logged, op)
        assert self._watcher is not None
        if self._watcher.splat_started.is_set():  # a splat on the console since the call began
            raise self._crashed(self._watcher.wait_splat(_SETTLE), op, "")
        return status, payload

    # -- streaming jobs ----------------------------------------------------
    def job_start(self, op: str, args: tuple[Any, ...]) -> int:
        """Send a streaming request; returns its seq for :meth:`job_receive`.

        Until its final reply the job owns the channel: no :meth:`call` meanwhile.
        The job attributes kernel splats itself (its events carry them), so a splat
        on the console does not cut the channel; a panic ends it (QEMU exits).
        """
        seq = self._start(op, args)
        self._streaming = True
        return seq

    def job_send(self, message: Any) -> None:
        """A command frame to the running job."""
        if self._channel is None:
            raise GuestError("guest is not running")
        try:
            self._channel.send(message)
        except ChannelClosed as exc:
            raise self._lost("job", exc) from None

    def job_receive(self, seq: int, timeout: float | None,
                    what: str = "job") -> tuple[bool, int, Any, str | None]:
        """The job's next frame: ``(final, status, payload, splat)``; GuestCrashed
        if the guest hangs (nothing within ``timeout``) or exits meanwhile."""
        final, status, payload, splat = self._receive(seq, what, timeout)
        if final:
            self._streaming = False
        return final, status, payload, splat

    def crash_logged(self, logged: str, op: str) -> GuestCrashed:
        """Kill the guest for the splat the kernel logged during ``op`` (the line the
        agent saw in /dev/kmsg); the console's excerpt of it, once it has printed."""
        assert self._watcher is not None
        self._watcher.splat_started.wait(_SETTLE)  # the console may lag behind
        return self._crashed(self._watcher.wait_splat(_SETTLE), op, logged,
                             kind=classify(logged) or "warning")

    def _start(self, op: str, args: tuple[Any, ...]) -> int:
        if not self.alive or self._channel is None or self._watcher is None:
            raise GuestError("guest is not running")
        if self._streaming:
            raise GuestError(f"{op} while a streaming job owns the channel")
        if self._watcher.splat_started.is_set():  # a splat since the last call
            raise self._crashed(self._watcher.wait_splat(_SETTLE), op, "")
        try:
            return self._channel.start(op, args)
        except ChannelClosed as exc:
            raise self._lost(op, exc) from None

    def _receive(self, seq: int, op: str,
                 limit: float | None) -> tuple[bool, int, Any, str | None]:
        assert self._channel is not None and self._watcher is not None
        watcher = self._watcher
        try:
            return self._channel.receive(seq, limit, op)
        except ChannelTimeout:
            # A soft lockup or hung-task report on the console says more than we can.
            splat = watcher.splat if watcher.splat_started.is_set() else None
            raise self._crashed(splat, op, f"no reply to {op} within {limit or 0:.0f} s",
                                kind="hang") from None
        except (ChannelClosed, ProtocolError) as exc:
            raise self._lost(op, exc) from None

    def _lost(self, op: str, exc: Exception) -> GuestCrashed:
        assert self._watcher is not None
        if not self._watcher.splat_started.is_set():
            self._watcher.eof.wait(_SETTLE)  # a panicking guest resets, and QEMU exits
        return self._crashed(self._watcher.wait_splat(_SETTLE), op,
                             f"agent channel lost during {op} ({exc})", kind="exited")

    def _on_splat(self, _splat: Splat) -> None:
        # Watcher thread: wake a caller blocked on a guest that will not answer. A
        # streaming job reports its splats itself, case by case.
        if self._channel is not None and not self._streaming:
            self._channel.wake()

    def _crashed(self, splat: Splat | None, op: str, summary: str,
                 kind: str = "exited") -> GuestCrashed:
        """Kill the guest and describe why it is gone: the console's splat if
        it showed one, else ``kind`` and ``summary`` with the console's tail."""
        assert self._watcher is not None
        self.kill()
        if splat is not None:
            return GuestCrashed(splat.kind, splat.summary, splat.excerpt, self.console_log, op)
        if kind == "exited" and self.exit_status is not None:
            summary = f"{summary}; QEMU exit status {self.exit_status}"
        return GuestCrashed(kind, summary, self._watcher.tail(), self.console_log, op)

    # -- the end ---------------------------------------------------------
    def shutdown(self, grace: float = 5.0) -> Splat | None:
        """Ask the agent to exit (the guest powers off), then make sure QEMU is
        gone; returns a splat the console showed meanwhile (teardown WARNs)."""
        if not self.alive:
            return None
        if self._streaming:
            grace = 0.0  # a job owns the channel (an interrupted run): no polite exit
        elif self._channel is not None:
            try:
                self._channel.call("exit", (), min(grace, 5.0))
            except (ChannelTimeout, ChannelClosed, ProtocolError):
                grace = 0.0
        splat = None
        if self._watcher is not None:
            self._watcher.eof.wait(grace)
            splat = self._watcher.splat
        self.kill()
        return splat

    def kill(self) -> None:
        """SIGKILL QEMU (if still running) and release everything (idempotent)."""
        self.alive = False
        self._streaming = False
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._child is not None:
            self.exit_status = process.terminate(self._child)
            self._child = None
        if self._watcher is not None:
            self._watcher.join(2.0)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
