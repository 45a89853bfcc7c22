"""A reproducer's program: the calls it needs, with names for the handles they pass on.

From a lockstep call log, :func:`build` keeps the calls up to the divergence (or the
end), drops memory set-up nothing refers to and reads that change nothing, and names
every handle a kept call hands to a later one (``fd3``, ``ioas4``, ``mem1``), so the
Python and C writers only have to spell each step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backends.compare.divergence import Attempt
from backends.compare.log import Record, Ref

# Calls whose only effect is memory contents or fds: kept when something refers to them.
_SETUP = frozenset({"alloc", "mmap", "memfd", "ftruncate", "poke", "munmap"})
# Calls that change nothing: kept only where they diverged.
_LOOKS = frozenset({"peek", "proc_status"})


@dataclass
class Step:
    """One kept call, with the expected result the reproducer checks."""

    record: Record
    expect: Attempt                  # the result to check (the secondary's at a divergence)
    other: Attempt | None = None     # at the divergence: the primary's result
    produces: dict[str, str] = field(default_factory=dict)   # source -> variable name
    number: int = 0                  # the step's place in the program, from 1


@dataclass
class Program:
    """The steps and what the divergence was."""

    steps: list[Step]
    sides: tuple[str, str]
    releases: tuple[str, str]
    title: str
    notes: list[str]

    def var(self, ref: Ref) -> str:
        """The variable holding the handle ``ref`` names."""
        for step in self.steps:
            if step.record.index == ref.index:
                return step.produces[ref.source]
        raise KeyError(ref)

    @property
    def uses_selftest(self) -> bool:
        """Whether any step is an IOMMU_TEST_CMD (needs the selftest header in C)."""
        return any(s.record.call.startswith("IOMMU_TEST_CMD") for s in self.steps)


def _name(record: Record, source: str, number: int) -> str:
    if source == "return":
        base = {"open": "fd", "memfd": "memfd", "alloc": "mem", "mmap": "mem"}.get(
            record.op, "ret")
    else:
        leaf = source.rsplit(".", 1)[-1]
        base = re.sub(r"^out_", "", leaf)
        base = re.sub(r"_id$", "", base) or "id"
    return f"{base}{number}"


def build(records: list[Record], sides: tuple[str, str], releases: tuple[str, str],
          title: str, notes: list[str]) -> Program:
    """The program of ``records`` (a case's or exploration's log), cut at the first
    divergence."""
    end = next((i for i, r in enumerate(records) if r.diverged), len(records) - 1)
    chosen = records[:end + 1]
    needed: set[int] = set()
    keep: list[Record] = []
    for position in range(len(chosen) - 1, -1, -1):
        record = chosen[position]
        divergent = position == end and record.diverged is not None
        if not divergent and record.op in _LOOKS:
            continue
        if record.op in _SETUP and record.index not in needed and not divergent:
            if not (record.op in ("poke", "ftruncate", "munmap")
                    and _targets(record) & needed):
                continue
        keep.append(record)
        needed.update(ref.index for ref in record.refs.values())
    keep.reverse()
    used: dict[int, set[str]] = {}
    for record in keep:
        for ref in record.refs.values():
            used.setdefault(ref.index, set()).add(ref.source)
    steps = []
    for number, record in enumerate(keep, start=1):
        p, s = record.results
        divergent = record.diverged is not None
        step = Step(record, s if divergent else p, p if divergent else None, number=number)
        for source in sorted(used.get(record.index, ())):
            step.produces[source] = _name(record, source, number)
        if record.op in ("alloc", "mmap", "open", "memfd") and "return" not in step.produces:
            step.produces["return"] = _name(record, "return", number)
        steps.append(step)
    return Program(steps, sides, releases, title, notes)


def _targets(record: Record) -> set[int]:
    return {ref.index for ref in record.refs.values()}


def fill_pattern(data: bytes) -> bytes | None:
    """The shortest period (at most 256 bytes) ``data`` repeats, None if there is none."""
    for period in range(1, min(256, len(data)) + 1):
        pattern = data[:period]
        if (pattern * (len(data) // period + 1))[:len(data)] == data:
            return pattern
    return None
