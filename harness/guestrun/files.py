"""Which files a guest needs to collect the host's cases, as the guest will see them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: names that shape collection along a test file's directory chain
_CHAIN_FILES = ("__init__.py", "conftest.py")


def suite_files(rootdir: Path, test_files: Iterable[Path]) -> dict[str, bytes]:
    """``{path relative to rootdir: contents}`` for the guest's copy of the suite.

    For each test file: every Python file of its directory (test modules import
    their neighbours), and the ``__init__.py`` and ``conftest.py`` of every
    directory from there up to ``rootdir`` (packages and fixtures). The relative
    paths are the node IDs' paths, so the guest's node IDs equal the host's.
    ValueError names a test file outside ``rootdir``.
    """
    root = rootdir.resolve()
    wanted: set[Path] = set()
    for test_file in test_files:
        path = Path(test_file).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"{path} is outside the rootdir {root}: run pytest from a "
                             "directory above it (or pass --rootdir)")
        wanted.update(p for p in path.parent.glob("*.py") if p.is_file())
        directory = path.parent
        while directory.is_relative_to(root):
            wanted.update(directory / name for name in _CHAIN_FILES
                          if (directory / name).is_file())
            if directory == root:
                break
            directory = directory.parent
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(wanted)}
