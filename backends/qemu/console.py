"""The serial console watcher: one thread reads QEMU's console through pexpect.

Everything the guest prints goes to a log file; each line also goes through a
:class:`~backends.qemu.splats.SplatDetector`. The data path never touches the
console (the agent has its own virtio-serial port), so kernel messages cannot
corrupt results, and this thread only has to keep up with printk.

When a splat completes, ``on_splat`` is called from this thread (the guest
uses it to wake a caller blocked on the agent); a splat that never prints its
end marker is taken as complete after ``quiet`` seconds without a new line.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pexpect

from backends.qemu.splats import Splat, SplatDetector

_READ_SIZE = 4096
_POLL = 0.1


class ConsoleWatcher:
    """Reads ``child`` (a pexpect spawn) until EOF, logging to ``log_path``."""

    def __init__(self, child: Any, log_path: Path, *,
                 on_splat: Callable[[Splat], None] | None = None,
                 quiet: float = 1.0, tail_lines: int = 60) -> None:
        self._child = child
        self.log_path = log_path
        self._on_splat = on_splat
        self._quiet = quiet
        self._detector = SplatDetector()
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._partial = ""
        self._lock = threading.Lock()
        self.splat_started = threading.Event()
        self.splat_done = threading.Event()
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console:{log_path.name}",
                                        daemon=True)

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the console's EOF (QEMU exited)."""
        self._thread.join(timeout)

    @property
    def splat(self) -> Splat | None:
        """The first splat seen on this console, complete or not."""
        return self._detector.splat

    def tail(self) -> str:
        """The last console lines, for reports on hangs and unexpected exits."""
        with self._lock:
            lines = list(self._tail)
            if self._partial:
                lines.append(self._partial)
        return "\n".join(lines)

    def wait_splat(self, timeout: float) -> Splat | None:
        """Wait up to ``timeout`` for a begun splat to complete; the splat, if any."""
        if self.splat_started.is_set():
            self.splat_done.wait(timeout)
        return self._detector.splat

    # -- the thread ------------------------------------------------------
    def _run(self) -> None:
        last_line = time.monotonic()
        with open(self.log_path, "ab", buffering=0) as log:
            while True:
                try:
                    data: bytes = self._child.read_nonblocking(_READ_SIZE, timeout=_POLL)
                except pexpect.TIMEOUT:
                    if (self._detector.started and not self._detector.complete
                            and time.monotonic() - last_line > self._quiet):
                        self._detector.finish()
                        self._splat_complete()
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break  # QEMU exited (EOF; EIO from the pty; closed child)
                self._consume(data, log)
                last_line = time.monotonic()
        self._end()

    def _consume(self, data: bytes, log: BinaryIO) -> None:
        log.write(data)
        text = self._partial + data.decode("utf-8", "replace").replace("\r", "")
        *lines, partial = text.split("\n")
        with self._lock:
            self._partial = partial
            self._tail.extend(lines)
        for line in lines:
            self._feed(line)

    def _feed(self, line: str) -> None:
        was_complete = self._detector.complete
        self._detector.feed(line)
        if self._detector.started:
            self.splat_started.set()
        if self._detector.complete and not was_complete:
            self._splat_complete()

    def _end(self) -> None:
        if self._partial:
            self._feed(self._partial)
        self._detector.finish()
        if self._detector.started and not self.splat_done.is_set():
            self._splat_complete()
        self.eof.set()

    def _splat_complete(self) -> None:
        self.splat_done.set()
        splat = self._detector.splat
        if self._on_splat is not None and splat is not None:
            self._on_splat(splat)
