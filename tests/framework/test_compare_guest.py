"""In the x86_64 guest: a wrong rule in a copy of the mock, found against the real kernel,
shrunk, and its C reproducer built and run in the guest to show the kernel's side."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backends import open_backend
from backends.compare import CompareBackend
from harness.explore import explore
from harness.reproducer import program_of
from harness.reproducer.toolchain import build_reproducer
from tests.framework.wrong_mock import WrongRuleMock

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_wrong_rule_against_the_guest_kernel(tmp_path: Path):
    with CompareBackend(open_backend("qemu:x86_64"), WrongRuleMock()) as pair:
        pair.secondary.spec = "mock-wrong"
        # IOAS operations only: the run must meet the injected rule, not one of the
        # mock's real differences elsewhere (those are the exploration's own business).
        result = explore(pair, 3000, seed=3, repro_dir=tmp_path,
                         only={"ioas_alloc", "ioas_map", "ioas_unmap", "ioas_copy", "destroy"})
        print(result.summary())
        assert result.failure is not None
        print(result.failure)
        assert "the injected wrong rule" in str(result.failure)
        steps = program_of(pair, result.failure).steps
        assert len(steps) <= 5, [s.record.call for s in steps]
    source = next(p for p in result.reproducers if p.suffix == ".c")
    program = build_reproducer(source, "x86_64")
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "vm", "exec", "--arch", "x86_64",
         "--put", str(program), "--", f"/put/{program.name}"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(done.stdout)
    # The kernel's side: the divergent call does not fail with the wrong copy's EINVAL.
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^not ok \d+ IOMMU_IOAS_MAP(_FILE)?: got .*expected errno 22",
                     done.stdout, re.M), done.stdout
