"""Which files the guest gets: enough to collect the host's cases under the same IDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guestrun.files import suite_files


def _tree(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n")


def test_test_dirs_neighbours_packages_and_conftests_up_to_the_rootdir(tmp_path: Path) -> None:
    _tree(tmp_path, "conftest.py", "setup.py",
          "tests/__init__.py", "tests/conftest.py", "tests/unrelated.txt",
          "tests/iommufd/__init__.py", "tests/iommufd/test_a.py", "tests/iommufd/helpers.py",
          "tests/iommufd/data/blob.py", "tests/mock/test_other.py")
    files = suite_files(tmp_path, [tmp_path / "tests/iommufd/test_a.py"])
    assert sorted(files) == ["conftest.py", "tests/__init__.py", "tests/conftest.py",
                             "tests/iommufd/__init__.py", "tests/iommufd/helpers.py",
                             "tests/iommufd/test_a.py"]
    assert files["tests/iommufd/helpers.py"] == b"# tests/iommufd/helpers.py\n"


def test_a_file_outside_the_rootdir_is_refused_by_name(tmp_path: Path) -> None:
    _tree(tmp_path, "root/x.py", "elsewhere/test_b.py")
    with pytest.raises(ValueError, match=r"test_b.py is outside the rootdir .*root"):
        suite_files(tmp_path / "root", [tmp_path / "elsewhere/test_b.py"])
