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
"""

from __future__ import annotations

import errno
import glob
import os
import threading
from collections.abc import Callable
from typing import Any

FAIL_NTH = "/proc/thread-self/fail-nth"
DEBUGFS = "/sys/kernel/debug"


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


def _write_quiet(path: str, value: str) -> None:
    # Missing knobs (no debugfs, no fail_page_alloc) only mean fewer fault points.
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


class FailNth:
    """Per-thread fail-nth counts, armed in the kernel only around contract syscalls."""

    def __init__(self, path: str = FAIL_NTH, debugfs: str = DEBUGFS) -> None:
        self._path = path
        self._debugfs = debugfs
        self._fds: dict[int, int] = {}
        self._pending: dict[int, int] = {}
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
        self._fd()  # open (and configure debugfs) now, not inside a window
        self._pending[threading.get_native_id()] = n

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
