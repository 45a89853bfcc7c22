"""Fetch Debian packages with a private apt configuration.

The host's apt setup is never touched: sources, lists and the download cache
live in a cache directory of ours, and apt is pointed at them with ``-o``
options. Packages are unpacked with ``dpkg-deb -x`` (no maintainer scripts),
which also works for packages of a foreign architecture.

Lists are fetched once and then kept, so versions stay put between runs (a build's
cache key holds the exact versions). When the mirror no longer has a version we
resolved (a point release replaced it), the lists are refreshed once and resolved again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vm_images.cache import cache_dir, input_key

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# trixie-backports carries the 7.x kernel packages (linux-source-7.3, linux-libc-dev 7.3.4).
DEFAULT_SUITES = ("trixie-backports", "trixie", "bookworm")
# The guests' userspace: bookworm's python3.11, the host's Python and bytecode version.
GUEST_SUITES = ("bookworm",)


class AptError(RuntimeError):
    """A package could not be resolved or fetched; the message names it."""


@dataclass(frozen=True)
class AptConfig:
    """A private apt configuration for a set of suites and one architecture family.

    ``architectures[0]`` is the primary one: unqualified package names mean that one.
    """

    suites: tuple[str, ...] = DEFAULT_SUITES
    architectures: tuple[str, ...] = ("amd64",)

    @property
    def root(self) -> Path:
        """The directory holding this configuration's sources, lists and downloads."""
        key = input_key([MIRROR, *self.suites, "|", *self.architectures])
        return cache_dir("apt", key)

    def options(self) -> list[str]:
        """apt-get / apt-cache options that make them use only our private state."""
        root = self.root
        return [
            "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", f"APT::Architectures={','.join(self.architectures)}",
            "-o", f"APT::Architecture={self.architectures[0]}",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]

    def qualified(self, package: str) -> str:
        """``name:arch``; unqualified names get the primary architecture."""
        return package if ":" in package else f"{package}:{self.architectures[0]}"

    def _write_sources(self) -> None:
        root = self.root
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        arch = ",".join(self.architectures)
        lines = [
            f"deb [arch={arch} signed-by={KEYRING}] {MIRROR} {suite} main"
            for suite in self.suites
        ]
        (root / "sources.list").write_text("\n".join(lines) + "\n")

    @property
    def _stamp(self) -> Path:
        return self.root / "updated"

    def update(self, *, force: bool = False) -> None:
        """Fetch the private package lists (once; ``force`` to refresh them)."""
        if self._stamp.exists() and not force:
            return
        self._write_sources()
        _run(["apt-get", *self.options(), "update"], "apt-get update (private config)")
        self._stamp.touch()

    def resolve(self, packages: Sequence[str]) -> dict[str, str]:
        """The newest version of each package: ``{qualified name: version}``."""
        return {qual: found[0] for qual, found in self._madison(packages).items()}

    def versions(self, package: str) -> list[str]:
        """Every version of ``package`` the private lists hold, newest first."""
        return self._madison([package])[self.qualified(package)]

    def version_of(self, package: str, prefix: str = "") -> str:
        """The newest version of ``package`` starting with ``prefix`` (e.g. ``"7.3."``)."""
        for version in self.versions(package):
            if version.startswith(prefix):
                return version
        raise AptError(f"apt: no version {prefix}* of {package} in {', '.join(self.suites)}")

    def _madison(self, packages: Sequence[str]) -> dict[str, list[str]]:
        """All versions of each package, newest first, by qualified name.

        One apt-cache call for all of them, remembered until the lists are refreshed,
        so a warm build asks apt nothing.
        """
        self.update()
        wanted = [self.qualified(p) for p in packages]
        memo = self.root / "resolved" / f"{input_key(wanted)}.json"
        stamp = self._stamp.stat().st_mtime_ns
        try:
            saved = json.loads(memo.read_text())
            if saved["stamp"] == stamp:
                return {k: list(v) for k, v in saved["versions"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no memo yet, or a damaged one: ask apt
        out = _run(["apt-cache", *self.options(), "madison", *wanted],
                   f"apt-cache madison {' '.join(packages)}")
        found = parse_madison(out, wanted, self.architectures[0])
        missing = [p for p in wanted if not found.get(p)]
        if missing:
            raise AptError(f"apt: not found in {', '.join(self.suites)}: {', '.join(missing)}")
        memo.parent.mkdir(exist_ok=True)
        memo.write_text(json.dumps({"stamp": stamp, "versions": found}))
        return found

    def _deb_dir(self, qualified: str, version: str) -> Path:
        return cache_dir("debs", input_key([qualified, version]))

    def fetch(self, packages: Sequence[str]) -> dict[str, Path]:
        """Download (once) the newest version of each package: ``{qualified name: .deb}``.

        Packages already in the download cache cost nothing; the rest come in one
        ``apt-get download``. If the mirror dropped a version the lists named, the
        lists are refreshed and everything resolved again, once.
        """
        try:
            return self._fetch(self.resolve(packages))
        except AptError:
            self.update(force=True)
            return self._fetch(self.resolve(packages))

    def _fetch(self, versions: dict[str, str]) -> dict[str, Path]:
        debs: dict[str, Path] = {}
        todo: dict[str, str] = {}
        for qual, version in versions.items():
            found = sorted(self._deb_dir(qual, version).glob("*.deb"))
            if found:
                debs[qual] = found[0]
            else:
                todo[qual] = version
        if not todo:
            return debs
        tmp = self.root / "download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        specs = [f"{qual}={version}" for qual, version in todo.items()]
        _run(["apt-get", *self.options(), "download", *specs],
             f"apt-get download {' '.join(specs)}", cwd=tmp)
        for qual in todo:
            name = qual.partition(":")[0]
            got = sorted(tmp.glob(f"{name}_*.deb"))
            if not got:
                raise AptError(f"apt: download of {qual}={todo[qual]} produced no .deb")
            final = self._deb_dir(qual, todo[qual]) / got[0].name
            os.replace(got[0], final)
            debs[qual] = final
        shutil.rmtree(tmp, ignore_errors=True)
        return debs

    def download(self, package: str, version: str | None = None) -> Path:
        """Download one package (cached) and return the .deb.

        ``version`` is an exact version, a prefix ending in ``.`` (``"7.3."``: the newest
        such), or None for the newest the suites hold.
        """
        if version is None:
            return self.fetch([package])[self.qualified(package)]
        if version.endswith("."):
            version = self.version_of(package, version)
        qual = self.qualified(package)
        return self._fetch({qual: version})[qual]

    def unpack(self, package: str, version: str | None = None) -> Path:
        """Download and ``dpkg-deb -x`` one package; returns the unpacked root (cached)."""
        return unpacked(self.download(package, version))


def parse_madison(out: str, wanted: Sequence[str], primary: str) -> dict[str, list[str]]:
    """``apt-cache madison`` output as ``{qualified name: [versions, newest first]}``.

    Only names in ``wanted`` are kept. madison prints newest first; its third field
    ends in "ARCH Packages", and arch-independent packages appear under each
    architecture's index, so "all" counts as ``primary``.
    """
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 3:
            continue
        name, version, origin = fields[0], fields[1], fields[2].split()
        arch = origin[-2] if len(origin) >= 2 else primary
        qual = f"{name}:{primary if arch == 'all' else arch}"
        if qual in wanted and version not in found.setdefault(qual, []):
            found[qual].append(version)
    return found


def unpacked(deb: Path) -> Path:
    """``dpkg-deb -x`` of a downloaded .deb, next to it (once); returns the unpacked root."""
    root = deb.parent / "root"
    done = deb.parent / "unpacked"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
        done.touch()
    return root


def deb_version(deb: Path) -> str:
    """The version in a .deb's file name (``name_VERSION_arch.deb``, epoch as ``%3a``)."""
    parts = deb.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) == 3 else deb.name


def linux_source_tree(deb: Path) -> Path:
    """Unpack a linux-source-7.x package and its tarball; the top of the tree (cached)."""
    root = unpacked(deb)
    tarballs = sorted((root / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise AptError(f"{deb.name}: no linux-source tarball inside the package")
    tarball = tarballs[0]
    top = tarball.parent / "tree"
    done = tarball.parent / "tree.done"
    if not done.exists():
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir()
        with tarfile.open(tarball) as tar:
            tar.extractall(top, filter="tar")
        done.touch()
    subdirs = [p for p in top.iterdir() if p.is_dir()]
    if len(subdirs) != 1:
        raise AptError(f"{tarball}: expected one top-level directory, found {len(subdirs)}")
    return subdirs[0]


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise AptError(f"{what}: {argv[0]}: {e.strerror}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AptError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout
