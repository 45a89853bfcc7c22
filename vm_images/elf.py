"""Just enough ELF reading to check a guest image on the host, whatever its architecture.

The guest's binaries cannot run here (aarch64 on an x86_64 host), but their headers
say what they need: the machine they are for, an interpreter (dynamic or static), and
the shared libraries they link (DT_NEEDED). ``missing_libraries`` uses that to prove,
before anything boots, that every program and extension module in the image will load.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x7fELF"
EM_X86_64 = 62
EM_AARCH64 = 183
MACHINES = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}

_PT_DYNAMIC = 2
_PT_INTERP = 3
_PT_LOAD = 1
_DT_NULL = 0
_DT_NEEDED = 1
_DT_STRTAB = 5
_DT_SONAME = 14


class ElfError(ValueError):
    """Not an ELF file this reader understands (64-bit little-endian)."""


@dataclass(frozen=True)
class ElfInfo:
    """What a program or shared object needs to be loaded."""

    machine: int
    interpreter: str | None     # PT_INTERP; None for static executables
    needed: tuple[str, ...]     # DT_NEEDED sonames
    soname: str | None          # DT_SONAME, for shared libraries

    @property
    def is_static(self) -> bool:
        """No interpreter and no shared libraries: runs on any kernel as it is."""
        return self.interpreter is None and not self.needed


def is_elf(path: Path) -> bool:
    """True for a regular file starting with the ELF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo:
    """Parse the program headers and dynamic section of a 64-bit little-endian ELF."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ElfError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path}: only 64-bit little-endian ELF is supported")
    machine, = struct.unpack_from("<H", data, 18)
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    needed: list[int] = []
    soname: int | None = None
    strtab_vaddr: int | None = None
    if dynamic is not None:
        offset, size = dynamic
        for pos in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == _DT_NULL:
                break
            if tag == _DT_NEEDED:
                needed.append(value)
            elif tag == _DT_SONAME:
                soname = value
            elif tag == _DT_STRTAB:
                strtab_vaddr = value
    names: list[str] = []
    so: str | None = None
    if strtab_vaddr is not None:
        strtab = _file_offset(strtab_vaddr, loads)

        def string(index: int) -> str:
            end = data.index(b"\0", strtab + index)
            return data[strtab + index:end].decode()

        names = [string(i) for i in needed]
        so = string(soname) if soname is not None else None
    return ElfInfo(machine=machine, interpreter=interp, needed=tuple(names), soname=so)


def _file_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int:
    for start, offset, size in loads:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    raise ElfError(f"address {vaddr:#x} is in no loadable segment")


def elf_files(roots: Iterable[Path]) -> Iterable[Path]:
    """Every regular ELF file under ``roots`` (symlinks are not followed)."""
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                if not path.is_symlink() and is_elf(path):
                    yield path


def missing_libraries(root: Path, library_dirs: Iterable[str]) -> dict[str, list[str]]:
    """``{file relative to root: [sonames not found]}`` for every ELF under ``root``.

    A soname is found when ``root/DIR/soname`` exists (file or symlink) for one of
    ``library_dirs`` (guest paths such as ``/lib/aarch64-linux-gnu``), which is how the
    dynamic loader will look for it in the guest. Interpreters are checked the same way.
    """
    dirs = [root / d.lstrip("/") for d in library_dirs]
    missing: dict[str, list[str]] = {}
    for path in elf_files([root]):
        try:
            info = read_elf(path)
        except (ElfError, struct.error, IndexError, ValueError):
            continue  # not a loadable object (a data file that happens to start "\x7fELF")
        lacking = [so for so in info.needed
                   if not any(os.path.lexists(d / so) for d in dirs)]
        if info.interpreter and not os.path.lexists(root / info.interpreter.lstrip("/")):
            lacking.append(info.interpreter)
        if lacking:
            missing[str(path.relative_to(root))] = lacking
    return missing
