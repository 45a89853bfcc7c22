"""Reproducers of a lockstep run: a Python script and a kselftest-style C program.

:func:`write_reproducers` turns the pair's call log (a failed case, a divergence, a
shrunk exploration) into ``<stem>.py`` (replays on any backend) and ``<stem>.c``
(builds against the kernel's uapi headers, see :mod:`harness.reproducer.toolchain`).
"""

from __future__ import annotations

from pathlib import Path

from backends.compare import CompareBackend, Divergence
from harness.reproducer import c, python
from harness.reproducer.program import Program, build

BUILD_HINT = ("cc -static -O2 -isystem <kernel build>/usr/include "
              "-I <kernel tree>/drivers/iommu/iommufd -o repro repro.c")


def program_of(pair: CompareBackend, divergence: Divergence | None,
               what: str = "a failed case") -> Program:
    """The program of the pair's current call log."""
    sides = pair.sides
    releases = (pair.primary.kernel_release, pair.secondary.kernel_release)
    notes = [f"Lockstep run: {sides[0]} ({releases[0]}) against {sides[1]} ({releases[1]})."]
    if divergence is not None:
        title = (f"iommufd: {divergence.call} differs in {divergence.what} "
                 f"between {sides[0]} and {sides[1]}")
        notes += divergence.render().splitlines()
    else:
        title = f"iommufd: the calls of {what} ({sides[0]} vs {sides[1]})"
    return build(pair.log.case_records(), sides, releases, title, notes)


def write_reproducers(pair: CompareBackend, directory: Path, stem: str,
                      divergence: Divergence | None) -> list[Path]:
    """Write ``stem.py`` and ``stem.c`` into ``directory``; their paths."""
    program = program_of(pair, divergence, stem)
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / f"{stem}.py"
    script.write_text(python.render(program))
    script.chmod(0o755)
    source = directory / f"{stem}.c"
    source.write_text(c.render(program, BUILD_HINT))
    return [script, source]
