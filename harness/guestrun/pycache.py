"""The guest's assertion-rewritten bytecode, made on the host.

pytest rewrites the asserts of every test module and conftest it imports: parse,
rewrite, compile. Under TCG that is about half a second a module, on every run (each
run starts from a fresh guest). The host has the same Python and pytest as the
guest's runtime, so it does the work natively and ships the result where the guest's
pytest looks for its own cache (``__pycache__/NAME.TAG-pytest-VERSION.pyc``). The
code is compiled under the guest's file names, so tracebacks read the guest's
sources. pytest validates a cached file by its source's size and mtime: every source
is written in the guest with :data:`SOURCE_MTIME`. Where the guest's Python or pytest
differ, the file names differ too and the guest simply rewrites as usual.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import marshal
import struct
from pathlib import PurePosixPath

#: the mtime every shipped source gets in the guest (the cached bytecode carries it)
SOURCE_MTIME = 1_000_000_000
#: pytest's default python_files, and conftests: what the guest's session rewrites
_REWRITTEN = ("test_*.py", "*_test.py", "conftest.py")


def rewritten_pycs(files: dict[str, bytes], guest_root: str) -> dict[str, bytes]:
    """``{relative path of the cache file: bytes}`` for the modules among ``files``
    (relative paths, as the guest writes them under ``guest_root``) that the guest's
    pytest would rewrite; empty where this pytest has no rewriter to lend."""
    try:
        from _pytest.assertion.rewrite import PYC_TAIL, rewrite_asserts
    except ImportError:  # pytest's internals moved: the guest rewrites for itself
        return {}
    pycs: dict[str, bytes] = {}
    for rel, source in files.items():
        path = PurePosixPath(rel)
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in _REWRITTEN):
            continue
        guest_name = f"{guest_root}/{rel}"
        tree = ast.parse(source, filename=guest_name)
        rewrite_asserts(tree, source, guest_name, None)
        code = compile(tree, guest_name, "exec", dont_inherit=True)
        header = importlib.util.MAGIC_NUMBER + b"\0\0\0\0" + struct.pack(
            "<LL", SOURCE_MTIME & 0xFFFFFFFF, len(source) & 0xFFFFFFFF)
        cache = path.parent / "__pycache__" / (path.name[:-3] + PYC_TAIL)
        pycs[cache.as_posix()] = header + marshal.dumps(code)
    return pycs
