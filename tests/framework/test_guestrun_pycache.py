"""The host's rewritten bytecode for the guest (harness.guestrun.pycache): pytest in
the guest takes it as its own cache, under the guest's file names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _pytest.assertion.rewrite import _read_pyc

from harness.guestrun.pycache import SOURCE_MTIME, rewritten_pycs

FILES = {
    "tests/conftest.py": b"import pytest\n",
    "tests/grp/test_one.py": b"def test_sum():\n    x = 1\n    assert x + 1 == 3\n",
    "tests/grp/helpers.py": b"VALUE = 1\n",
}


def _write(root: Path, files: dict[str, bytes]) -> None:
    # As the guest's worker writes them (harness.guestrun.worker._write_tree).
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if path.suffix == ".py":
            os.utime(path, (SOURCE_MTIME, SOURCE_MTIME))


def test_test_modules_and_conftests_get_bytecode_compiled_for_the_guest_root(
        tmp_path: Path) -> None:
    pycs = rewritten_pycs(FILES, str(tmp_path))
    names = sorted(Path(rel).name.split(".")[0] for rel in pycs)
    assert names == ["conftest", "test_one"]  # a plain helper module is not rewritten
    _write(tmp_path, FILES | pycs)
    source = tmp_path / "tests/grp/test_one.py"
    pyc = next(tmp_path.joinpath(rel) for rel in pycs if "test_one" in rel)
    code = _read_pyc(source, pyc)
    assert code is not None and code.co_filename == str(source)


def test_a_stale_source_is_rewritten_afresh(tmp_path: Path) -> None:
    pycs = rewritten_pycs(FILES, str(tmp_path))
    _write(tmp_path, FILES | pycs)
    source = tmp_path / "tests/grp/test_one.py"
    source.write_bytes(FILES["tests/grp/test_one.py"] + b"# edited\n")
    os.utime(source, (SOURCE_MTIME, SOURCE_MTIME))  # stale by size and by hash
    pyc = next(tmp_path.joinpath(rel) for rel in pycs if "test_one" in rel)
    assert _read_pyc(source, pyc) is None


def test_pytest_runs_the_shipped_bytecode_with_assert_introspection(tmp_path: Path) -> None:
    on_disk = dict(FILES)
    on_disk["tests/grp/test_one.py"] = on_disk["tests/grp/test_one.py"].replace(b"3", b"4")
    # A marker only the shipped bytecode carries: code compiled from "== 3", under the
    # header (mtime and size, or hash: 16 bytes either way) of the source on disk, "== 4".
    header = rewritten_pycs(on_disk, str(tmp_path))
    body = rewritten_pycs(FILES, str(tmp_path))
    pycs = {rel: header[rel][:16] + body[rel][16:] for rel in header}
    _write(tmp_path, on_disk | pycs)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:iommufd", "tests/grp/test_one.py"], cwd=tmp_path,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 1, done.stdout
    assert "assert (1 + 1) == 3" in done.stdout  # rewritten, and from the host's bytecode
    # The traceback reads the guest's own file (the code's file name is the guest's).
    assert ">       assert x + 1 == 4" in done.stdout
    assert "tests/grp/test_one.py:3: AssertionError" in done.stdout
