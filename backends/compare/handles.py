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
            for region in reversed(self.regions):
                if region.secondary <= value <= region.secondary + region.length:
                    return region.primary + value - region.secondary
            return value
        return self.back.get((kind, ns, value), value)

    def origin(self, kind: Kind, ns: Namespace, value: int) -> tuple[int, str] | None:
        """``(call index, field)`` that produced the primary's ``value``, if known."""
        return self.origins.get((kind, ns, value))

    def add_region(self, primary: int, secondary: int, length: int, origin: int) -> None:
        """A new piece of memory (the newest wins where addresses are reused)."""
        self.regions.append(Region(primary, secondary, length, origin))

    def region_of(self, addr: int) -> Region | None:
        """The newest region holding (or ending at) the primary's ``addr``."""
        for region in reversed(self.regions):
            if region.primary <= addr <= region.primary + region.length:
                return region
        return None
