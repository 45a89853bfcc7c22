"""The README's instructions, run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.framework.test_plugin import parse_ktap

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text of the README section ``## title``."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """The commands of a shell block, their trailing comments dropped."""
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_own_scenario_example_passes_on_the_mock(tmp_path: Path) -> None:
    text = section("Your own scenario")
    (example,) = code_blocks(text, "python")
    (shell,) = code_blocks(text, "sh")
    filename = re.search(r"for example `(test_\w+\.py)`", text)
    assert filename is not None
    (tmp_path / filename.group(1)).write_text(example)
    mock_run = commands(shell)[0]
    assert mock_run[:2] == ["iommufd-harness", "run"] and filename.group(1) in mock_run
    # The README's command, through this interpreter rather than a script on PATH.
    done = subprocess.run([sys.executable, "-m", "harness.cli", *mock_run[1:]],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^1 passed", done.stdout, re.M), done.stdout
    ktap = tmp_path / mock_run[mock_run.index("--ktap") + 1]
    _, cases, _ = parse_ktap(ktap.read_text())
    assert cases == {"my_patch.unmap_twice": "ok"}


def test_the_quick_start_is_one_shell_block() -> None:
    (block,) = code_blocks(section("Quick start"), "sh")
    assert [c[:3] for c in commands(block)][:3] == [
        ["sh", "vm_images/install_deps.sh", "venv"], ["python3", "-m", "venv"],
        [".", ".venv/bin/activate"]]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").exists() or os.geteuid() != 0,
                    reason="needs Debian's /usr/bin/python3 and root for install_deps.sh")
def test_the_quick_start_word_for_word_with_debians_python(tmp_path: Path) -> None:
    (block,) = code_blocks(section("Quick start"), "sh")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # A stock Debian shell: /usr/bin/python3 (PEP 668 managed), nothing of this checkout.
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    for name in ("XDG_CACHE_HOME", "IOMMUFD_HARNESS_CACHE", "PIP_INDEX_URL",
                 "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    python3 = subprocess.run(["sh", "-c", "command -v python3"], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
    assert python3 == "/usr/bin/python3"
    done = subprocess.run(["sh", "-ex", "-c", block], cwd=clone, env=env, capture_output=True,
                          text=True, check=False, timeout=3600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summaries = [line for line in done.stdout.splitlines() if re.match(r"^=* ?\d+ passed", line)]
    assert len(summaries) == 2, done.stdout[-4000:]  # iommufd-harness run, then pytest
    assert " failed" not in "".join(summaries) and " error" not in "".join(summaries)
