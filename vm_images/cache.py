"""The project's cache directory, input-hash keys, and build-once cache entries.

A cache entry is only an optimisation: every entry is keyed by a hash of all
inputs that produced it, so a changed input is a different key, never a stale hit.
An entry counts as built only once its ``result.json`` exists; that file is written
last, so an interrupted build is redone (in the same directory, so make can resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vm_images.steps import locked

#: Overrides the cache root (default ``$XDG_CACHE_HOME/iommufd-harness``).
CACHE_ENV = "IOMMUFD_HARNESS_CACHE"

RESULT = "result.json"


def cache_root() -> Path:
    """``$IOMMUFD_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/iommufd-harness``
    (default ``~/.cache/iommufd-harness``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iommufd-harness"


def cache_dir(kind: str, key: str) -> Path:
    """The directory for one cache entry of ``kind`` (created on demand)."""
    path = cache_root() / kind / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def input_key(parts: Iterable[str | bytes], length: int = 16) -> str:
    """A short stable hash over ordered inputs (strings, bytes, file contents).

    Each part is length-prefixed, so ``["ab", "c"]`` and ``["a", "bc"]`` differ.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:length]


def file_digest(path: Path) -> str:
    """sha256 of a file's contents, for use as a cache input."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_result(kind: str, key: str) -> dict[str, Any] | None:
    """The stored result of a complete entry, or None when it was never finished."""
    result = cache_root() / kind / key / RESULT
    try:
        data: dict[str, Any] = json.loads(result.read_text())
    except (OSError, ValueError):
        return None
    return data


def build_once(kind: str, key: str,
               build: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The result of entry ``kind/key``, calling ``build(entry_dir)`` if it is not complete.

    Returns ``(result, hit)``; ``hit`` is False when ``build`` ran. Concurrent callers for
    the same entry wait for each other (a file lock) instead of building twice.
    """
    done = cached_result(kind, key)
    if done is not None:
        return done, True
    entry = cache_dir(kind, key)
    with locked(entry / "lock"):
        done = cached_result(kind, key)
        if done is not None:  # another process finished it while we waited
            return done, True
        data = build(entry)
        tmp = entry / (RESULT + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, entry / RESULT)
        return data, False


def prune_entries(kind: str, keep: int, min_age: float = 3600.0) -> list[Path]:
    """Delete finished entries of ``kind`` beyond the ``keep`` newest, if older than
    ``min_age`` seconds.

    For kinds that are cheap to rebuild and change often (an initramfs per edit of the
    runtime). The age limit spares an image a running test session may boot again;
    unfinished entries are left alone, a build may be running in them. Returns the
    deleted directories.
    """
    finished = sorted((p for p in (cache_root() / kind).glob(f"*/{RESULT}")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    cutoff = time.time() - min_age
    removed = [result.parent for result in finished[keep:] if result.stat().st_mtime < cutoff]
    for entry in removed:
        shutil.rmtree(entry, ignore_errors=True)
    return removed
