"""The guest's userspace: Debian's python3.11, cffi and busybox for the target architecture.

Packages come from bookworm (the host's Python version, so the host can precompile
bytecode the guest will use) through a private apt configuration, and are unpacked
with ``dpkg-deb -x`` into one root: no maintainer scripts, so arm64 works on an
x86_64 host. Then:

* parts a test guest never uses are pruned (documentation, locales, iconv modules,
  IDLE/tkinter, extension modules whose libraries are not shipped);
* every .py is compiled to .pyc by a host Python of the same version, with
  unchecked-hash invalidation (the cpio's file times cannot invalidate them), which
  cuts the guest's import time about five-fold under emulation;
* every ELF file's interpreter and shared libraries are checked to be in the root,
  so a missing library fails the build naming it, not a boot with a cryptic error.

Cache entry ``userspace/<key>``: the architecture, the exact package versions, the
package and prune lists, and the compiling Python's version.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm_images.arch import Arch
from vm_images.cache import build_once, input_key
from vm_images.debian import GUEST_SUITES, AptConfig
from vm_images.elf import missing_libraries
from vm_images.steps import Progress, Reporter

RECIPE = "userspace-2"
PYTHON = "3.11"

#: Debian (bookworm) packages of the guest, for the target architecture.
PACKAGES = (
    # C library and the runtime libraries python3.11 and its extension modules link.
    "libc6", "libgcc-s1", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "liblzma5",
    "libuuid1", "libcrypt1", "libreadline8", "libtinfo6",
    # The interpreter and its standard library.
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    # cffi in ABI mode: the arch's _cffi_backend, cffi itself, its C parser (+ ply).
    "python3-cffi-backend", "python3-cffi", "python3-pycparser", "python3-ply",
    # libudev for pyudev (copied from the host, see vm_images.runtime): `probe` in a guest.
    "libudev1", "libcap2",
    # /init's shell and tools: one static binary.
    "busybox-static",
)

#: Paths (globs, relative to the root; ``{triplet}`` is the multiarch directory) removed
#: after unpacking. Extension modules are removed with the library they would need:
#: SQLite, Berkeley DB, ncurses, NIS, OpenSSL (hashlib has built-in fallbacks).
PRUNE = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
    "usr/share/locale", "usr/share/i18n", "usr/share/bug", "usr/share/gdb",
    "usr/lib/{triplet}/gconv", "usr/lib/{triplet}/audit", "usr/libexec/getconf",
    "usr/lib/python3.11/idlelib", "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/turtledemo", "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/ensurepip", "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/config-3.11-*",
    "usr/lib/python3.11/lib-dynload/_sqlite3.*", "usr/lib/python3.11/lib-dynload/_dbm.*",
    "usr/lib/python3.11/lib-dynload/_curses*", "usr/lib/python3.11/lib-dynload/nis.*",
    "usr/lib/python3.11/lib-dynload/_ssl.*", "usr/lib/python3.11/lib-dynload/_hashlib.*",
    "usr/lib/python3.11/lib-dynload/_tkinter.*",
    # CPython's own test helpers.
    "usr/lib/python3.11/lib-dynload/_test*", "usr/lib/python3.11/lib-dynload/_ctypes_test.*",
    "usr/lib/python3.11/lib-dynload/_xxtestfuzz.*", "usr/lib/python3.11/lib-dynload/xxlimited*",
)

#: Where the guest's dynamic loader finds libraries (no ld.so.cache in the image).
LIBRARY_DIRS = ("/lib/{triplet}", "/usr/lib/{triplet}", "/lib", "/usr/lib")

#: The guest's directories holding Python code to precompile.
PYTHON_DIRS = ("usr/lib/python3.11", "usr/lib/python3/dist-packages")


@dataclass(frozen=True)
class Userspace:
    """An unpacked, pruned, precompiled guest root for one architecture."""

    root: Path
    key: str
    packages: dict[str, str]   # qualified name -> version
    log: Path


def build_userspace(arch: Arch, *, progress: Progress = print) -> tuple[Userspace, bool]:
    """The guest root for ``arch``, built now or found in the cache; ``(result, hit)``."""
    report = Reporter(f"userspace {arch.name}", progress)
    apt = AptConfig(GUEST_SUITES, (arch.debian_arch,))
    versions = apt.resolve(PACKAGES)
    key = userspace_key(arch, versions)

    def build(entry: Path) -> dict[str, Any]:
        root, log = entry / "root", entry / "build.log"
        log.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        debs = apt.fetch(PACKAGES)
        report.say(f"unpacking {len(debs)} bookworm {arch.debian_arch} packages into {root} "
                   f"(log: {log})")
        for deb in debs.values():
            report.run(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", str(deb), str(root)], log,
                       quiet=True)
        _prune(root, arch)
        # What python3-minimal would install; the guest runs `python3 -m ...`.
        (root / "usr/bin/python3").symlink_to(f"python{PYTHON}")
        compile_python(root, [root / d for d in PYTHON_DIRS], log, report)
        lacking = missing_libraries(root, [d.format(triplet=arch.gnu_triplet)
                                           for d in LIBRARY_DIRS])
        if lacking:
            listing = "\n".join(f"  {f}: {', '.join(libs)}" for f, libs in sorted(lacking.items()))
            raise report.fail("check shared libraries", log,
                              "these files need libraries no package provides "
                              f"(add the package to PACKAGES, or prune the file):\n{listing}")
        return {"root": str(root), "packages": versions, "log": str(log)}

    data, hit = build_once("userspace", key, build)
    result = Userspace(Path(data["root"]), key, dict(versions), Path(data["log"]))
    report.say(("cached: " if hit else "ready: ") + str(result.root))
    return result, hit


def userspace_key(arch: Arch, versions: dict[str, str]) -> str:
    """The cache key: architecture, exact package versions, and how they are laid out."""
    return input_key([RECIPE, arch.name, PYTHON,
                      *sorted(f"{p}={v}" for p, v in versions.items()),
                      "|", *PRUNE, "|", *LIBRARY_DIRS, "|", *PYTHON_DIRS])


def _prune(root: Path, arch: Arch) -> None:
    for pattern in PRUNE:
        for path in root.glob(pattern.format(triplet=arch.gnu_triplet)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def matching_python() -> str:
    """A host interpreter whose bytecode the guest's python3.11 accepts."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON:
        return sys.executable
    found = shutil.which(f"python{PYTHON}")
    if found is None:
        raise RuntimeError(f"precompiling the guest's Python needs a host python{PYTHON} "
                           "(Debian bookworm: apt-get install python3.11-minimal)")
    return found


def compile_python(root: Path, directories: list[Path], log: Path, report: Reporter) -> None:
    """Compile every .py under ``directories`` (inside guest ``root``) to .pyc.

    File names inside the bytecode are the guest's paths (``-s root -p /``), so
    tracebacks in the guest name real files.
    """
    python = matching_python()
    existing = [str(d) for d in directories if d.is_dir()]
    if not existing:
        return
    report.run(f"precompile Python ({len(existing)} directories)",
               [python, "-m", "compileall", "-q", "-j", "0",
                "--invalidation-mode", "unchecked-hash", "-s", str(root), "-p", "/",
                *existing], log)

