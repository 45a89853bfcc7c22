"""Write a "newc" cpio archive, the format the kernel unpacks as an initramfs.

Written here rather than with cpio(1) so that the archive needs no root: every entry
is owned by root and the console device node is just a header. It is also
reproducible: fixed timestamps, sorted entries, no host inode numbers.

An archive is assembled from layers (directories on the host, each mapped to a
place in the guest) plus single entries; a later layer's file replaces an earlier
one's at the same path, so the init layer can override a package's file.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

TRAILER = "TRAILER!!!"
#: Every entry gets this modification time (the Unix epoch): the archive depends on
#: the contents only. Bytecode in it uses hash-based invalidation, not times.
MTIME = 0


class Sink(Protocol):
    """Where an archive is written: a binary file, a GzipFile, a BytesIO."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, regular file, symlink or device node."""

    path: str                 # guest path, without the leading "/"
    mode: int                 # file type and permission bits (st_mode)
    data: bytes | Path = b""  # file contents (or a host file to read), symlink target
    rdev: tuple[int, int] = (0, 0)  # major, minor for device nodes


def directory(path: str, perm: int = 0o755) -> Entry:
    """A directory entry."""
    return Entry(path.strip("/"), stat.S_IFDIR | perm)


def file(path: str, data: bytes | Path, perm: int = 0o644) -> Entry:
    """A regular file entry, from bytes or a host file."""
    return Entry(path.strip("/"), stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link entry."""
    return Entry(path.strip("/"), stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    """A character device node (no privilege needed: it is only a header here)."""
    return Entry(path.strip("/"), stat.S_IFCHR | perm, b"", (major, minor))


def tree(host: Path, guest: str = "/") -> Iterable[Entry]:
    """Entries for everything under host directory ``host``, placed at ``guest``.

    Ownership becomes root's, permissions are kept; hard links become copies.
    """
    base = PurePosixPath("/") / guest
    for dirpath, dirs, files in os.walk(host):
        dirs.sort()
        rel = Path(dirpath).relative_to(host)
        here = base / rel.as_posix() if str(rel) != "." else base
        if str(here) != "/":
            perm = os.stat(dirpath).st_mode & 0o7777
            yield Entry(str(here).lstrip("/"), stat.S_IFDIR | perm)
        # os.walk lists a symlink to a directory among the directories (and does not
        # enter it): it goes into the archive as the symlink it is.
        linked_dirs = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(files) + linked_dirs:
            full = Path(dirpath) / name
            st = full.lstat()
            guest_path = str(here / name).lstrip("/")
            if stat.S_ISLNK(st.st_mode):
                yield Entry(guest_path, stat.S_IFLNK | 0o777, os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                yield Entry(guest_path, stat.S_IFREG | (st.st_mode & 0o7777), full)


def _header(out: Sink, ino: int, entry: Entry, size: int) -> None:
    name = entry.path.encode() + b"\0"
    fields = (ino, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, MTIME, size,
              0, 0, entry.rdev[0], entry.rdev[1], len(name), 0)
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
    out.write(b"\0" * (-(110 + len(name)) % 4))


def write_cpio(out: Sink, entries: Iterable[Entry]) -> int:
    """Write ``entries`` (later duplicates win; parents first) and the trailer.

    Returns the number of members written.
    """
    final: dict[str, Entry] = {}
    for entry in entries:
        final[entry.path] = entry
    # Sorting puts every directory before its contents ("a" < "a/b").
    ordered = [final[p] for p in sorted(final, key=lambda p: p.split("/"))]
    for ino, entry in enumerate(ordered, start=1):
        data = entry.data.read_bytes() if isinstance(entry.data, Path) else entry.data
        _header(out, ino, entry, len(data))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    _header(out, 0, Entry(TRAILER, 0), 0)
    return len(ordered)


def write_initramfs(path: Path, entries: Iterable[Entry], *, gzip_level: int | None = None) -> int:
    """Write a newc archive to ``path`` (atomically), gzip'd if ``gzip_level`` is given.

    Returns the member count.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        if gzip_level is None:
            count = write_cpio(raw, entries)
        else:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=gzip_level,
                               mtime=0) as out:
                count = write_cpio(out, entries)
    os.replace(tmp, path)
    return count
