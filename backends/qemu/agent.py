"""The guest agent: serves the backend contract over a virtio-serial port.

The guest's /init runs ``python3 -m backends.qemu.agent /dev/virtio-ports/org.iommufd.agent``
and powers the guest off when it exits. The agent reads request frames, runs
them on a :class:`~backends.kernel.KernelBackend` (through
:class:`~backends.qemu.dispatch.Dispatcher`) and writes one reply frame per
request. It is single-threaded on purpose: fail-nth is per task, so arming it
and the ioctl under test run in this one thread, back to back (and fork(2) copies
only the calling thread anyway). A ``fork_child`` request forks the agent: the
child serves its calls over a socketpair (:mod:`backends.kernel.fork`), and the
agent relays the host's ``child_call`` requests to it.

Tests run the same loop on the host over a socketpair (``--fd``) with a fake
backend (``--backend module:callable``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence

from backends.contract import Backend
from backends.qemu.dispatch import Dispatcher
from backends.qemu.jobio import JobIO
from backends.qemu.kmsg import DEV_KMSG, KmsgMonitor
from backends.qemu.port import Receiver, find_port, write_frame
from backends.qemu.protocol import PORT_NAME, FrameReader, encode

#: how long to wait before reading again while no host is connected to the port
_DISCONNECTED_POLL = 0.02
#: kernel command line parameter (or env variable) setting the spin (see Receiver).
#: 2 ms: on an otherwise idle 2-core host it took a third off a TCG round trip;
#: on an overloaded one a spinning vCPU competes with QEMU's I/O thread, so the
#: host can turn it down (IOMMUFD_AGENT_SPIN_US=0, passed on the guest's cmdline).
SPIN_PARAM = "iommufd.agent_spin_us"
SPIN_ENV = "IOMMUFD_AGENT_SPIN_US"
DEFAULT_SPIN_US = 2000.0


def spin_us(cmdline_path: str = "/proc/cmdline") -> float:
    """The spin: $IOMMUFD_AGENT_SPIN_US, else iommufd.agent_spin_us= on the
    kernel command line (the host tunes a guest it boots), else the default."""
    if os.environ.get(SPIN_ENV):
        return float(os.environ[SPIN_ENV])
    try:
        with open(cmdline_path) as f:
            for word in f.read().split():
                if word.startswith(SPIN_PARAM + "="):
                    return float(word.partition("=")[2])
    except (OSError, ValueError):
        pass
    return DEFAULT_SPIN_US


def load_factory(spec: str) -> Callable[[], Backend]:
    """``module:callable`` -> the callable (a backend class or factory)."""
    module, _, attr = spec.partition(":")
    factory: Callable[[], Backend] = getattr(importlib.import_module(module), attr)
    return factory


def open_kmsg(path: str) -> KmsgMonitor | None:
    """The kernel log monitor, or None (``none``, or no such file: a host without
    /dev/kmsg access still serves, and the console alone reports splats)."""
    if path == "none":
        return None
    try:
        return KmsgMonitor(path)
    except OSError as exc:
        print(f"agent: not watching {path}: {exc.strerror}", file=sys.stderr)
        return None


def serve(fd: int, dispatcher: Dispatcher, kmsg: KmsgMonitor | None = None, *,
          spin: float = 0.0) -> None:
    """Answer requests on ``fd`` until an ``exit`` request (or a socket's EOF).

    With ``kmsg``, each reply names the first splat the kernel logged while
    the request ran; ``spin`` is how long to poll for the next request before
    blocking (see :class:`Receiver`).

    On a virtio port, read() returning 0 means no host is connected right now
    (the kernel's port_fops_read): wait and read again, dropping any partial
    frame, since a reconnecting host starts from a fresh frame. On a socket
    (tests), EOF means the peer is gone.
    """
    is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    receiver = Receiver(fd, spin)
    reader = FrameReader()
    clock = time.perf_counter
    while True:
        data = receiver.read()
        if not data:
            if is_socket:
                return
            reader.reset()
            time.sleep(_DISCONNECTED_POLL)
            continue
        reader.feed(data)
        while True:
            complete, message = reader.next()
            if not complete:
                break
            started = clock()
            seq, op, args = message
            if op == "job":  # the job reads and writes the channel itself
                dispatcher.job_io = JobIO(fd, seq, kmsg.path if kmsg is not None else None)
            status, payload = dispatcher.handle(op, args)
            splat = kmsg.poll() if kmsg is not None else None
            write_frame(fd, encode((seq, status, payload, splat)))
            dispatcher.account(clock() - started)
            if op == "exit":
                return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python3 -m backends.qemu.agent [PORT] [--fd N] [--backend M:C]``."""
    parser = argparse.ArgumentParser(prog="backends.qemu.agent", description=__doc__)
    parser.add_argument("port", nargs="?", help=f"the port's device (default: find {PORT_NAME})")
    parser.add_argument("--fd", type=int, help="serve an inherited fd instead of a port")
    parser.add_argument("--backend", default="backends.kernel:KernelBackend",
                        help="module:callable making the backend (tests pass a fake)")
    parser.add_argument("--spin-us", type=float, default=None,
                        help="poll this long for the next request before blocking")
    parser.add_argument("--kmsg", default=DEV_KMSG,
                        help="the kernel log to watch for splats ('none': do not)")
    opts = parser.parse_args(argv)
    dispatcher = Dispatcher(load_factory(opts.backend))
    kmsg = open_kmsg(opts.kmsg)
    if opts.fd is not None:
        fd = opts.fd
    else:
        port = opts.port if opts.port and os.path.exists(opts.port) else find_port()
        fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    try:
        spin = opts.spin_us if opts.spin_us is not None else spin_us()
        serve(fd, dispatcher, kmsg, spin=spin / 1e6)
    finally:
        dispatcher.close()
        if kmsg is not None:
            kmsg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
