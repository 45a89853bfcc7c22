"""This project's own Python packages, as the guest gets them.

The guest agent (backends.qemu.agent) and what it imports run inside the guest, from
the checkout this module sits in: uapi_headers, backends, and harness when the
checkout has it. With them go the project's pure-Python dependencies that Debian
bookworm does not package, copied from the host's environment (cffi and its backend
come from Debian instead: the backend is compiled for the guest's architecture).
pytest and its dependencies are copied from the host too, so the suite runs in the
guest under the very pytest version that replays its reports on the host.

Every copied file is an input of the initramfs key (``source_digest``), so editing
the agent rebuilds the initramfs, and only it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

#: The checkout holding vm_images/ and the packages below.
CHECKOUT = Path(__file__).resolve().parent.parent

#: The project's packages copied into the guest (those the checkout has).
PACKAGES = ("uapi_headers", "backends", "harness")

#: Pure-Python dependencies of those packages with no bookworm package: taken from
#: wherever the host's Python imports them (pyproject.toml lists them). pytest's own
#: stack is here so the guest runs the suite with the host's exact pytest (its report
#: serialisation must match the host's, which replays the reports).
HOST_MODULES = ("ioctl_opt", "pyudev", "pytest", "_pytest", "py", "pluggy", "iniconfig",
                "packaging", "pygments")

#: Parts of host modules the guest never imports, left out to keep the initramfs small
#: (every MB costs boot time under TCG). pytest's terminal writer imports pygments
#: for highlighting, which reaches only a few of its ~600 lexer modules.
HOST_MODULE_KEEP: dict[str, tuple[str, ...]] = {
    "pygments": ("pygments/lexers/__init__.py", "pygments/lexers/_mapping.py",
                 "pygments/lexers/python.py", "pygments/lexers/diff.py"),
}
HOST_MODULE_DROP: dict[str, tuple[str, ...]] = {
    "pygments": ("pygments/lexers/",),
}

#: Where all of it goes: on the guest python3.11's default sys.path, apart from
#: Debian's own packages.
GUEST_SITE = "usr/local/lib/python3.11/dist-packages"

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".swp"}


class RuntimeAssemblyError(RuntimeError):
    """The runtime cannot be assembled (a dependency is not importable on the host)."""


def _package_files(top: Path, base: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.suffix not in _SKIP_SUFFIXES:
                found.append((path, path.relative_to(base).as_posix()))
    return found


def _host_module_files(name: str) -> list[tuple[Path, str]]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeAssemblyError(f"the guest needs Python module {name!r}, which the host "
                            f"cannot import: pip install the project's dependencies")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: take its directory
        files = _package_files(origin.parent, origin.parent.parent)
    else:
        files = [(origin, origin.name)]
    keep, drop = HOST_MODULE_KEEP.get(name, ()), HOST_MODULE_DROP.get(name, ())
    files = [(path, rel) for path, rel in files
             if rel in keep or not any(rel.startswith(prefix) for prefix in drop)]
    compiled = [rel for path, rel in files if path.suffix in (".so", ".pyd")]
    if compiled:
        raise RuntimeAssemblyError(f"host module {name} has compiled parts ({compiled[0]}) that "
                            "would not run on another architecture")
    return files


def _dist_info_files(names: tuple[str, ...]) -> list[tuple[Path, str]]:
    """The ``*.dist-info`` directories of the distributions that provide ``names``:
    pluggy (1.6 and later) and pytest read their own versions from that metadata."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, Path] = {}
    for name in names:
        for dist_name in providers.get(name, []):
            path = getattr(importlib.metadata.distribution(dist_name), "_path", None)
            if path is not None and Path(path).is_dir():
                found[str(path)] = Path(path)
    files: list[tuple[Path, str]] = []
    for path in sorted(found.values()):
        files += _package_files(path, path.parent)
    return files


def runtime_files(checkout: Path = CHECKOUT) -> Iterator[tuple[Path, str]]:
    """``(host file, path under GUEST_SITE)`` for everything the guest's runtime holds."""
    for package in PACKAGES:
        top = checkout / package
        if (top / "__init__.py").is_file():  # harness is optional
            yield from _package_files(top, checkout)
    for name in HOST_MODULES:
        yield from _host_module_files(name)
    yield from _dist_info_files(HOST_MODULES)


def source_digest(checkout: Path = CHECKOUT) -> str:
    """A hash of the runtime's guest paths and contents (not the files' times)."""
    digest = hashlib.sha256()
    for path, rel in runtime_files(checkout):
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def stage_runtime(dest_root: Path, checkout: Path = CHECKOUT) -> list[str]:
    """Copy the runtime under ``dest_root/GUEST_SITE``; returns the top-level names."""
    site = dest_root / GUEST_SITE
    copied: set[str] = set()
    for path, rel in runtime_files(checkout):
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.add(rel.split("/")[0].removesuffix(".py"))
    return sorted(copied)
