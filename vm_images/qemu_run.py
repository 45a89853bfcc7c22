"""Run QEMU in the foreground for the CLI, never leaving it behind.

Two ways: ``interactive`` hands QEMU the terminal (the serial console with Ctrl-A x to
quit); ``capture`` reads the console line by line, echoes it and hands each line to
a callback, with an optional timeout. Either way QEMU is killed if we stop early
(Ctrl-C, an exception) and, through PR_SET_PDEATHSIG, if this process dies outright.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` if it still runs; kill it if it does not go within 5 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def interactive(argv: Sequence[str]) -> int:
    """Run QEMU attached to this terminal; returns its exit status.

    The terminal is QEMU's (raw mode), so Ctrl-C reaches the guest; here SIGINT is
    ignored while QEMU runs so that a Ctrl-C meant for the guest cannot kill us and
    orphan it.
    """
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc = subprocess.Popen(list(argv), preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    finally:
        _stop(proc)
        signal.signal(signal.SIGINT, old)


def capture(argv: Sequence[str], on_line: Callable[[str], None], *,
            echo: BinaryIO | None = None, timeout: float | None = None) -> int:
    """Run QEMU with its console piped to us; returns its exit status.

    Every console line is written to ``echo`` (default: our stdout) as it arrives
    and passed, decoded, to ``on_line``. After ``timeout`` seconds QEMU is killed
    and the status is 124 (as timeout(1) reports). Ctrl-C stops QEMU and re-raises.
    """
    out = echo if echo is not None else sys.stdout.buffer
    # A session of its own: a Ctrl-C on our terminal reaches only us, and we stop QEMU.
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout else None
    try:
        if timer:
            timer.start()
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.write(raw)
            out.flush()
            on_line(raw.decode(errors="replace"))
        status = proc.wait()
        return 124 if timed_out.is_set() else status
    finally:
        if timer:
            timer.cancel()
        _stop(proc)
