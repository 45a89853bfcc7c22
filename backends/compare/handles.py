"""The handle maps of a lockstep pair: the primary's IDs, fds and addresses to the secondary's.

Calls are written in the primary's terms (what the caller got back from it); before the
secondary runs one, every handle in it is translated with these maps. A value the maps
do not know (a deliberately bad ID, a NULL or wild pointer) passes unchanged, so both
sides see the same kind of bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.compare.fields import Kind

#: the ID namespace of a handle: the primary's iommufd fd (object IDs), the primary's
#: access fd (access pages IDs), or 0 for process-wide handles (fds)
Namespace = int


@dataclass
class Region:
    """One piece of user memory on both sides: allocated, mapped or a memfd mapping."""

    primary: int
    secondary: int
    length: int
    origin: int   # index of the call that made it (for reproducers)
    live: bool = True  # False once wholly unmapped (kept: later uses fault on both)


@dataclass
class HandleMaps:
    """Primary -> secondary maps per kind, with the call that produced each handle."""

    values: dict[tuple[Kind, Namespace, int], int] = field(default_factory=dict)
    back: dict[tuple[Kind, Namespace, int], int] = field(default_factory=dict)
    origins: dict[tuple[Kind, Namespace, int], tuple[int, str]] = field(default_factory=dict)
    regions: list[Region] = field(default_factory=list)

    def bind(self, kind: Kind, ns: Namespace, primary: int, secondary: int,
             origin: tuple[int, str]) -> None:
        """Record that ``primary`` on one side is ``secondary`` on the other (latest wins:
        the kernel reuses freed IDs and fds)."""
        self.values[(kind, ns, primary)] = secondary
        self.back[(kind, ns, secondary)] = primary
        self.origins[(kind, ns, primary)] = origin

    def to_secondary(self, kind: Kind, ns: Namespace, value: int) -> int:
        """The secondary's handle for the primary's ``value``."""
        if kind is Kind.ADDR:
            region = self.region_of(value)
            return value if region is None else region.secondary + value - region.primary
        return self.values.get((kind, ns, value), value)

    def to_primary(self, kind: Kind, ns: Namespace, value: int) -> int:
        """The primary's handle for the secondary's ``value``."""
        if kind is Kind.ADDR:
            region = _find(self.regions, value, secondary=True)
            return value if region is None else region.primary + value - region.secondary
        return self.back.get((kind, ns, value), value)

    def origin(self, kind: Kind, ns: Namespace, value: int) -> tuple[int, str] | None:
        """``(call index, field)`` that produced the primary's ``value``, if known."""
        return self.origins.get((kind, ns, value))

    def add_region(self, primary: int, secondary: int, length: int, origin: int) -> None:
        """A new piece of memory (the newest wins where addresses are reused)."""
        self.regions.append(Region(primary, secondary, length, origin))

    def region_of(self, addr: int) -> Region | None:
        """The region of the primary's ``addr`` (see :func:`_find`)."""
        return _find(self.regions, addr, secondary=False)

    def unmapped(self, addr: int, length: int) -> None:
        """munmap of the primary's ``[addr, addr + length)``: regions it covers whole
        are no longer live."""
        for region in self.regions:
            if addr <= region.primary and region.primary + region.length <= addr + length:
                region.live = False


def _find(regions: list[Region], addr: int, *, secondary: bool) -> Region | None:
    """The region holding ``addr``: a live one before an unmapped one, the newest first;
    failing that, one that ends right at ``addr`` (an end pointer of a buffer)."""
    def start(region: Region) -> int:
        return region.secondary if secondary else region.primary

    inside = [r for r in regions if start(r) <= addr < start(r) + r.length]
    for region in reversed(inside):
        if region.live:
            return region
    if inside:
        return inside[-1]
    ending = [r for r in regions if addr == start(r) + r.length]
    return ending[-1] if ending else None
