"""What to boot: the QEMU command line for a guest whose agent serves a socket.

:class:`ImageLauncher` boots the image vm_images builds (the only place this
package touches vm_images); tests hand :class:`~backends.qemu.QemuBackend` a
launcher of their own that starts a stand-in for QEMU.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from backends.qemu import snapshot
from backends.qemu.protocol import PORT_NAME

#: where run logs go when the caller names no directory
LOG_DIR_ENV = "IOMMUFD_LOG_DIR"
#: host env variable handed to the guest agent as iommufd.agent_spin_us= (see
#: backends.qemu.port.Receiver)
SPIN_ENV = "IOMMUFD_AGENT_SPIN_US"


class Launcher(Protocol):
    """Makes the argv of one boot."""

    #: the guest architecture ("x86_64", "aarch64")
    arch: str

    def prepare(self) -> None:
        """Get what booting needs (build or fetch the image); may take minutes once."""

    def argv(self, socket_path: Path) -> list[str]:
        """The command that boots a guest whose agent serves ``socket_path``."""

    def log_dir(self) -> Path:
        """Where this run's console logs go."""


def agent_port_args(socket_path: Path, chardev_id: str = "agent") -> list[str]:
    """QEMU arguments for the agent's virtio-serial port, backed by a unix socket
    on which QEMU listens (``wait=off``: QEMU boots without waiting for us)."""
    return [
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id={chardev_id},path={socket_path},server=on,wait=off",
        "-device", f"virtserialport,chardev={chardev_id},name={PORT_NAME}",
    ]


def guest_cmdline() -> tuple[str, ...]:
    """Kernel command line items for an agent guest (the agent's tuning included)."""
    items = ["iommufd.mode=agent"]
    if os.environ.get(SPIN_ENV):
        items.append(f"iommufd.agent_spin_us={float(os.environ[SPIN_ENV]):g}")
    return tuple(items)


def run_log_dir(base: Path, arch: str) -> Path:
    """A fresh directory for one run's console logs under ``base``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"qemu-{arch}-{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(message: str) -> None:
    """A ``[qemu]`` progress line on stderr (image builds, warm starts)."""
    print(f"[qemu] {message}", file=sys.stderr, flush=True)


class ImageLauncher:
    """Boots the guest image vm_images builds for ``arch`` (cached by its inputs)."""

    def __init__(self, arch: str, *, log_dir: Path | None = None,
                 progress: Callable[[str], None] = progress, memory: str = "2G",
                 smp: int = 2) -> None:
        self.arch = arch
        self._log_base = log_dir
        self._log_dir: Path | None = None
        self._progress = progress
        self._memory = memory
        self._smp = smp
        self.image: Any = None

    def prepare(self) -> None:
        """Build or find the guest image (vm_images.image.ensure_guest_image)."""
        if self.image is None:
            from vm_images.image import ensure_guest_image
            self.image = ensure_guest_image(self.arch, progress=self._progress)

    def argv(self, socket_path: Path) -> list[str]:
        """``qemu-system-ARCH ... -kernel -initrd`` with the agent's port added."""
        self.prepare()
        image = self.image
        argv: list[str] = image.arch.qemu_argv(
            image.kernel, image.initramfs, append=guest_cmdline(),
            extra=agent_port_args(socket_path), memory=self._memory, smp=self._smp)
        return argv

    def snapshot_store(self, argv: Sequence[str],
                       sockets: Sequence[Path]) -> snapshot.SnapshotStore | None:
        """Where the warm-start state of a guest booted by ``argv`` lives (None when
        $IOMMUFD_QEMU_SNAPSHOT=0); ``sockets``: the paths in ``argv`` that change per boot."""
        if not snapshot.enabled():
            return None
        from vm_images.cache import cache_root
        return snapshot.SnapshotStore(cache_root() / "snapshots",
                                      snapshot.state_key(argv, sockets))

    def log_dir(self) -> Path:
        """$IOMMUFD_LOG_DIR (or the image's log directory) / qemu-ARCH-STAMP-PID."""
        if self._log_dir is None:
            base = self._log_base or (Path(os.environ[LOG_DIR_ENV])
                                      if os.environ.get(LOG_DIR_ENV) else None)
            if base is None:
                self.prepare()
                base = Path(self.image.log_dir)
            self._log_dir = run_log_dir(base, self.arch)
        return self._log_dir
