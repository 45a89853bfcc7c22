"""The calling end of a served backend: one request, one reply, on a stream socket.

The data path is a plain blocking socket (QEMU's chardev on a unix socket for the
guest agent, a socketpair to a forked child): one ``sendall`` and usually one
``recv`` per call, no threads. A streaming op (the agent's ``job``) is driven with
:meth:`Channel.start`, :meth:`Channel.send` and :meth:`Channel.receive` instead:
its EVENT frames arrive one by one, and the caller may send the job commands.
Another thread may :meth:`Channel.wake` a blocked caller (the qemu backend's console
watcher does, when the guest splats).
"""

from __future__ import annotations

import socket
from typing import Any

from backends.kernel.rpc.protocol import (
    EVENT,
    HEADER,
    MAX_FRAME,
    ProtocolError,
    decode,
    encode,
)

_RECV_SIZE = 1 << 18


class ChannelClosed(ConnectionError):
    """The serving end went away (QEMU or the child exited, or the channel was woken)."""


class ChannelTimeout(TimeoutError):
    """No reply within the call's timeout."""


class Channel:
    """Calls on a connected stream socket to a server (a guest agent, a forked child)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(True)
        self._timeout: float | None = None
        self._buf = bytearray()
        self._seq = 0

    def call(self, op: str, args: tuple[Any, ...],
             timeout: float | None) -> tuple[int, Any, str | None]:
        """Send ``(seq, op, args)``; the reply's ``(status, payload, splat)``."""
        seq = self.start(op, args)
        final, status, payload, splat = self.receive(seq, timeout, op)
        if not final:
            raise ProtocolError(f"event frame for {op}, which does not stream")
        return status, payload, splat

    def start(self, op: str, args: tuple[Any, ...]) -> int:
        """Send the request ``(seq, op, args)``; returns its seq (for :meth:`receive`)."""
        self._seq += 1
        self._send(encode((self._seq, op, args)), op)
        return self._seq

    def send(self, message: Any) -> None:
        """Send one frame outside the request/reply pattern (a command to a running job)."""
        self._send(encode(message), "job command")

    def receive(self, seq: int, timeout: float | None,
                op: str = "request") -> tuple[bool, int, Any, str | None]:
        """The next frame for request ``seq``: ``(final, status, payload, splat)``;
        ``final`` is False for an EVENT frame of a streaming op."""
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout
        try:
            rseq, status, payload, splat = self._recv_frame()
        except TimeoutError:
            raise ChannelTimeout(f"no reply to {op} within {timeout} s") from None
        except ChannelClosed:
            raise
        except OSError as exc:
            raise ChannelClosed(f"channel lost during {op}: {exc}") from None
        if rseq != seq:
            raise ProtocolError(f"reply {rseq} to request {seq}: channel out of sync")
        return status != EVENT, status, payload, splat

    def _send(self, frame: bytes, what: str) -> None:
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            raise ChannelClosed(f"channel lost sending {what}: {exc}") from None

    def _recv_frame(self) -> Any:
        buf = self._buf
        while True:
            if len(buf) >= HEADER.size:
                (length,) = HEADER.unpack_from(buf)
                if length > MAX_FRAME:
                    raise ProtocolError(f"frame of {length} bytes announced: out of sync")
                end = HEADER.size + length
                if len(buf) >= end:
                    message = decode(bytes(buf[HEADER.size:end]))
                    del buf[:end]
                    return message
            chunk = self._sock.recv(_RECV_SIZE)
            if not chunk:
                raise ChannelClosed("channel closed by the serving end")
            buf += chunk

    def wake(self) -> None:
        """Make a blocked (or the next) call fail with ChannelClosed; any thread."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
