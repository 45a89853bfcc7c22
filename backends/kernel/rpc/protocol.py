"""The wire protocol of a served backend: frames, messages, reply statuses.

A byte stream (a socketpair to a forked child, a virtio-serial port in a guest, a
unix socket on the host) carries frames: a little-endian u32 length, then a
``marshal`` (version 4) encoding of plain data. marshal is the fastest stdlib codec
for tuples of ints/bytes/str (about 0.7 us for a request and its reply) and, unlike
pickle, loading it never runs code.

Messages (strictly one reply per request, in order)::

    request  (seq, op, args)                 op: a string, args: a tuple
    reply    (seq, status, payload, splat)   status: OK / ERRNO / BACKEND_ERROR / AGENT_BUG
    event    (seq, EVENT, payload, splat)    zero or more before a streaming op's reply

A streaming op (the agent's ``pytest``) sends EVENT frames carrying the request's
``seq`` while it runs, then its one reply; every other op sends its reply alone.

``splat`` is None, or the first kernel log line of a splat (WARNING, BUG, Oops, ...)
logged while the request ran (the guest agent watches the log; a forked child
always answers None).

* OK: ``payload`` is the call's value.
* ERRNO: ``payload`` is ``(errno, strerror, data)``; the call raised OSError.
  ``data`` is the ioctl argument's bytes after the failed ioctl (the kernel writes
  some outputs on failure, e.g. IOMMU_IOAS_IOVA_RANGES' num_iovas with EMSGSIZE),
  else None.
* BACKEND_ERROR: ``payload`` is the message of a BackendError.
* AGENT_BUG: ``payload`` is ``"Type: message"`` of any other exception.

Contract ops (:data:`CONTRACT_OPS`) take the contract's positional arguments;
``alloc`` takes ``(length, align, shared, hugetlb)``. An ioctl argument travels as
None, an int, or the bytes of the cdata's buffer; the ioctl's value is ``(return
value, bytes after the call or None)``.

Server ops (:data:`SERVER_OPS`), answered by every server:

* ``batch`` ``(calls, stop_on_error)``, each call ``(op, args)`` of a contract op ->
  a list of ``(status, payload)``, one per call executed.
* ``fork_child`` ``()`` -> a handle (int): the served backend's ``fork_child()``;
  the server keeps the child until ``child_exit`` (or its own exit).
* ``child_call`` ``(handle, op, args)``: the request ``(op, args)`` run by that child;
  the reply is the child's own ``(status, payload)``, unwrapped. ``op`` may be any
  contract or server op but ``exit`` (a child may fork in turn: handles nest).
* ``child_exit`` ``(handle)`` -> the child's wait status: it exits and is reaped.
* ``exit`` ``()`` -> None; the server answers, releases its children and its
  backend, and stops.

Version 5 added EVENT frames (the agent's ``pytest`` op streams them).
Version 4 added ``getpid``, ``proc_status``, ``drop_capability``,
``restore_capability`` and the ``fork_child`` / ``child_call`` / ``child_exit`` ops
(with ``batch`` and ``exit`` now answered by every server, not only the agent).
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any

from backends.contract import BackendError

PROTOCOL_VERSION = 5

OK = 0
ERRNO = 1
BACKEND_ERROR = 2
AGENT_BUG = 3
#: not a reply: an event of a streaming op, more frames follow for the same seq
EVENT = 4

#: the contract's calls, in the order of backends.contract.Backend
CONTRACT_OPS = (
    "open", "close", "ioctl", "read", "write", "mmap", "munmap", "alloc", "peek",
    "poke", "memfd", "ftruncate", "fail_nth_write", "fail_nth_read",
    "getpid", "proc_status", "drop_capability", "restore_capability",
)
#: ops every server answers besides the contract's
SERVER_OPS = ("batch", "fork_child", "child_call", "child_exit", "exit")

HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 30
_MARSHAL_VERSION = 4  # readable by every Python 3 the host or guest may run


class ProtocolError(RuntimeError):
    """The byte stream does not carry valid frames (a desynchronised or dead peer)."""


def encode(message: Any) -> bytes:
    """One frame: the length header and the marshalled message."""
    body = marshal.dumps(message, _MARSHAL_VERSION)
    return HEADER.pack(len(body)) + body


def decode(body: bytes | bytearray | memoryview) -> Any:
    """The message in one frame's body."""
    try:
        return marshal.loads(body)
    except (ValueError, EOFError, TypeError) as exc:
        raise ProtocolError(f"undecodable frame of {len(body)} bytes: {exc}") from exc


class FrameReader:
    """Reassembles frames from stream chunks of any size."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        self._buf += data

    def next(self) -> tuple[bool, Any]:
        """``(True, message)`` for the next complete frame, else ``(False, None)``."""
        if len(self._buf) < HEADER.size:
            return False, None
        (length,) = HEADER.unpack_from(self._buf)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes announced: stream out of sync")
        end = HEADER.size + length
        if len(self._buf) < end:
            return False, None
        body = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        return True, decode(body)

    def reset(self) -> None:
        """Drop a partial frame (the peer went away mid-frame)."""
        self._buf.clear()

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)


def error_reply(exc: BaseException, data: bytes | None = None) -> tuple[int, Any]:
    """The (status, payload) that carries ``exc`` to the other side."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return ERRNO, (exc.errno, exc.strerror or os.strerror(exc.errno), data)
    if isinstance(exc, BackendError):
        return BACKEND_ERROR, str(exc)
    return AGENT_BUG, f"{type(exc).__name__}: {exc}"


def reply_error(status: int, payload: Any, where: str = "agent") -> Exception:
    """The exception a non-OK reply stands for (OSError keeps the kernel's errno)."""
    if status == ERRNO:
        err, strerror, _data = payload
        return OSError(err, strerror)
    if status == BACKEND_ERROR:
        return BackendError(str(payload))
    return BackendError(f"{where}: {payload}")
