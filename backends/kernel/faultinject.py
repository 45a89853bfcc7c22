"""fail-nth fault injection of the calling thread (Documentation/fault-injection).

Writing N to /proc/thread-self/fail-nth makes the N-th fault point
(``should_fail()``: failslab, fail_page_alloc, fail_usercopy, ...) that *this
task* passes fail; the file then reads the remaining count, 0 once the fault
fired. The counter runs in every syscall and page fault of the task, so a
Python process armed for long would spend its count in its own work (pymalloc
growing an arena, the interpreter faulting a page) before reaching the ioctl
under test.

Hence the *window*: :meth:`FailNth.write` only records the count, and
:meth:`FailNth.call` arms the kernel's counter immediately before one syscall
of the contract (the ioctl, with its argument cast beforehand), reads what is
left right after it, and disarms again while Python runs. Seen from the
contract, fail_nth_write(N) followed by calls and fail_nth_read() behaves like
the selftest's arm / test body / read, with only the contract's syscalls
counted. The read-back itself can meet one fault point (copy_to_user under
CONFIG_FAULT_INJECTION_USERCOPY), exactly like the selftest's own read; when
the fault fires there, the read fails with EFAULT and counts as fired.

The kernel's counter is per task: each thread arms its own file, kept open as
the selftest keeps /proc/self/task/<tid>/fail-nth.

Injected failures can destabilise a lab machine (a driver's error path is rarely
run), so on a real host :class:`FailNth` arms nothing unless the user opted in
(``IOMMUFD_FAIL_NTH_HOST=1``, or the harness's ``--iommufd-fail-nth-on-host``). The
project's own guests say so in their environment (``IOMMUFD_HARNESS_GUEST=1``,
exported by vm_images/guest/init) and need no opt-in.

``python3 -m backends.kernel.faultinject count -- PROGRAM ARGS...`` runs a program
and prints, as JSON, how many faults were injected into it per fault attribute
(failslab, fail_page_alloc, fail_iommufd, ...): each attribute's debugfs ``times``
counter drops by one per injected fault, fail-nth ones included. That is how the
fault points the kernel's own C iommufd_fail_nth sweeps are counted in a guest.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from backends.contract import BackendError

FAIL_NTH = "/proc/thread-self/fail-nth"
DEBUGFS = "/sys/kernel/debug"
#: the user's explicit opt-in to fault injection on a real host
HOST_OPT_IN_ENV = "IOMMUFD_FAIL_NTH_HOST"
#: set in the environment of everything a project guest runs (vm_images/guest/init)
GUEST_ENV = "IOMMUFD_HARNESS_GUEST"
#: what ``times`` is set to while counting: far more faults than any sweep injects
_COUNT_TIMES = 1_000_000


def arming_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """Fault injection may be armed here: a project guest, or the user opted in."""
    return environ.get(GUEST_ENV) == "1" or environ.get(HOST_OPT_IN_ENV) == "1"


def refusal() -> str:
    """The one-line reason fault injection is not armed on this host."""
    return (f"refusing to arm fail_nth fault injection on this host (a real machine: "
            f"injected failures can destabilise it); opt in with --iommufd-fail-nth-on-host or "
            f"{HOST_OPT_IN_ENV}=1")


def available(path: str = FAIL_NTH) -> bool:
    """The kernel has per-task fail-nth (CONFIG_FAULT_INJECTION)."""
    return os.path.exists(path)


def configure_debugfs(root: str = DEBUGFS) -> None:
    """Set up fault injection like the selftest's constructor: include sleeping
    and highmem allocations, and keep injected faults quiet (verbose=0) so the
    console carries only real splats (and TCG does not spend time printing).

    These are global knobs: on a lab machine they stay set after the run, as
    they do after tools/testing/selftests/iommu/iommufd_fail_nth.
    """
    settings = {
        "failslab/ignore-gfp-wait": "N",
        "fail_page_alloc/ignore-gfp-wait": "N",
        "fail_page_alloc/ignore-gfp-highmem": "N",
    }
    for rel, value in settings.items():
        _write_quiet(os.path.join(root, rel), value)
    for entry in glob.glob(os.path.join(root, "fail*", "verbose")):
        _write_quiet(entry, "0")
    # fail-nth ignores the task filter; setting it confines any probability-based
    # injection someone configured to tasks that asked for it (make-it-fail), so
    # the agent and the rest of the machine are never failed at random meanwhile.
    for entry in glob.glob(os.path.join(root, "fail*", "task-filter")):
        _write_quiet(entry, "Y")


def _write_quiet(path: str, value: str) -> None:
    # Missing knobs (no debugfs, no fail_page_alloc) only mean fewer fault points.
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


class FailNth:
    """Per-thread fail-nth counts, armed in the kernel only around contract syscalls."""

    def __init__(self, path: str = FAIL_NTH, debugfs: str = DEBUGFS, *,
                 allowed: bool | None = None) -> None:
        self._path = path
        self._debugfs = debugfs
        self._allowed = allowed
        self._fds: dict[int, int] = {}
        self._pending: dict[int, int] = {}
        #: no thread has a count: a call runs as it is (a plain attribute: the hot
        #: path's one check)
        self.idle = True
        self._lock = threading.Lock()
        self._configured = False

    def _fd(self) -> int:
        tid = threading.get_native_id()
        fd = self._fds.get(tid)
        if fd is None:
            with self._lock:
                if not self._configured:
                    configure_debugfs(self._debugfs)
                    self._configured = True
            fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
            self._fds[tid] = fd
        return fd

    def write(self, n: int) -> None:
        """Set this thread's count to N (0 disarms); armed at the next :meth:`call`.

        Like the file, a negative count is EINVAL.
        """
        if n < 0 or n > 0xFFFFFFFF:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        allowed = arming_allowed() if self._allowed is None else self._allowed
        if n and not allowed:
            raise BackendError(refusal())
        self._fd()  # open (and configure debugfs) now, not inside a window
        self._pending[threading.get_native_id()] = n
        self.idle = not any(count > 0 for count in self._pending.values())

    def read(self) -> int:
        """This thread's remaining count: 0 once the fault fired (or never armed)."""
        return self._pending.get(threading.get_native_id(), 0)

    @property
    def armed(self) -> bool:
        """This thread has a count that has not fired yet."""
        return self._pending.get(threading.get_native_id(), 0) > 0

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (one syscall) with the kernel's counter armed around it.

        Everything ``fn`` needs must be prepared by the caller: between the arm
        and the syscall only the call itself runs.
        """
        if self.idle:  # no thread has a count: no gettid(2) on the hot path
            return fn(*args)
        tid = threading.get_native_id()
        count = self._pending.get(tid, 0)
        if count <= 0:
            return fn(*args)
        fd = self._fds[tid]
        arm = b"%d" % count
        os.pwrite(fd, arm, 0)
        try:
            return fn(*args)
        finally:
            left = self._remaining(fd)
            if left:
                os.pwrite(fd, b"0", 0)  # disarm while Python runs
            self._pending[tid] = left
            self.idle = not any(n > 0 for n in self._pending.values())

    @staticmethod
    def _remaining(fd: int) -> int:
        try:
            return int(os.pread(fd, 32, 0).strip() or b"0")
        except OSError as exc:
            if exc.errno != errno.EFAULT:
                raise
            return 0  # the fault fired in the read-back's copy_to_user

    def close(self) -> None:
        """Disarm and close every thread's fail-nth fd (idempotent)."""
        self._pending.clear()
        for fd in self._fds.values():
            try:
                os.pwrite(fd, b"0", 0)
            except OSError:
                pass
            os.close(fd)
        self._fds.clear()


# -- counting the faults injected into a program ------------------------------------

def _times_files(root: str) -> dict[str, str]:
    return {os.path.basename(os.path.dirname(path)): path
            for path in sorted(glob.glob(os.path.join(root, "fail*", "times")))}


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _write(path: str, value: int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def count_injected(argv: Sequence[str], root: str = DEBUGFS,
                   timeout: float = 600.0) -> dict[str, Any]:
    """Run ``argv`` and count the faults injected meanwhile, per fault attribute.

    Every attribute's ``times`` is raised to a large count for the run (probability
    stays 0, so nothing is injected at random) and restored afterwards; the drop is
    the number of injected faults. Returns ``{"status", "output", "injected":
    {attribute: count}, "total"}``.
    """
    files = _times_files(root)
    if not files:
        raise BackendError(f"no fault attributes under {root} (debugfs, FAULT_INJECTION)")
    saved = {name: _read_int(path) for name, path in files.items()}
    try:
        for path in files.values():
            _write(path, _COUNT_TIMES)
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
        injected = {name: _COUNT_TIMES - _read_int(path) for name, path in files.items()}
    finally:
        for name, path in files.items():
            _write(path, saved[name])
    return {"status": proc.returncode, "output": proc.stdout.decode("utf-8", "replace"),
            "injected": injected, "total": sum(injected.values())}


def tally(root: str = DEBUGFS) -> dict[str, int]:
    """Faults injected so far per fault attribute, machine-wide, since counting began.

    The first call raises every attribute's ``times`` to a large count (it starts at
    1); from then on each injected fault lowers it by one.
    """
    files = _times_files(root)
    counts: dict[str, int] = {}
    for name, path in files.items():
        left = _read_int(path)
        if left < _COUNT_TIMES // 2:  # never raised: start counting now
            _write(path, _COUNT_TIMES)
            left = _COUNT_TIMES
        counts[name] = _COUNT_TIMES - left
    return counts


def main(args: Sequence[str] | None = None) -> int:
    """``count -- PROGRAM ARGS...`` (:func:`count_injected`) or ``tally``
    (:func:`tally`): print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python3 -m backends.kernel.faultinject")
    parser.add_argument("--debugfs", default=DEBUGFS)
    sub = parser.add_subparsers(dest="command", required=True)
    count = sub.add_parser("count", help="run a program, count the faults injected into it")
    count.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("tally", help="faults injected so far per fault attribute")
    opts = parser.parse_args(args)
    argv: list[str] = list(getattr(opts, "argv", []))
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if opts.command == "count" and not argv:
        parser.error("count: no program given")
    try:
        result: Any = (count_injected(argv, opts.debugfs) if opts.command == "count"
                       else tally(opts.debugfs))
    except (BackendError, OSError, subprocess.SubprocessError) as error:
        print(f"faultinject: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
