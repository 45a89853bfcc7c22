"""``vm exec --put FILE``: files reach the guest in a second cpio archive after the image's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vm_images import cli
from vm_images.arch import get_arch
from vm_images.image import GuestImage


def _image(tmp_path: Path) -> GuestImage:
    initramfs = tmp_path / "initramfs.cpio.gz"
    initramfs.write_bytes(b"\x1f\x8b" + b"x" * 13)  # any length: it gets padded
    return GuestImage(arch=get_arch("x86_64"), kernel=tmp_path / "bzImage",
                      initramfs=initramfs, kernel_release="7.3.4", key="k",
                      log_dir=tmp_path, kernel_config=tmp_path / ".config",
                      build_dir=tmp_path)


def test_put_appends_an_aligned_archive_with_executable_files(tmp_path: Path):
    image = _image(tmp_path)
    program = tmp_path / "repro.x86_64"
    program.write_bytes(b"\x7fELF-program")
    work = tmp_path / "work"
    work.mkdir()
    extended = cli._with_files(image, [program], work)
    assert dataclasses.replace(extended, initramfs=image.initramfs) == image
    data = extended.initramfs.read_bytes()
    assert data.startswith(image.initramfs.read_bytes())
    second = data.index(b"070701")
    assert second % 4 == 0 and not data[15:second].strip(b"\0")
    assert b"put/repro.x86_64" in data and b"\x7fELF-program" in data
    header = data[data.index(b"put/repro.x86_64") - 110:]
    assert int(header[14:22], 16) & 0o777 == 0o755   # c_mode of the file


def test_put_of_a_missing_file_is_a_usage_error(tmp_path: Path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["exec", "--put", str(tmp_path / "nope"), "--", "true"])
    assert cli._exec(_image(tmp_path), args, ["true"]) == 2
    assert "no such file" in capsys.readouterr().err
