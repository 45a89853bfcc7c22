"""The distribution: every package listed, and a wheel that runs the suite on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.framework.test_plugin import parse_ktap

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOP_LEVEL = ("harness", "backends", "uapi_headers", "vm_images")


def test_every_package_on_disk_is_in_the_distribution() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"harness.scenarios"}
    assert setuptools["package-dir"] == {"harness.scenarios": "tests/iommufd"}
    for top in TOP_LEVEL:
        assert (ROOT / top / "py.typed").is_file()


def test_files_read_at_run_time_are_package_data() -> None:
    from backends.kernel import native
    from vm_images import initramfs

    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for path in (native.SOURCE, initramfs.INIT, initramfs.VFIO_SELFTESTS, initramfs.BIND_EDU):
        top, *rest = path.relative_to(ROOT).parts
        assert any(fnmatch("/".join(rest), pattern) for pattern in data[top]), path


def test_license_metadata_is_pep_639() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "GPL-2.0-only"
    assert project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text


def _clean_env() -> dict[str, str]:
    # Nothing of the checkout may leak into the installed run.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_suite_from_anywhere(tmp_path: Path) -> None:
    env = _clean_env()
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(ROOT)], check=True, env=env)
    (wheel,) = wheels.glob("iommufd_harness-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "from harness import suite; print(*suite.location())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[0].endswith("site-packages/harness/scenarios")
    assert where[1] == "True"  # the installed copy, not a checkout
    run = subprocess.run([str(venv / "bin" / "iommufd-harness"), "run", "--ktap", "r.ktap"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "warning" not in run.stdout.splitlines()[-1]
    lines, cases, totals = parse_ktap((elsewhere / "r.ktap").read_text())
    assert lines[2].startswith("# backend mock: ")
    assert "iommufd_ioas.mock_domain.area" in cases and len(cases) > 100
    assert totals["fail"] == 0 and totals["error"] == 0 and totals["pass"] > 100
    meta = subprocess.run(
        [str(python), "-c", "from importlib.metadata import metadata, files\n"
         "m = metadata('iommufd-harness')\n"
         "print(m['License-Expression'])\n"
         "print(sorted(str(f) for f in files('iommufd-harness') if f.name in "
         "('LICENSE', 'py.typed')))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert meta[0] == "GPL-2.0-only"
    assert "iommufd_harness-0.1.0.dist-info/licenses/LICENSE" in meta[1]
    assert "harness/py.typed" in meta[1]
