"""The guest's assertion-rewritten bytecode, made on the host.

pytest rewrites the asserts of every test module and conftest it imports: parse,
rewrite, compile. Under TCG that is about half a second a module, on every run (each
run starts from a fresh guest). The host has the same Python and pytest as the
guest's runtime, so it does the work natively and ships the result where the guest's
pytest looks for its own cache (``__pycache__/NAME.TAG-pytest-VERSION.pyc``). The
code is compiled under the guest's file names, so tracebacks read the guest's
sources. pytest validates a cached file by its source's size and mtime (up to 9.1:
every source is written in the guest with :data:`SOURCE_MTIME`) or by its hash (9.2).
Where the guest's Python or pytest differ, the file names differ too and the guest
simply rewrites as usual.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import inspect
import io
from pathlib import PurePosixPath
from types import SimpleNamespace
from typing import Any

#: the mtime every shipped source gets in the guest (the cached bytecode carries it)
SOURCE_MTIME = 1_000_000_000
#: pytest's default python_files, and conftests: what the guest's session rewrites
_REWRITTEN = ("test_*.py", "*_test.py", "conftest.py")


def rewritten_pycs(files: dict[str, bytes], guest_root: str) -> dict[str, bytes]:
    """``{relative path of the cache file: bytes}`` for the modules among ``files``
    (relative paths, as the guest writes them under ``guest_root``) that the guest's
    pytest would rewrite; empty where this pytest has no rewriter to lend."""
    try:
        from _pytest.assertion.rewrite import PYC_TAIL, _write_pyc_fp, rewrite_asserts
    except ImportError:  # pytest's internals moved: the guest rewrites for itself
        return {}
    # pytest's own writer, so the header is whatever this pytest validates: the
    # source's mtime and size up to 9.1, its hash since 9.2.
    by_hash = "source_hash" in inspect.signature(_write_pyc_fp).parameters
    pycs: dict[str, bytes] = {}
    for rel, source in files.items():
        path = PurePosixPath(rel)
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in _REWRITTEN):
            continue
        guest_name = f"{guest_root}/{rel}"
        tree = ast.parse(source, filename=guest_name)
        rewrite_asserts(tree, source, guest_name, None)
        code = compile(tree, guest_name, "exec", dont_inherit=True)
        key: Any = (importlib.util.source_hash(source) if by_hash
                    else SimpleNamespace(st_mtime=SOURCE_MTIME, st_size=len(source)))
        out = io.BytesIO()
        _write_pyc_fp(out, key, code)
        cache = path.parent / "__pycache__" / (path.name[:-3] + PYC_TAIL)
        pycs[cache.as_posix()] = out.getvalue()
    return pycs
