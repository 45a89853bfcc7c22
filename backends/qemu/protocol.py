"""The host <-> guest-agent wire protocol: the served-backend protocol of
:mod:`backends.kernel.rpc.protocol` (frames, statuses, contract and server ops,
version), plus the agent's own ops and its virtio-serial port.

Agent ops, on top of the contract and server ops every server answers:

* ``hello`` ``()`` -> dict: ``version`` (:data:`PROTOCOL_VERSION`, which the host
  checks), ``kernel_release``, ``machine``, ``features`` (list), ``backend_error``
  (str or None), ``page_size``, ``hugepage_size``, ``pid``.
* ``run`` ``(argv, timeout)`` -> ``(exit status, output bytes, timed_out)``: a guest
  command (the C selftests), stdout and stderr merged.
* ``stats`` ``()`` -> ``{"requests": n, "service_seconds": s}``: requests served and
  the agent's time on them, from a request read to its reply written (the rest of a
  round trip is the channel).
* ``put`` ``(path, data, mode)`` -> bytes written: a file in the guest (a program or
  script to ``run``).
* ``preload`` ``(modules,)`` -> seconds taken: import ``modules`` in the agent, so
  that jobs forked from it (and guests restored from a state saved after it, see
  :mod:`backends.qemu.snapshot`) start with them loaded.
* ``job`` ``(target, args)`` -> the exit status of ``target(io, *args)``
  (``module:callable``), run in a forked agent that streams EVENT frames and reads
  the host's command frames meanwhile (:mod:`backends.qemu.jobio`).

A test's forked children live in the agent's handle table (``fork_child``,
``child_call``, ``child_exit``); the agent watches the kernel log for them too, so a
splat during a child's call fails that call.
"""

from __future__ import annotations

from backends.kernel.rpc.protocol import (
    AGENT_BUG,
    BACKEND_ERROR,
    CONTRACT_OPS,
    ERRNO,
    EVENT,
    HEADER,
    MAX_FRAME,
    OK,
    PROTOCOL_VERSION,
    SERVER_OPS,
    FrameReader,
    ProtocolError,
    decode,
    encode,
    error_reply,
    reply_error,
)

#: the virtio-serial port name the agent looks for (/sys/class/virtio-ports/*/name)
PORT_NAME = "org.iommufd.agent"

AGENT_OPS = ("hello", "run", "stats", "put", "preload", "job")
OPS = CONTRACT_OPS + SERVER_OPS + AGENT_OPS

__all__ = [
    "AGENT_BUG", "AGENT_OPS", "BACKEND_ERROR", "CONTRACT_OPS", "ERRNO", "EVENT", "HEADER",
    "MAX_FRAME", "OK", "OPS", "PORT_NAME", "PROTOCOL_VERSION", "SERVER_OPS",
    "FrameReader", "ProtocolError", "decode", "encode", "error_reply", "reply_error",
]
