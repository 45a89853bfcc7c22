"""The guest's end of the agent channel: finding the virtio-serial port, reading, writing.

Guest-side: stdlib only.
"""

from __future__ import annotations

import glob
import os
import select
import time

from backends.qemu.protocol import PORT_NAME

_READ_SIZE = 1 << 16


def find_port(name: str = PORT_NAME) -> str:
    """The /dev node of the virtio-serial port called ``name``.

    udev makes /dev/virtio-ports/NAME; without udev (the initramfs) the name is
    in /sys/class/virtio-ports/vportNpM/name.
    """
    link = f"/dev/virtio-ports/{name}"
    if os.path.exists(link):
        return link
    for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
        with open(name_file) as f:
            if f.read().strip() == name:
                return "/dev/" + os.path.basename(os.path.dirname(name_file))
    raise FileNotFoundError(f"no virtio-serial port named {name}")


class Receiver:
    """Reads from the channel, spinning a while before blocking.

    After a reply the next request usually follows within microseconds (the
    host's test code runs between calls). Blocking in read() idles the vCPU:
    under TCG the guest's switch to the idle task and back, and QEMU waking a
    halted vCPU thread, cost more than the request itself. So poll for
    ``spin`` seconds after the last request, then block in poll(2).
    """

    def __init__(self, fd: int, spin: float) -> None:
        self._fd = fd
        self._spin = spin
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        os.set_blocking(fd, False)

    def read(self) -> bytes:
        """The next bytes; b"" when the peer is gone (or, on a port, not connected)."""
        if self._spin > 0:
            deadline = time.monotonic() + self._spin
            # poll(0), not read(): an EAGAIN exception costs more under TCG.
            while not self._poller.poll(0) and time.monotonic() < deadline:
                pass
        while True:
            # poll first: under TCG a read() that fails with EAGAIN costs more
            # than a poll() that returns at once.
            self._poller.poll()  # POLLIN, or POLLHUP: then read() returns b""
            try:
                return os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                continue


def write_frame(fd: int, data: bytes) -> None:
    """Write a whole frame to the (non-blocking) channel; a virtio port takes
    at most 32 KiB per write."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
