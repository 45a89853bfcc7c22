"""``iommufd-harness vm``: timestamped progress, elapsed time, and no silent builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vm_images import cli
from vm_images.arch import get_arch
from vm_images.image import GuestImage
from vm_images.steps import Progress, StepError

STAMP = r"\[\d\d:\d\d:\d\d\] "
BUILDING = "[kernel x86_64] make -j2 bzImage ... (log: /cache/kernel/k1/logs/kernel.log)"
CACHED = "[kernel x86_64] cached: /cache/kernel/k1/out/bzImage (Linux 7.3.4)"


def _fake_image(tmp_path: Path) -> GuestImage:
    return GuestImage(arch=get_arch("x86_64"), kernel=tmp_path / "bzImage",
                      initramfs=tmp_path / "initramfs", kernel_release="7.3.4", key="k",
                      log_dir=tmp_path / "logs", kernel_config=tmp_path / "config",
                      build_dir=tmp_path)


def _stop_after(*lines: str):  # type: ignore[no-untyped-def]
    def fake(arch: str, *, kernel_src: Path | None = None, progress: Progress = print) -> None:
        for line in lines:
            progress(line)
        raise StepError("kernel x86_64: make", None, "stopped by the test")
    return fake


def test_boot_without_an_image_says_it_is_building_where_and_how_long(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "ensure_guest_image", _stop_after(
        "[kernel x86_64] source linux-source-7.3; build directory /b", BUILDING, BUILDING))
    assert cli.main(["boot", "--arch", "x86_64"]) == 1
    err = capsys.readouterr().err.splitlines()
    notice = [line for line in err if "no cached x86_64 guest image" in line]
    assert len(notice) == 1
    assert re.match(STAMP + r"\[boot\] no cached x86_64 guest image: building it first "
                    r"\(a cold build takes about 4 to 10 minutes.*\); "
                    r"log: /cache/kernel/k1/logs/kernel.log$", notice[0])
    assert err.index(notice[0]) == 1  # before the step it announces
    assert all(re.match(STAMP, line) for line in err[:4])  # the progress, not the error


def test_boot_with_a_cached_image_says_nothing_about_building(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "ensure_guest_image", _stop_after(CACHED))
    cli.main(["boot", "--arch", "x86_64"])
    assert "building it first" not in capsys.readouterr().err


def test_build_progress_is_timestamped_and_ends_with_the_elapsed_time(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    def fake(arch: str, *, kernel_src: Path | None = None,
             progress: Progress = print) -> GuestImage:
        progress(BUILDING)
        return _fake_image(tmp_path)

    monkeypatch.setattr(cli, "ensure_guest_image", fake)
    assert cli.main(["build", "--arch", "x86_64"]) == 0
    out = capsys.readouterr()
    err = out.err.splitlines()
    assert re.match(STAMP + re.escape(BUILDING) + "$", err[0])
    assert re.match(STAMP + r"Elapsed time: \d+\.\ds total$", err[-1])
    assert "building it first" not in out.err  # asked to build: no notice
    assert "kernel:     " in out.out
