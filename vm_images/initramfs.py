"""Assemble the guest's initramfs: userspace, this project's runtime, the selftests, /init.

Layers, later ones winning where paths collide:
  1. the Debian userspace (vm_images.userspace): python3.11, cffi, busybox;
  2. the project's runtime packages (vm_images.runtime), precompiled, under
     /usr/local/lib/python3.11/dist-packages;
  3. the static C selftests at /selftests/ (and /selftests/vfio, which runs the VFIO
     ones against the guest's edu);
  4. /init (vm_images/guest/init), a console node and a root account.

Cache entry ``initramfs/<key>``: the userspace's and the selftests' keys, the
runtime's source digest, /init's contents and RECIPE. The kernel is not an input
(everything is built in, there are no modules), so a runtime edit rebuilds this only.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm_images import cpio
from vm_images.arch import Arch
from vm_images.cache import build_once, file_digest, input_key, prune_entries
from vm_images.kernel import compiler_version
from vm_images.runtime import GUEST_SITE, source_digest, stage_runtime
from vm_images.selftests import Selftests
from vm_images.steps import Progress, Reporter
from vm_images.userspace import Userspace, compile_python

RECIPE = "initramfs-3"
#: Finished initramfs entries kept (all architectures together) when a new one is built;
#: older ones go once they are an hour old. Each is about 45 MB and takes a second to
#: rebuild, and every edit of the runtime makes one.
KEEP = 12
INIT = Path(__file__).resolve().parent / "guest" / "init"
#: /selftests/vfio: runs the VFIO selftests against the guest's edu (for the lineup)
VFIO_SELFTESTS = INIT.parent / "vfio-selftests"
#: /bin/bind-edu: hands edu to vfio-pci (at boot, and after a warm start's restore)
BIND_EDU = INIT.parent / "bind-edu"
#: The archive is not compressed: under TCG the guest kernel spent 1.3 s of every boot
#: inflating 15 MB of gzip (2.9 s to unpack against 1.4 s for the plain 44 MB), and
#: guests are booted far more often than images are built. The disk costs 44 MB.
GZIP_LEVEL: int | None = None


@dataclass(frozen=True)
class Initramfs:
    """A built initramfs image."""

    path: Path
    key: str
    log: Path
    runtime_packages: tuple[str, ...]   # the project packages it carries


def build_initramfs(arch: Arch, userspace: Userspace, selftests: Selftests, *,
                    progress: Progress = print) -> tuple[Initramfs, bool]:
    """The initramfs for ``arch`` from its parts, built now or found in the cache."""
    report = Reporter(f"initramfs {arch.name}", progress)
    key = initramfs_key(arch, userspace.key, selftests.key,
                        source_digest() + compiler_version(arch),
                        file_digest(INIT) + file_digest(VFIO_SELFTESTS)
                        + file_digest(BIND_EDU))

    def build(entry: Path) -> dict[str, Any]:
        start = time.monotonic()
        log = entry / "build.log"
        log.unlink(missing_ok=True)
        staged = entry / "runtime"
        shutil.rmtree(staged, ignore_errors=True)
        packages = stage_runtime(staged)
        _build_ioctl_loop(arch, staged / GUEST_SITE, log, report)
        compile_python(staged, [staged / GUEST_SITE], log, report)
        image = entry / ("initramfs.cpio" if GZIP_LEVEL is None else "initramfs.cpio.gz")
        report.say(f"writing {image} (log: {log})")
        count = cpio.write_initramfs(image, _entries(userspace.root, staged, selftests),
                                     gzip_level=GZIP_LEVEL)
        took = time.monotonic() - start
        report.say(f"{count} files, {image.stat().st_size / 1e6:.1f} MB, in {took:.1f} s; "
                   f"runtime: {', '.join(packages)}")
        return {"path": str(image), "log": str(log), "runtime_packages": packages}

    data, hit = build_once("initramfs", key, build)
    if not hit:
        prune_entries("initramfs", KEEP)
    result = Initramfs(Path(data["path"]), key, Path(data["log"]),
                       tuple(str(p) for p in data["runtime_packages"]))
    if hit:
        report.say(f"cached: {result.path}")
    return result, hit


def _build_ioctl_loop(arch: Arch, site: Path, log: Path, report: Reporter) -> None:
    """The kernel backend's native ioctl loop (backends/kernel/ioctl_loop.c), built for
    the guest's architecture beside its source, where backends.kernel.native finds it."""
    from backends.kernel import native

    target = site / native.PREBUILT.relative_to(native.SOURCE.parents[2])
    target.parent.mkdir(parents=True, exist_ok=True)
    report.run("build the native ioctl loop",
               native.compile_argv(f"{arch.cross_prefix}gcc", target), log, quiet=True)


def initramfs_key(arch: Arch, userspace_key: str, selftests_key: str, runtime_digest: str,
                  init_digest: str) -> str:
    """The cache key of an initramfs from the keys and digests of its parts."""
    return input_key([RECIPE, arch.name, userspace_key, selftests_key, runtime_digest,
                      init_digest])


def _entries(userspace: Path, runtime: Path, selftests: Selftests) -> Iterator[cpio.Entry]:
    for name in ("dev", "proc", "sys", "tmp", "run", "etc", "selftests"):
        yield cpio.directory(name)
    yield cpio.directory("root", 0o700)
    # The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    yield cpio.char_device("dev/console", 5, 1)
    yield from cpio.tree(userspace)
    yield from cpio.tree(runtime)
    for program in selftests.programs:
        yield cpio.file(f"selftests/{program.name}", program, 0o755)
    yield cpio.file("selftests/vfio", VFIO_SELFTESTS, 0o755)
    yield cpio.file("init", INIT, 0o755)
    yield cpio.file("bin/bind-edu", BIND_EDU, 0o755)
    # Enough of an account database for getpwuid(0) (Python's getpass, ~ expansion).
    yield cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    yield cpio.file("etc/group", b"root:x:0:\n")
