"""The kernel log (/dev/kmsg) read through the backend contract.

Opened non-blocking, /dev/kmsg hands out one record per read and EAGAIN at the end;
EPIPE means older records were overwritten while we read, and reading goes on.
"""

from __future__ import annotations

import errno
import os

from backends.contract import Backend

DEV_KMSG = "/dev/kmsg"


class KernelLog:
    """New kernel log records since the last :meth:`new_lines` (or since opening)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.fd = backend.open(DEV_KMSG, os.O_RDONLY | os.O_NONBLOCK)
        #: every record from before opening (the boot log, as dmesg prints it)
        self.earlier = self.new_lines()

    def new_lines(self) -> list[str]:
        """The message text of every record logged since the last call."""
        lines: list[str] = []
        while True:
            try:
                record = self.backend.read(self.fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return lines
                if exc.errno == errno.EPIPE:
                    continue
                raise
            text = record.decode("utf-8", "replace")
            lines.append(text.split(";", 1)[1].split("\n", 1)[0] if ";" in text else text)

    def close(self) -> None:
        """close(2) the /dev/kmsg fd."""
        self.backend.close(self.fd)
