"""A streaming job's end of the agent channel, inside the guest (stdlib only).

The agent runs a ``job`` request in a forked child that owns the virtio-serial port
until it returns: it sends EVENT frames under the request's seq (:meth:`JobIO.emit`)
and reads the host's command frames (:meth:`JobIO.receive`); the agent writes the
final reply once the child has exited. The host sends a job nothing before the job's
first event, so no command can be left in the agent's own read buffer.
"""

from __future__ import annotations

import os
import select
from typing import Any

from backends.kernel.rpc.protocol import EVENT, FrameReader, encode
from backends.qemu.port import write_frame

_READ_SIZE = 1 << 16


class JobIO:
    """Events out and commands in, for the job started by request ``seq`` on ``fd``.

    ``kmsg_path`` is the kernel log the agent watches (None: it watches none), for a
    job that attributes splats itself.
    """

    def __init__(self, fd: int, seq: int, kmsg_path: str | None = None) -> None:
        self.fd = fd
        self.seq = seq
        self.kmsg_path = kmsg_path
        self._reader = FrameReader()
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def emit(self, payload: Any, splat: str | None = None) -> None:
        """Send one event (``splat``: a kernel splat line to attribute to it)."""
        write_frame(self.fd, encode((self.seq, EVENT, payload, splat)))

    def receive(self) -> Any:
        """The host's next command frame; None when the host is gone."""
        while True:
            complete, message = self._reader.next()
            if complete:
                return message
            self._poller.poll()
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                return None  # a virtio port reads 0 bytes once no host is connected
            self._reader.feed(data)
