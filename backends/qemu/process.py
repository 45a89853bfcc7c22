"""QEMU processes that never outlive the run.

Every QEMU is spawned through :func:`spawn` (pexpect: its console on a pty, in
a new session, so its own process group) and recorded until :func:`terminate`.
Three nets catch the rest:

* PR_SET_PDEATHSIG(SIGKILL), set in the child before exec: when the thread
  that spawned QEMU dies (pytest killed with SIGKILL included), the kernel
  kills QEMU. Spawn from a long-lived thread (the test's main thread), since
  the signal follows that *thread*'s exit.
* atexit: a normal interpreter exit kills what is left.
* SIGTERM, SIGHUP and SIGINT handlers (installed once, from the main thread)
  kill every QEMU, then hand the signal on: SIGINT and SIGTERM become a
  KeyboardInterrupt (so pytest ends with its interrupted summary and its
  reports), also where the shell started the run with SIGINT ignored (a
  background job); SIGHUP goes to the handler that was there before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import pexpect

from backends.kernel import libc

_live: dict[int, Any] = {}
_lock = threading.Lock()
_installed = False
_previous: dict[int, Any] = {}
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
#: signals that end a run as an interrupt rather than by dying
_INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None) -> Any:
    """Start ``argv`` with its stdio on a pexpect pty; returns the pexpect child."""
    install_cleanup()
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child between fork and exec.
        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    child = pexpect.spawn(argv[0], list(argv[1:]), env=env, echo=False, timeout=None,
                          preexec_fn=preexec, dimensions=(50, 200))
    with _lock:
        _live[child.pid] = child
    return child


def terminate(child: Any, *, grace: float = 0.0) -> int | None:
    """Wait up to ``grace`` seconds for ``child`` to exit, then SIGKILL its
    process group; returns its exit status (negative: killed by that signal)."""
    deadline = time.monotonic() + grace
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(child):
        _kill_group(child.pid)
    try:
        child.wait()
    except (pexpect.ExceptionPexpect, ChildProcessError):
        pass  # already reaped (the console thread's EOF handling may get there first)
    status = child.exitstatus if child.exitstatus is not None else (
        -child.signalstatus if child.signalstatus is not None else None)
    with contextlib.suppress(Exception):
        child.close(force=True)
    with _lock:
        _live.pop(child.pid, None)
    return status


def _alive(child: Any) -> bool:
    # The console watcher thread also polls the child; whichever waitpid() loses the
    # race sees ECHILD, which only means the child is already gone.
    try:
        return bool(child.isalive())
    except (pexpect.ExceptionPexpect, ChildProcessError):
        return False


def live_pids() -> list[int]:
    """The QEMU processes spawned and not yet terminated."""
    with _lock:
        return sorted(_live)


def kill_all() -> None:
    """SIGKILL every recorded QEMU (atexit and signal handlers call this)."""
    with _lock:
        children = list(_live.values())
        _live.clear()
    for child in children:
        _kill_group(child.pid)
        with contextlib.suppress(Exception):
            child.wait()


def _kill_group(pid: int) -> None:
    # The child leads its own session and process group (pty fork): kill the
    # group, so helpers QEMU may start go too; the pid alone if the group is gone.
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def install_cleanup() -> None:
    """Register the atexit hook and the signal handlers (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(kill_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal only works in the main thread; atexit/PDEATHSIG still apply
    for signum in _CLEANUP_SIGNALS:
        _previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    kill_all()
    previous = _previous.get(signum)
    if signum in _INTERRUPT_SIGNALS and previous in (signal.default_int_handler,
                                                     signal.SIG_DFL, signal.SIG_IGN):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default_int_handler: KeyboardInterrupt
        return
    if previous == signal.SIG_IGN:
        return
    # SIG_DFL (or unknown): die of the signal as if we had never caught it.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
