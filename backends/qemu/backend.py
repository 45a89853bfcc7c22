"""QemuBackend: the backend contract in a QEMU guest, through the guest agent.

The calls travel as bytes (see :mod:`backends.qemu.protocol`): an ioctl's cdata
is sent as its buffer and the bytes that come back (on success and on an
errno) are written into it, so callers see exactly what an in-process ioctl
would have left there. Addresses are guest addresses (from ``alloc``, ``mmap``,
``memfd``), and fds are guest fds.

When the guest splats, hangs or dies, the running call raises
:class:`~backends.qemu.errors.GuestCrashed` with the console excerpt and the
next call boots a fresh guest (:meth:`QemuBackend.restart`), so one crash fails
one test. fds and addresses from before a crash mean nothing afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cffi

from backends.contract import (
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Backend,
    BackendError,
    IoctlArg,
)
from backends.qemu.calls import Call, Outcome, check_call
from backends.qemu.errors import GuestCrashed
from backends.qemu.guest import Guest
from backends.qemu.launcher import ImageLauncher, Launcher
from backends.qemu.protocol import ERRNO, OK, reply_error
from backends.qemu.splats import Splat

_ffi = cffi.FFI()

#: env overrides of the per-call watchdog and the boot timeout (seconds)
CALL_TIMEOUT_ENV = "IOMMUFD_QEMU_CALL_TIMEOUT"
BOOT_TIMEOUT_ENV = "IOMMUFD_QEMU_BOOT_TIMEOUT"
#: the kernel's C selftests inside the guest image
SELFTESTS = ("/selftests/iommufd", "/selftests/iommufd_fail_nth")


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _wire_arg(arg: IoctlArg) -> tuple[Any, Any]:
    """An ioctl argument as it travels, and the buffer to write the reply into."""
    if arg is None or isinstance(arg, int):
        return arg, None
    buf = _ffi.buffer(arg)
    return bytes(buf), buf


def _write_back(buf: Any, data: bytes | None) -> None:
    if buf is not None and data is not None and len(data) == len(buf):
        buf[:] = data


class QemuBackend(Backend):
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
        guest = Guest(self._launcher.argv(socket_path), socket_path,
                      log_dir / f"console-{self.arch}-{self.boots}.log",
                      call_timeout=self.call_timeout, boot_timeout=self.boot_timeout)
        self._info = guest.boot()
        self._guest = guest
        self.features = frozenset(self._info.get("features", ()))
        self.page_size = int(self._info.get("page_size", self.page_size))
        self.hugepage_size = int(self._info.get("hugepage_size", self.hugepage_size))

    def shutdown(self) -> None:
        """Power the guest off (killing QEMU if it does not go) and clean up. Idempotent."""
        self._stop_guest()
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

    def _call(self, op: str, *args: Any) -> Any:
        status, payload = self._request(op, args)
        if status == OK:
            return payload
        raise reply_error(status, payload, self.spec)

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open(2) in the guest."""
        fd: int = self._call("open", path, flags)
        return fd

    def close(self, fd: int) -> None:
        """close(2) in the guest."""
        self._call("close", fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2) in the guest; ``arg``'s buffer is updated as the kernel left it."""
        wire, buf = _wire_arg(arg)
        status, payload = self._request("ioctl", (fd, request, wire))
        if status == OK:
            ret, data = payload
            _write_back(buf, data)
            return int(ret)
        if status == ERRNO:
            _write_back(buf, payload[2])
        raise reply_error(status, payload, self.spec)

    def read(self, fd: int, length: int) -> bytes:
        """read(2) in the guest."""
        data: bytes = self._call("read", fd, length)
        return data

    def write(self, fd: int, data: bytes) -> int:
        """write(2) in the guest."""
        n: int = self._call("write", fd, bytes(data))
        return n

    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a guest fd; returns the guest address."""
        addr: int = self._call("mmap", fd, length, offset, prot, flags)
        return addr

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) in the guest."""
        self._call("munmap", addr, length)

    # -- user memory -----------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugepage: bool = False) -> int:
        """Anonymous memory in the agent; returns its guest address."""
        addr: int = self._call("alloc", length, align, shared, hugepage)
        return addr

    def peek(self, addr: int, length: int) -> bytes:
        """Read guest user memory."""
        data: bytes = self._call("peek", addr, length)
        return data

    def poke(self, addr: int, data: bytes) -> None:
        """Write guest user memory."""
        self._call("poke", addr, bytes(data))

    def memfd(self, length: int, name: str = "iommufd-harness") -> int:
        """memfd_create(2) + ftruncate(2) in the guest."""
        fd: int = self._call("memfd", length, name)
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) in the guest."""
        self._call("ftruncate", fd, length)

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Set the agent thread's fail-nth count; the agent arms it right before
        each following contract syscall (see backends.kernel.faultinject)."""
        self._call("fail_nth_write", n)

    def fail_nth_read(self) -> int:
        """The agent thread's remaining fail-nth count (0: the fault fired)."""
        n: int = self._call("fail_nth_read")
        return n

    # -- beyond the contract ----------------------------------------------
    def batch(self, calls: Sequence[Call], *, stop_on_error: bool = False) -> list[Outcome]:
        """Run independent calls in one round trip; ioctl buffers are updated
        in place as by :meth:`ioctl`. Calls are ``("ioctl", fd, request, arg)``,
        ``("alloc", length, align, shared, hugepage)``, ... (see
        :mod:`backends.qemu.calls`)."""
        wire: list[tuple[str, tuple[Any, ...]]] = []
        buffers: list[Any] = []
        for call in calls:
            check_call(call)
            op, *args = call
            buf = None
            if op == "ioctl":
                fd, request, *rest = args
                arg, buf = _wire_arg(rest[0] if rest else None)
                args = [fd, request, arg]
            wire.append((op, tuple(args)))
            buffers.append(buf)
        replies = self._call("batch", wire, stop_on_error)
        outcomes: list[Outcome] = []
        for (op, _), buf, (status, payload) in zip(wire, buffers, replies, strict=False):
            if status == OK:
                if op == "ioctl":
                    _write_back(buf, payload[1])
                    payload = payload[0]
                outcomes.append(Outcome(payload))
                continue
            if status == ERRNO and op == "ioctl":
                _write_back(buf, payload[2])
            outcomes.append(Outcome(error=reply_error(status, payload, self.spec)))
        return outcomes

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
