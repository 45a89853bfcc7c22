"""A bootable test guest for one architecture: kernel + initramfs, built or reused.

``ensure_guest_image`` is the one call the qemu backend and the CLI make. Its steps,
each a cache entry of its own keyed by its inputs:

  kernel      source tree + config fragment + compiler     (minutes; vm_images.kernel)
  selftests   the kernel build + libcap-dev                 (seconds; vm_images.selftests)
  userspace   Debian package versions + prune list          (seconds; vm_images.userspace)
  initramfs   userspace + selftests + project runtime + /init (seconds; vm_images.initramfs)

so a second call rebuilds nothing, and an edit to the guest agent rebuilds only the
initramfs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vm_images.arch import Arch, get_arch
from vm_images.cache import cache_dir, input_key
from vm_images.initramfs import build_initramfs
from vm_images.kernel import build_kernel
from vm_images.kernel_source import KernelSource, debian_source, local_source
from vm_images.selftests import build_selftests
from vm_images.steps import Progress, StepError
from vm_images.userspace import build_userspace

T = TypeVar("T")


@dataclass(frozen=True)
class GuestImage:
    """Everything needed to boot a test guest of one architecture."""

    arch: Arch
    kernel: Path            # bzImage / Image
    initramfs: Path         # newc cpio archive
    kernel_release: str     # `uname -r` in the guest
    key: str                # changes whenever any input of either file does
    log_dir: Path           # links to every build step's log, one directory per image
    kernel_config: Path     # the kernel's final .config
    build_dir: Path         # the kernel's O= directory (vmlinux, for decoding traces)


def ensure_guest_image(arch: str, *, kernel_src: Path | None = None,
                       progress: Progress = print) -> GuestImage:
    """Build, or find in the cache, the kernel and initramfs for ``arch``.

    ``kernel_src`` is a kernel source tree to build instead of Debian's linux-source-7.3
    package. ``progress`` receives one line per step (what runs, where its log is,
    cached or built and how long). A failing step raises StepError naming the step and
    its log; a bad ``arch`` or ``kernel_src`` raises ValueError.
    """
    target = get_arch(arch)
    start = time.monotonic()
    source: KernelSource = _step(
        "kernel source",
        lambda: local_source(kernel_src) if kernel_src is not None else debian_source())
    kernel, _ = _step(f"kernel {target.name}",
                      lambda: build_kernel(target, source, progress=progress))
    selftests, _ = _step(f"selftests {target.name}",
                         lambda: build_selftests(target, source, kernel, progress=progress))
    userspace, _ = _step(f"userspace {target.name}",
                         lambda: build_userspace(target, progress=progress))
    initramfs, _ = _step(f"initramfs {target.name}",
                         lambda: build_initramfs(target, userspace, selftests,
                                                 progress=progress))
    key = input_key([kernel.key, initramfs.key])
    log_dir = _link_logs(key, {
        "kernel": kernel.logs, "selftests.log": selftests.log,
        "userspace.log": userspace.log, "initramfs.log": initramfs.log,
    })
    progress(f"[image {target.name}] ready in {time.monotonic() - start:.1f} s: "
             f"Linux {kernel.release}, key {key}")
    return GuestImage(arch=target, kernel=kernel.image, initramfs=initramfs.path,
                      kernel_release=kernel.release, key=key, log_dir=log_dir,
                      kernel_config=kernel.config, build_dir=kernel.build_dir)


def _step(name: str, action: Callable[[], T]) -> T:
    """Run one phase; a failure that is not already a StepError becomes one naming it
    (a missing compiler, an apt download that failed). Bad input stays a ValueError."""
    try:
        return action()
    except (StepError, ValueError):
        raise
    except (RuntimeError, OSError) as e:
        raise StepError(name, None, f"{type(e).__name__}: {e}") from e


def _link_logs(key: str, logs: dict[str, Path]) -> Path:
    """``images/KEY/logs``: a symlink per step's log, so one path shows them all."""
    log_dir = cache_dir("images", key) / "logs"
    log_dir.mkdir(exist_ok=True)
    for name, target in logs.items():
        link = log_dir / name
        if os.path.lexists(link):
            if os.readlink(link) == str(target):
                continue
            link.unlink()
        link.symlink_to(target)
    return log_dir
