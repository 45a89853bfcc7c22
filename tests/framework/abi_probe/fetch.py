"""The real headers of the uAPI level that uapi_headers declares, fetched from Debian.

Both packages come through vm_images.debian's private apt configuration (the host's apt
setup is never touched) and land in the project cache, so a clean machine fetches them and
later runs reuse them without the network:

- ``linux-libc-dev`` 7.3.x (trixie-backports; trixie's own 6.12 is the default candidate,
  hence the explicit version prefix): include/uapi as installed, with one ``asm/``
  directory per Debian architecture under ``usr/include/<multiarch>``.
- ``linux-source-7.3``: the kernel tarball, for ``drivers/iommu/iommufd/iommufd_test.h``
  (the selftest ABI is not exported to userspace) and ``drivers/iommu/iommufd/main.c``
  (its ioctl table says which field ends each command's minimum size).
"""

from __future__ import annotations

import os
import platform
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vm_images.cache import cache_dir, input_key
from vm_images.debian import AptConfig, AptError

LIBC_DEV_PACKAGE = "linux-libc-dev"
SOURCE_PACKAGE = "linux-source-7.3"
VERSION_PREFIX = "7.3."
"""The uAPI level of uapi_headers (Linux 7.3.4); any 7.3.x upload of it will do."""

IOMMUFD_DIR = "drivers/iommu/iommufd"
SOURCE_FILES = ("iommufd_test.h", "main.c")
"""The files taken from the kernel tarball, relative to :data:`IOMMUFD_DIR`."""


class FetchError(RuntimeError):
    """The real headers could not be had (no network, no apt, a package missing)."""


@dataclass(frozen=True)
class RealHeaders:
    """Where the real headers are on disk, and which Debian uploads they came from."""

    include_dirs: tuple[Path, ...]
    """``usr/include`` of linux-libc-dev, then its ``usr/include/<multiarch>`` (for asm/)."""
    test_header: Path
    """drivers/iommu/iommufd/iommufd_test.h of the kernel source."""
    ioctl_table: Path
    """drivers/iommu/iommufd/main.c of the kernel source (``IOCTL_OP`` table)."""
    identity: str
    """The two .deb file names (name, version, arch): part of the probe's cache key."""


def multiarch(compiler: str = "cc") -> str:
    """The Debian multiarch triplet of the C compiler's target (``x86_64-linux-gnu``)."""
    try:
        proc = subprocess.run([compiler, "-print-multiarch"], capture_output=True, text=True,
                              check=False)
        triplet = proc.stdout.strip()
    except OSError:
        triplet = ""
    if triplet:
        return triplet
    # Compilers that do not know Debian's multiarch (clang without a Debian patch) say
    # nothing; the triplets of the two architectures this project targets are fixed.
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(),
                                                         platform.machine())
    return f"{machine}-linux-gnu"


def fetch_real_headers(config: AptConfig | None = None) -> RealHeaders:
    """Download and unpack both packages (cached) and return the header locations.

    Raises :class:`FetchError` when apt cannot resolve or download them.
    """
    config = config or AptConfig()
    try:
        libc_deb = config.download(LIBC_DEV_PACKAGE, VERSION_PREFIX)
        libc_root = config.unpack(LIBC_DEV_PACKAGE, VERSION_PREFIX)
        source_deb = config.download(SOURCE_PACKAGE, VERSION_PREFIX)
        source_root = config.unpack(SOURCE_PACKAGE, VERSION_PREFIX)
    except (AptError, OSError) as exc:
        raise FetchError(str(exc)) from exc

    include = libc_root / "usr" / "include"
    if not (include / "linux" / "iommufd.h").is_file():
        raise FetchError(f"{libc_deb.name}: no usr/include/linux/iommufd.h inside")
    include_dirs = [include]
    arch_dir = include / multiarch()
    if arch_dir.is_dir():
        include_dirs.append(arch_dir)

    iommufd_dir = _iommufd_sources(source_root, source_deb.name)
    return RealHeaders(
        include_dirs=tuple(include_dirs),
        test_header=iommufd_dir / "iommufd_test.h",
        ioctl_table=iommufd_dir / "main.c",
        identity=f"{libc_deb.name}|{source_deb.name}",
    )


def _iommufd_sources(source_root: Path, deb_name: str) -> Path:
    """drivers/iommu/iommufd of the kernel tarball inside the unpacked linux-source .deb.

    A tree that vm_images.debian.linux_source_tree() already unpacked (for kernel builds) is
    used as it is; otherwise only the few files needed are extracted, which costs seconds
    instead of the minutes and 1.5 GB of the whole tree.
    """
    tarballs = sorted((source_root / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise FetchError(f"{deb_name}: no linux-source tarball inside the package")
    tarball = tarballs[0]

    tree_top = tarball.parent / "tree"
    if (tarball.parent / "tree.done").exists():
        for top in tree_top.iterdir():
            candidate = top / IOMMUFD_DIR
            if all((candidate / name).is_file() for name in SOURCE_FILES):
                return candidate

    dest = cache_dir("abi-probe-src", input_key([deb_name, *SOURCE_FILES]))
    done = dest / "extracted"
    if not done.exists():
        wanted = {f"{IOMMUFD_DIR}/{name}": name for name in SOURCE_FILES}
        # One streaming pass that stops once both files are out: no xz binary needed, and
        # no reading on through the rest of the archive as tar(1) would.
        with tarfile.open(tarball, "r|*") as tar:
            for member in tar:
                name = wanted.get(member.name.split("/", 1)[-1])
                source = tar.extractfile(member) if name and member.isfile() else None
                if name is None or source is None:
                    continue
                partial = dest / f"{name}.partial"
                partial.write_bytes(source.read())
                os.replace(partial, dest / name)
                del wanted[f"{IOMMUFD_DIR}/{name}"]
                if not wanted:
                    break
        if wanted:
            raise FetchError(f"{tarball.name}: no {', '.join(sorted(wanted))}")
        done.touch()
    return dest
