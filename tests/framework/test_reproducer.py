"""Reproducers written from a lockstep log: the calls kept, handles named, checks placed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import uapi_headers as u
from backends.compare import CompareBackend, Divergence
from backends.contract import IoctlArg
from backends.mock import MockBackend
from harness.helpers.core import new_cmd
from harness.reproducer import program_of, write_reproducers
from harness.reproducer.program import fill_pattern

ROOT = Path(__file__).resolve().parents[2]


class _SkewedAlignment(MockBackend):
    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        try:
            return super().ioctl(fd, request, arg)
        finally:
            if request == u.IOMMU_IOAS_IOVA_RANGES:
                arg.out_iova_alignment = 2 * arg.out_iova_alignment


def _diverge(tmp_path: Path) -> tuple[CompareBackend, Divergence, list[Path]]:
    pair = CompareBackend(MockBackend(), _SkewedAlignment())
    pair.secondary.spec = "skewed"
    pair.memfd(4096)                       # set-up nothing refers to: left out
    fd = pair.open("/dev/iommu")
    short = u.ffi.new("uint8_t[]", 12)     # 12 bytes that say they are 24: EFAULT
    short[0] = 24
    with pytest.raises(OSError):
        pair.ioctl(fd, u.IOMMU_IOAS_ALLOC, short)
    alloc = new_cmd("iommu_ioas_alloc")
    pair.ioctl(fd, u.IOMMU_IOAS_ALLOC, alloc)
    ranges = pair.alloc(4096)
    pair.peek(ranges, 8)                   # changes nothing: left out
    cmd = new_cmd("iommu_ioas_iova_ranges", {"ioas_id": alloc.out_ioas_id, "num_iovas": 2,
                                             "allowed_iovas": ranges})
    with pytest.raises(Divergence) as info:
        pair.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, cmd)
    return pair, info.value, write_reproducers(pair, tmp_path, "skewed", info.value)


def test_program_keeps_what_the_divergence_needs(tmp_path: Path):
    pair, divergence, _ = _diverge(tmp_path)
    calls = [s.record.call for s in program_of(pair, divergence).steps]
    assert calls == ["open /dev/iommu", "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_ALLOC", "alloc",
                     "IOMMU_IOAS_IOVA_RANGES"]


def test_c_program_names_handles_and_checks_the_field(tmp_path: Path):
    _, _, (_, source) = _diverge(tmp_path)
    text = source.read_text()
    # Every argument sits against a guard page, so the short one faults in C too.
    assert re.search(r"guarded_ioctl\(fd\d+, IOMMU_IOAS_ALLOC, &arg\d+, sizeof\(arg\d+\)\)",
                     text)
    assert ".ioas_id = ioas" in text and ".allowed_iovas = (uintptr_t)(mem" in text
    assert 'check_field("out_iova_alignment", ' in text
    assert "#include <linux/iommufd.h>" in text and "iommufd_test.h" not in text
    assert text.count("check(") >= 5


def test_python_script_replays_and_reports_the_other_side(tmp_path: Path):
    _, _, (script, _) = _diverge(tmp_path)
    done = subprocess.run([sys.executable, str(script), "mock"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    # The mock gives what the first side gave; the script expects the second side's.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ok 2 - IOMMU_IOAS_ALLOC: errno 14 EFAULT" in done.stdout
    assert "# out_iova_alignment is 0x1, expected 0x2" in done.stdout


def test_fill_pattern():
    assert fill_pattern(bytes(range(256)) * 3) == bytes(range(256))
    assert fill_pattern(b"\xaa" * 100) == b"\xaa"
    assert fill_pattern(os.urandom(600) + b"x") is None


def test_a_byte_buffer_argument_is_replayed_as_bytes():
    """VFIO_IOMMU_GET_INFO with a caller's byte buffer (the compat tests pass one): the
    comparison reads it as its struct, the reproducers pass the same bytes."""
    from harness.reproducer import c, python

    pair = CompareBackend(MockBackend(), MockBackend())
    fd = pair.open("/dev/iommu")
    buf = u.ffi.new("uint8_t[]", 16)   # shorter than the struct: passed as bytes
    buf[0] = 16
    try:
        pair.ioctl(fd, u.VFIO_IOMMU_GET_INFO, buf)
    except OSError:
        pass
    step = program_of(pair, None).steps[-1]
    assert step.record.layout is not None
    assert step.record.layout.struct == "struct vfio_iommu_type1_info"
    program = program_of(pair, None)
    assert "r.raw(bytes.fromhex('10000000" in python.render(program)
    assert "unsigned char arg2[16] = {" in c.render(program, "")
