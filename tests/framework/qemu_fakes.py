"""Stand-ins for the guest, so the agent, the channel and QemuBackend are tested without QEMU.

* :class:`FakeKernel`: a tiny backend with real iommufd request numbers and
  struct layouts for three ioctls (IOAS_ALLOC, DESTROY, IOAS_IOVA_RANGES with
  its EMSGSIZE-and-write-back), fail-nth countdown, bytearray user memory, and
  "console" misbehaviour on demand: opening /proc/sysrq-trigger and writing
  ``c`` prints a panic and dies like a guest does; ``FAKE_WARN`` prints a
  WARNING splat and carries on; ``FAKE_HANG`` never answers. ``fork_child``
  really forks (the child serves a copy of the fake, see backends.kernel.fork);
  ``getpid``/``proc_status`` are this process's; capabilities are a set of names.
* ``python3 qemu_fakes.py --socket PATH``: a stand-in for qemu-system-*: prints
  a boot log on stdout (the console), listens on PATH like QEMU's chardev
  socket, and serves the real agent loop on the connection with FakeKernel.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script by the tests' launcher: find the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cffi

from backends.contract import Backend, BackendError, Features
from backends.kernel import procfs
from backends.kernel.fork import fork_backend

_ffi = cffi.FFI()

IOMMU_DESTROY = 0x3B80
IOMMU_IOAS_ALLOC = 0x3B81
IOMMU_IOAS_IOVA_RANGES = 0x3B84
VFIO_CHECK_EXTENSION = 0x3B65
FAKE_WARN = 0xFA01
FAKE_HANG = 0xFA02
FAKE_WARN_LATE = 0xFA03
SYSRQ = "/proc/sysrq-trigger"
BASE_ADDR = 0x7F00_0000_0000

PANIC_SPLAT = """\
[   12.345678] sysrq: Trigger a crash
[   12.345900] Kernel panic - not syncing: sysrq triggered crash
[   12.346100] CPU: 1 UID: 0 PID: 85 Comm: python3 Not tainted 7.3.4 #1
[   12.346200] Call Trace:
[   12.346300]  <TASK>
[   12.346400]  dump_stack_lvl+0x5d/0x80
[   12.346500]  panic+0x118/0x2f0
[   12.346600]  sysrq_handle_crash+0x1a/0x20
[   12.346700]  </TASK>
[   12.346800] Kernel Offset: disabled
[   12.346900] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---
"""

WARN_SPLAT = """\
[   20.100000] ------------[ cut here ]------------
[   20.100100] WARNING: CPU: 0 PID: 85 at drivers/iommu/iommufd/io_pagetable.c:1234 \
iopt_unmap_iova+0x42/0x90
[   20.100200] Modules linked in:
[   20.100300] CPU: 0 UID: 0 PID: 85 Comm: python3 Not tainted 7.3.4 #1
[   20.100400] RIP: 0010:iopt_unmap_iova+0x42/0x90
[   20.100500] Call Trace:
[   20.100600]  <TASK>
[   20.100700]  iommufd_ioas_unmap+0x8c/0x130
[   20.100800]  </TASK>
[   20.100900] ---[ end trace 0000000000000000 ]---
"""

BOOT_LOG = """\
[    0.000000] Linux version 7.3.4-fake (fake@qemu_fakes) #1 SMP
[    0.000000] Command line: console=ttyS0 panic=-1 iommufd.mode=agent
[    0.512000] iommufd: IOMMUFD is available
[    0.900000] Run /init as init process
"""


#: a file standing in for /dev/kmsg: the fake kernel logs splats there too
KMSG_ENV = "FAKE_KMSG"


def _console(text: str) -> None:
    kmsg = os.environ.get(KMSG_ENV)
    if kmsg:  # the ring buffer has the record before the console prints it
        with open(kmsg, "a") as f:
            f.write(text)
    sys.stdout.write(text)
    sys.stdout.flush()


def _log_only(text: str) -> None:
    kmsg = os.environ.get(KMSG_ENV)
    if kmsg:
        with open(kmsg, "a") as f:
            f.write(text)


def _console_only(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


class FakeKernel(Backend):
    """Enough of a kernel to exercise every path of the agent and the host."""

    def __init__(self) -> None:
        self.spec = "fake"
        self.features = frozenset({Features.SELFTEST, Features.FAIL_NTH, Features.MEMFD})
        self._next_fd = 3
        self._fds: dict[int, str] = {}
        self._ids: set[int] = set()
        self._next_id = 1
        self._mem: dict[int, bytearray] = {}
        self._brk = BASE_ADDR
        self._fail_nth = 0
        self.dropped_capabilities: set[str] = set()

    @property
    def kernel_release(self) -> str:
        return "7.3.4-fake"

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        if path not in ("/dev/iommu", SYSRQ):
            raise _oserror(errno.ENOENT)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = path
        return fd

    def close(self, fd: int) -> None:
        if self._fds.pop(fd, None) is None:
            raise _oserror(errno.EBADF)

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        if self._fds.get(fd) != "/dev/iommu":
            raise _oserror(errno.EBADF)
        if self._fail_nth:
            self._fail_nth -= 1
            if self._fail_nth == 0:
                raise _oserror(errno.ENOMEM)
        if request == VFIO_CHECK_EXTENSION:
            return 1 if arg == 3 else 0
        if request == FAKE_WARN:
            _console(WARN_SPLAT)
            return 0
        if request == FAKE_WARN_LATE:
            # A console slower than the reply: only the kernel log has it yet.
            _log_only(WARN_SPLAT)
            threading.Timer(0.3, _console_only, (WARN_SPLAT,)).start()
            return 0
        if request == FAKE_HANG:
            time.sleep(3600)
        if arg is None or isinstance(arg, int):
            raise _oserror(errno.ENOTTY)
        buf = _ffi.buffer(arg)
        if request == IOMMU_IOAS_ALLOC:
            size, _flags = struct.unpack_from("<II", buf)
            if size < 12:
                raise _oserror(errno.EINVAL)
            struct.pack_into("<I", buf, 8, self._next_id)
            self._ids.add(self._next_id)
            self._next_id += 1
            return 0
        if request == IOMMU_DESTROY:
            _size, obj_id = struct.unpack_from("<II", buf)
            if obj_id not in self._ids:
                raise _oserror(errno.ENOENT)
            self._ids.discard(obj_id)
            return 0
        if request == IOMMU_IOAS_IOVA_RANGES:
            return self._iova_ranges(buf)
        raise _oserror(errno.ENOTTY)

    def _iova_ranges(self, buf: Any) -> int:
        # struct iommu_ioas_iova_ranges: size, ioas_id, num_iovas, __reserved,
        # allowed_iovas, out_iova_alignment; two ranges around the MSI window.
        ranges = [(0, 0xFEDFFFFF), (0xFEF00000, 2**64 - 1)]
        _size, ioas_id, num, _res, uptr = struct.unpack_from("<IIIIQ", buf)
        if ioas_id not in self._ids:
            raise _oserror(errno.ENOENT)
        struct.pack_into("<I", buf, 8, len(ranges))
        struct.pack_into("<Q", buf, 24, 4096)
        if num < len(ranges):
            raise _oserror(errno.EMSGSIZE)  # outputs written first, as the kernel does
        self.poke(uptr, b"".join(struct.pack("<QQ", s, e) for s, e in ranges))
        return 0

    def read(self, fd: int, length: int) -> bytes:
        raise _oserror(errno.EAGAIN)

    def write(self, fd: int, data: bytes) -> int:
        if self._fds.get(fd) == SYSRQ and data.startswith(b"c"):
            _console(PANIC_SPLAT)
            os._exit(0)  # panic=-1 + -no-reboot: QEMU exits
        return len(data)

    def mmap(self, fd: int, length: int, offset: int = 0, prot: int = 3,
             flags: int = 1) -> int:
        return self.alloc(length)

    def munmap(self, addr: int, length: int) -> None:
        if self._mem.pop(addr, None) is None:
            raise _oserror(errno.EINVAL)

    # -- memory ----------------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        align = max(align, 4096)
        addr = -(-self._brk // align) * align
        self._mem[addr] = bytearray(length)
        self._brk = addr + -(-length // 4096) * 4096 + 4096  # a guard gap
        return addr

    def _region(self, addr: int, length: int) -> tuple[bytearray, int]:
        for start, data in self._mem.items():
            if start <= addr and addr + length <= start + len(data):
                return data, addr - start
        raise _oserror(errno.EFAULT)

    def peek(self, addr: int, length: int) -> bytes:
        data, off = self._region(addr, length)
        return bytes(data[off:off + length])

    def poke(self, addr: int, data: bytes) -> None:
        region, off = self._region(addr, len(data))
        region[off:off + len(data)] = data

    def memfd(self, length: int, name: str = "iommufd-harness") -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = f"memfd:{name}"
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        if fd not in self._fds:
            raise _oserror(errno.EBADF)

    def fail_nth_write(self, n: int) -> None:
        self._fail_nth = n

    def fail_nth_read(self) -> int:
        return self._fail_nth

    # -- processes -------------------------------------------------------
    def fork_child(self) -> Backend:
        # The child serves its copy of this fake: fds and objects as they were at
        # the fork, memory copied (private, unlike the shared buffers of the tests).
        return fork_backend(self, lambda: self)

    def getpid(self) -> int:
        return os.getpid()

    def proc_status(self, field: str, pid: int = 0) -> int:
        return procfs.status_value(field, pid)

    def drop_capability(self, name: str) -> bool:
        was = name not in self.dropped_capabilities
        self.dropped_capabilities.add(name)
        return was

    def restore_capability(self, name: str) -> None:
        self.dropped_capabilities.discard(name)


def broken_kernel() -> Backend:
    """A factory that fails like KernelBackend on a kernel without iommufd."""
    raise BackendError("kernel backend: no /dev/iommu on kernel 7.3.4-fake: "
                       "this kernel is built without iommufd")


def fake_qemu(argv: list[str] | None = None) -> int:
    """The stand-in for qemu-system-*: console on stdout, agent on a unix socket."""
    from backends.qemu.agent import load_factory, serve
    from backends.qemu.dispatch import Dispatcher
    from backends.qemu.kmsg import KmsgMonitor

    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--backend", default="tests.framework.qemu_fakes:FakeKernel")
    parser.add_argument("--boot-delay", type=float, default=0.0)
    parser.add_argument("--boot-panic", action="store_true")
    parser.add_argument("--no-kmsg", action="store_true", help="the agent watches no log")
    parser.add_argument("--protocol-version", type=int, default=None,
                        help="the agent claims this protocol version (a stale image)")
    # What QemuBackend adds for warm starts: no QMP here (saving fails), and a state to
    # restore is refused as QEMU refuses a bad one.
    parser.add_argument("-qmp", default=None)
    parser.add_argument("-incoming", default=None)
    opts = parser.parse_args(argv)
    if opts.incoming is not None:
        _console("qemu-system-x86_64: load of migration failed: Invalid argument\n")
        return 1
    if opts.protocol_version is not None:
        from backends.qemu import dispatch
        dispatch.PROTOCOL_VERSION = opts.protocol_version
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(opts.socket)  # QEMU makes its chardev socket first, then boots
    server.listen(1)
    _console(BOOT_LOG)
    if opts.boot_panic:
        _console(PANIC_SPLAT)
        return 0
    time.sleep(opts.boot_delay)
    conn, _ = server.accept()
    dispatcher = Dispatcher(load_factory(opts.backend))
    kmsg = None
    if not opts.no_kmsg:
        path = os.path.join(os.path.dirname(opts.socket), f"kmsg-{os.getpid()}")
        open(path, "w").close()
        os.environ[KMSG_ENV] = path
        kmsg = KmsgMonitor(path)
    try:
        serve(conn.fileno(), dispatcher, kmsg)
    finally:
        dispatcher.close()
    _console("[   30.000000] reboot: Power down\n")
    return 0


if __name__ == "__main__":
    sys.exit(fake_qemu())


# -- inside a fake guest's job (a test case run by harness.guestrun.worker) ------------

def _fake_console() -> Any:
    """The fake QEMU's console from a job it forked: the agent's stdout (the job's own
    stdout is its log), which is the console a real guest kernel prints to."""
    return open(f"/proc/{os.getppid()}/fd/1", "w")


def guest_warn() -> None:
    """What a kernel WARN looks like from inside the guest: a kmsg record, a console
    splat; the guest carries on."""
    _log_only(WARN_SPLAT)
    with _fake_console() as console:
        console.write(WARN_SPLAT)


def guest_panic() -> None:
    """A guest kernel panic from inside the guest: the splat on the console, then the
    machine is gone (QEMU exits with panic=-1 and -no-reboot)."""
    with _fake_console() as console:
        console.write(PANIC_SPLAT)
    time.sleep(0.5)  # QEMU's serial output is out before it exits; a killed pty's is not
    os.kill(os.getppid(), 9)
    os._exit(0)
