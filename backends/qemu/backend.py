"""QemuBackend: the backend contract in a QEMU guest, through the guest agent.

The calls travel as bytes (see :mod:`backends.kernel.rpc`): an ioctl's cdata is
sent as its buffer and the bytes that come back (on success and on an errno) are
written into it, so callers see exactly what an in-process ioctl would have left
there. Addresses are guest addresses (from ``alloc``, ``mmap``, ``memfd``), and
fds are guest fds. :meth:`fork_child` forks the agent in the guest; the child is a
:class:`~backends.kernel.rpc.client.RemoteChild` whose calls the agent relays.

When the guest splats, hangs or dies, the running call raises
:class:`~backends.qemu.errors.GuestCrashed` with the console excerpt and the
next call boots a fresh guest (:meth:`QemuBackend.restart`), so one crash fails
one test. fds and addresses from before a crash mean nothing afterwards.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backends.contract import BackendError
from backends.kernel.rpc.client import RemoteBackend
from backends.qemu.errors import GuestCrashed
from backends.qemu.guest import Guest
from backends.qemu.launcher import ImageLauncher, Launcher, progress
from backends.qemu.protocol import OK, reply_error
from backends.qemu.snapshot import PRELOAD, SnapshotError, SnapshotStore, qmp_args
from backends.qemu.splats import Splat

#: env overrides of the per-call watchdog and the boot timeout (seconds)
CALL_TIMEOUT_ENV = "IOMMUFD_QEMU_CALL_TIMEOUT"
BOOT_TIMEOUT_ENV = "IOMMUFD_QEMU_BOOT_TIMEOUT"
#: the kernel's C selftests inside the guest image
SELFTESTS = ("/selftests/iommufd", "/selftests/iommufd_fail_nth", "/selftests/vfio")

#: a saved state restores in about a second; one that has not answered by then won't
RESTORE_TIMEOUT = 30.0

_T = TypeVar("_T")


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


#: the guest's script that hands edu to vfio-pci at boot, and gives it back its BAR
#: after a restore (``--restored``)
BIND_EDU = "/bin/bind-edu"


class QemuBackend(RemoteBackend):
    """The contract in a QEMU guest of ``arch`` (booted at construction).

    ``launcher`` says what to boot (default: vm_images' image for ``arch``);
    ``call_timeout`` is the per-call watchdog (env IOMMUFD_QEMU_CALL_TIMEOUT,
    default 60 s: TCG is slow, a real hang is forever); ``boot_timeout`` bounds
    QEMU start to the agent's first answer.
    """

    def __init__(self, arch: str = "x86_64", *, launcher: Launcher | None = None,
                 call_timeout: float | None = None, boot_timeout: float | None = None,
                 log_dir: Path | None = None) -> None:
        self.arch = arch
        self.spec = f"qemu:{arch}"
        self._launcher: Launcher = launcher or ImageLauncher(arch, log_dir=log_dir)
        self.call_timeout = call_timeout or _env_seconds(CALL_TIMEOUT_ENV, 60.0)
        self.boot_timeout = boot_timeout or _env_seconds(BOOT_TIMEOUT_ENV, 120.0)
        self._socket_dir = Path(tempfile.mkdtemp(prefix="iommufd-agent-"))
        # Also when the owner never calls shutdown (an interrupt that ends the process
        # first); only a SIGKILL leaves the directory behind.
        atexit.register(self._remove_socket_dir)
        self._guest: Guest | None = None
        self._info: dict[str, Any] = {}
        self.boots = 0
        #: every GuestCrashed raised, oldest first (for reports)
        self.crashes: list[GuestCrashed] = []
        #: splats seen while a guest shut down (teardown WARNs), oldest first
        self.shutdown_splats: list[Splat] = []
        try:
            self._launcher.prepare()
            self.restart()
        except BaseException:
            self.shutdown()
            raise
        error = self._info.get("backend_error")
        if error:
            self.shutdown()
            raise BackendError(f"{self.spec}: guest kernel {self.kernel_release}: {error}")

    # -- lifecycle -------------------------------------------------------
    def restart(self) -> None:
        """Boot a fresh guest (shutting down the current one, if any)."""
        self._stop_guest()
        self.boots += 1
        log_dir = self._launcher.log_dir()
        socket_path = self._socket_dir / f"agent-{self.boots}.sock"
        qmp_path = self._socket_dir / f"qmp-{self.boots}.sock"
        console_log = log_dir / f"console-{self.arch}-{self.boots}.log"
        argv = self._launcher.argv(socket_path)
        # Only the image launcher has warm starts (a test's stand-in for QEMU has no QMP).
        stores = getattr(self._launcher, "snapshot_store", None)
        store: SnapshotStore | None = stores(argv, [socket_path]) if stores else None
        guest = self._restore(store, argv, socket_path, console_log) if store else None
        if guest is None:
            extra = qmp_args(qmp_path) if store is not None else []
            guest = Guest(argv + extra, socket_path, console_log,
                          call_timeout=self.call_timeout, boot_timeout=self.boot_timeout)
            self._info = guest.boot()
            if store is not None:
                self._save(guest, store, qmp_path)
        self._guest = guest
        self.features = frozenset(self._info.get("features", ()))
        self.page_size = int(self._info.get("page_size", self.page_size))
        self.hugepage_size = int(self._info.get("hugepage_size", self.hugepage_size))

    def _restore(self, store: SnapshotStore, argv: list[str], socket_path: Path,
                 console_log: Path) -> Guest | None:
        """The guest restored from ``store``'s saved state, or None (none saved, or it
        did not restore: then it is deleted and the caller boots afresh)."""
        if not store.exists():
            return None
        guest = Guest(argv + store.restore_args(), socket_path, console_log,
                      call_timeout=self.call_timeout,
                      boot_timeout=min(self.boot_timeout, RESTORE_TIMEOUT))
        try:
            self._info = guest.boot()
        except BackendError as exc:
            first = str(exc).splitlines()[0]
            progress(f"saved guest state {store.path} did not restore ({first}); "
                      "deleted, booting afresh")
            store.discard()
            return None
        # QEMU keeps no state of edu: give it back its BAR (see vm_images/guest/bind-edu).
        try:
            status, payload = guest.call("run", ([BIND_EDU, "--restored"], 60.0), 90.0)
        except BackendError as exc:
            status, payload = -1, str(exc)
        if status != OK or payload[0] != 0:
            progress(f"restored guest could not restore edu's BAR ({payload}); "
                     "booting afresh")
            guest.kill()
            return None
        self._info["restored"] = str(store.path)
        return guest

    def _save(self, guest: Guest, store: SnapshotStore, qmp_path: Path) -> None:
        """Preload the guest's session modules and save the guest for warm starts.
        A failure costs only the warm start: the run goes on with this guest."""
        try:
            status, payload = guest.call("preload", (list(PRELOAD),), self.boot_timeout)
            if status != OK:
                raise SnapshotError(f"preload: {payload}")
            seconds = store.save(qmp_path)
        except (SnapshotError, OSError) as exc:
            progress(f"guest state not saved for warm starts: {exc}")
            return
        progress(f"guest state saved for warm starts in {seconds:.1f} s: {store.path}")

    def shutdown(self) -> None:
        """Power the guest off (killing QEMU if it does not go) and clean up. Idempotent."""
        self._stop_guest()
        self._remove_socket_dir()
        atexit.unregister(self._remove_socket_dir)

    def _remove_socket_dir(self) -> None:
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _stop_guest(self) -> None:
        guest, self._guest = self._guest, None
        if guest is not None:
            splat = guest.shutdown()
            if splat is not None:
                self.shutdown_splats.append(splat)

    def describe(self) -> str:
        """``qemu:x86_64 guest kernel 7.3.4 (boot 1)``."""
        return f"{self.spec} guest kernel {self.kernel_release} (boot {self.boots})"

    @property
    def kernel_release(self) -> str:
        """``uname -r`` in the guest."""
        return str(self._info.get("kernel_release", "unknown"))

    @property
    def console_log(self) -> Path | None:
        """The current guest's console log."""
        return self._guest.console_log if self._guest is not None else None

    # -- the channel -----------------------------------------------------
    def _request(self, op: str, args: tuple[Any, ...],
                 timeout: float | None = None) -> tuple[int, Any]:
        """One request to the agent; boots a guest first if the last one crashed."""
        if self._guest is None:
            self.restart()
        assert self._guest is not None
        try:
            return self._guest.call(op, args, self.call_timeout if timeout is None else timeout)
        except GuestCrashed as exc:
            self._guest = None  # already killed; the next call boots a fresh one
            self.crashes.append(exc)
            raise

    def _guarded(self, action: Callable[[Guest], _T]) -> _T:
        """``action(guest)``; a crash drops the guest (the next request boots one)."""
        if self._guest is None:
            self.restart()
        assert self._guest is not None
        try:
            return action(self._guest)
        except GuestCrashed as exc:
            self._guest = None
            self.crashes.append(exc)
            raise

    # -- streaming jobs (the agent's ``job`` op) ---------------------------
    def job_start(self, target: str, args: tuple[Any, ...]) -> int:
        """Start ``target`` (``module:callable``) as a job in a forked agent; its seq.

        The job streams events and takes commands (:meth:`job_send`,
        :meth:`job_receive`) until its final reply; meanwhile no other request.
        """
        return self._guarded(lambda guest: guest.job_start("job", (target, args)))

    def job_send(self, message: Any) -> None:
        """A command to the running job."""
        self._guarded(lambda guest: guest.job_send(message))

    def job_receive(self, seq: int, timeout: float | None = None) -> tuple[bool, int, Any,
                                                                         str | None]:
        """The job's next frame ``(final, status, payload, splat)`` within ``timeout``
        (default: the per-call watchdog); GuestCrashed when the guest hangs or dies."""
        limit = self.call_timeout if timeout is None else timeout
        return self._guarded(lambda guest: guest.job_receive(seq, limit))

    def crash_logged(self, logged: str, during: str) -> GuestCrashed:
        """End the guest for a splat its kernel logged ``during`` something (a job's
        case): the GuestCrashed, with the console's excerpt, to report."""
        guest, self._guest = self._guest, None
        if guest is None:
            return GuestCrashed("warning", logged, "", None, during)
        crash = guest.crash_logged(logged, during)
        self.crashes.append(crash)
        return crash

    def kill_guest(self) -> None:
        """Kill the current guest at once (an interrupted job); the next request boots."""
        guest, self._guest = self._guest, None
        if guest is not None:
            guest.kill()

    def request(self, op: str, args: tuple[Any, ...]) -> tuple[int, Any]:
        """One request to the agent with the per-call watchdog (see :meth:`_request`)."""
        return self._request(op, args)

    @property
    def session(self) -> Hashable:
        """The current boot while its guest runs (a crash ends it, and the children
        forked in it); None while no guest runs."""
        return self.boots if self._guest is not None else None

    # -- beyond the contract ----------------------------------------------
    def run(self, argv: Sequence[str], timeout: float = 600.0) -> tuple[int, bytes, bool]:
        """Run a command in the guest: ``(exit status, output, timed_out)``.

        The watchdog for this call is ``timeout`` plus a margin, so the guest
        kills a slow command itself and only a hung guest counts as a hang.
        """
        status, payload = self._request("run", (list(argv), timeout), timeout + 30.0)
        if status != OK:
            raise reply_error(status, payload, self.spec)
        code, output, timed_out = payload
        return code, output, bool(timed_out)

    def put(self, path: str, data: bytes, mode: int = 0o755) -> None:
        """Write a file in the guest (a program or script for :meth:`run`)."""
        status, payload = self._request("put", (path, data, mode))
        if status != OK:
            raise reply_error(status, payload, self.spec)

    def run_selftests(self, timeout: float = 600.0,
                      suites: Sequence[str] = SELFTESTS) -> str:
        """Run the kernel's C selftests in this guest; their TAP output, suite after suite."""
        parts: list[str] = []
        for suite in suites:
            try:
                code, output, timed_out = self.run([suite], timeout)
            except FileNotFoundError:
                parts.append(f"# {suite}: not in the guest image\n")
                continue
            parts.append(output.decode("utf-8", "replace"))
            if timed_out:
                parts.append(f"# {suite}: timed out after {timeout:.0f} s\n")
            elif code != 0:
                parts.append(f"# {suite}: exit status {code}\n")
        return "".join(parts)
