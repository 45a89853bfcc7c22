"""Where a kernel tree comes from, and what identifies its contents.

Two kinds of source:

* Debian's ``linux-source-7.x`` package (the default). Its identity is the package
  name and exact version (the .deb's file name): a Debian upload is immutable.
* A tree given with ``--kernel-src PATH``. Its identity is the Makefile's version plus
  a fingerprint of every file's relative path, size and mtime (0.3 s for a 96,000-file
  tree with a warm page cache; hashing the contents would take a minute). Any edit
  anywhere, tracked by git or not, changes it.

``slot`` says where a build of the source lives. For a Debian package it is the identity.
For a local tree it is the tree's path: an edited tree is rebuilt in the same build
directory, so make recompiles only what changed instead of starting from nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vm_images.debian import AptConfig, deb_version, linux_source_tree

DEFAULT_PACKAGE = "linux-source-7.3"


@dataclass(frozen=True)
class KernelSource:
    """A kernel source tree and the string that identifies its contents."""

    path: Path
    identity: str      # changes whenever the contents do; part of every downstream key
    slot: str          # where its builds live (see the module docstring)
    description: str   # for people: "Debian linux-source-7.3 7.3.4-1~bpo13+1"


def makefile_version(tree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL + EXTRAVERSION from the top-level Makefile."""
    fields: dict[str, str] = {}
    with open(tree / "Makefile") as f:
        for line in f:
            m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", line)
            if m:
                fields.setdefault(m.group(1), m.group(2))
            if len(fields) == 4:
                break
    if "VERSION" not in fields:
        raise ValueError(f"{tree}: no VERSION in the top-level Makefile; not a kernel tree?")
    version = ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))
    return version + fields.get("EXTRAVERSION", "")


def tree_fingerprint(tree: Path) -> str:
    """A hash of every file's relative path, size and mtime under ``tree`` (not .git)."""
    digest = hashlib.sha256()
    stack = [tree]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != ".git":
                    stack.append(Path(entry.path))
                continue
            st = entry.stat(follow_symlinks=False)
            rel = os.path.relpath(entry.path, tree)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def local_source(path: Path | str) -> KernelSource:
    """A kernel tree on disk (``--kernel-src``)."""
    tree = Path(path).resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise ValueError(f"--kernel-src {tree}: not a kernel source tree (no Makefile/Kconfig)")
    if (tree / ".config").exists():
        # Out-of-tree builds refuse a configured source tree ("source tree is not clean").
        raise ValueError(f"--kernel-src {tree}: has a .config; run 'make mrproper' there first")
    version = makefile_version(tree)
    return KernelSource(tree, f"local:{version}:{tree_fingerprint(tree)}", f"local:{tree}",
                        f"{tree} (Linux {version})")


def debian_source(package: str = DEFAULT_PACKAGE, config: AptConfig | None = None) -> KernelSource:
    """Debian's linux-source package, downloaded and unpacked once into the cache.

    A warm call asks apt nothing: the resolved version is remembered with the private
    lists (vm_images.debian), and the download and the unpacked tree are cached.
    """
    config = config or AptConfig()
    deb = config.download(package)
    tree = linux_source_tree(deb)
    identity = f"debian:{deb.name}"
    return KernelSource(tree, identity, identity, f"Debian {package} {deb_version(deb)}")
