"""The calls of a lockstep run, in the primary's terms, with where each handle came from.

A reproducer is written from this log: every handle a call uses is named by the call
that produced it (``Ref``), so the calls can be replayed anywhere, where IDs, fds and
addresses come out different.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.compare.divergence import Attempt
from backends.compare.fields import Field, Layout


@dataclass(frozen=True)
class Ref:
    """A handle produced by call ``index``: its return value or an output ``field``
    (dotted name), plus ``offset`` bytes for an address inside a region."""

    index: int
    source: str = "return"
    offset: int = 0


@dataclass
class Record:
    """One contract call as the caller made it on the primary."""

    index: int
    op: str                          # "ioctl", "open", "alloc", "poke", ...
    args: tuple[Any, ...]            # the primary's arguments (ioctl: fd, request)
    call: str                        # readable name: "IOMMU_IOAS_MAP", "open /dev/iommu"
    refs: dict[str, Ref] = field(default_factory=dict)   # argument/field -> producer
    data: bytes | None = None        # an ioctl argument's bytes before the call
    ctype: str | None = None         # the argument's cffi type ("struct iommu_ioas_map *")
    layout: Layout | None = None
    results: tuple[Attempt, Attempt] = (Attempt(), Attempt())
    after: bytes | None = None       # the primary's argument bytes after the call
    diverged: str | None = None      # the aspect that differed at this call, if any
    #: at a divergence: the argument fields that differ, (dotted name, primary, secondary)
    field_diffs: list[tuple[str, int, int]] = field(default_factory=list)
    #: at a memory or read divergence: the secondary's bytes, and the pointer field
    #: (None: the call's own address argument) they were read at
    expected: bytes | None = None
    expected_at: str | None = None

    def handle_fields(self) -> list[tuple[Field, Ref]]:
        """The argument's handle fields whose producer is known."""
        if self.layout is None:
            return []
        return [(f, self.refs[f.name]) for f in self.layout.fields if f.name in self.refs]


@dataclass
class CallLog:
    """The log of one case or exploration. Memory set-up (allocations, mappings,
    fills) stays across :meth:`restart`: a session's shared buffers outlive cases."""

    records: list[Record] = field(default_factory=list)
    #: the kept set-up calls from before the case (allocations and their fills)
    setup: list[Record] = field(default_factory=list)
    started: bool = False

    _SETUP_OPS = frozenset({"alloc", "mmap", "memfd", "ftruncate", "munmap"})

    def add(self, record: Record) -> Record:
        """Append a record."""
        self.records.append(record)
        return record

    def restart(self) -> None:
        """A new case begins: keep only memory set-up from what came before (with
        the fills made before the first case; a case's own fills are its business)."""
        kept = [r for r in self.records
                if r.op in self._SETUP_OPS or (r.op == "poke" and not self.started)]
        self.started = True
        # A later fill of the same bytes supersedes an earlier one, and memory unmapped
        # whole is gone: the set-up stays small.
        self.setup = _without_unmapped(_latest_fills(self.setup + kept))
        self.records = []

    def case_records(self) -> list[Record]:
        """The kept set-up followed by the current case's calls."""
        return self.setup + self.records


def _latest_fills(records: list[Record]) -> list[Record]:
    last_fill: dict[tuple[int, int], int] = {}
    for position, record in enumerate(records):
        if record.op == "poke":
            last_fill[(record.args[0], len(record.args[1]))] = position
    return [r for position, r in enumerate(records)
            if r.op != "poke" or last_fill.get((r.args[0], len(r.args[1]))) == position]


def _without_unmapped(records: list[Record]) -> list[Record]:
    """Drop allocations unmapped whole, with their unmapping and fills."""
    gone: set[int] = set()
    for record in records:
        if record.op == "munmap" and "addr" in record.refs:
            ref = record.refs["addr"]
            made = next((r for r in records if r.index == ref.index), None)
            if made is not None and ref.offset == 0 and made.op == "alloc" \
                    and record.args[1] >= made.args[0]:
                gone.add(made.index)
    return [r for r in records
            if r.index not in gone and not any(ref.index in gone for ref in r.refs.values())]
