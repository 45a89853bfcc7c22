"""The agent's view of the kernel log: did the last call make the kernel splat?

The console reaches the host by another path (serial -> QEMU -> pty) than the
agent's reply (virtio-serial -> socket), so the reply to an ioctl that WARNed
can arrive before the WARNING on the console. The printk ring buffer, though,
holds the record before the ioctl returns: after each request the agent polls
/dev/kmsg (one poll(2) with no timeout when nothing was logged) and flags its
reply with the first splat line, and the host then waits for the console to
show the whole splat. Guest-side: stdlib only.
"""

from __future__ import annotations

import errno
import os
import select

from backends.qemu.splats import classify

DEV_KMSG = "/dev/kmsg"
_RECORD_SIZE = 8192


def record_text(record: str) -> str:
    """The message of a /dev/kmsg record (``"4,123,456789,-;text"`` -> ``"text"``);
    other lines (a plain log file) are returned as they are."""
    head, sep, text = record.partition(";")
    if sep and head.count(",") >= 3:
        return text
    return record


class KmsgMonitor:
    """Reads kernel log records logged since the last :meth:`poll` (or since opening)."""

    def __init__(self, path: str = DEV_KMSG) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self._fd, 0, os.SEEK_END)  # only what is logged from now on
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def poll(self) -> str | None:
        """The first splat line logged since the last poll, or None."""
        if not self._poller.poll(0):
            return None
        first: str | None = None
        while True:
            try:
                data = os.read(self._fd, _RECORD_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten before we read them; go on from here
                raise
            if not data:
                break  # a regular file (tests) at its end
            for line in data.decode("utf-8", "replace").splitlines():
                if line.startswith(" "):
                    continue  # a record's dictionary lines (" SUBSYSTEM=pci")
                text = record_text(line)
                if first is None and classify(text) is not None:
                    first = text
        return first

    def close(self) -> None:
        """Close /dev/kmsg (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
