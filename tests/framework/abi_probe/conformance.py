"""The whole conformance check: probe the real headers, compare, and report."""

from __future__ import annotations

from dataclasses import dataclass, field

from .compare import (
    Counts,
    InventoryScope,
    Mismatch,
    compare,
    compare_inventory,
    dropped_mismatches,
    python_facts,
)
from .fetch import RealHeaders
from .inventory import header_inventories, kernel_ioctl_table
from .probe import run_probe

INCLUDES = ("<linux/iommufd.h>", "<linux/vfio.h>", '"iommufd_test.h"')
"""What the probe includes, in this order (the selftest header needs iommufd.h first)."""

SCOPES = [
    InventoryScope("iommufd.h", complete=True),
    InventoryScope("iommufd_test.h", complete=True),
    InventoryScope("vfio.h", complete=False),
]


@dataclass
class Report:
    """The outcome of one check: every mismatch and what was compared."""

    mismatches: list[Mismatch] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    declarations: int = 0
    """How many declarations of the real headers were looked up on the Python side."""
    probe_cached: bool = False

    def summary(self) -> str:
        """One line of counts, for the test log."""
        parts = []
        if self.counts != Counts():
            cache = " (probe binary from the cache)" if self.probe_cached else ""
            parts.append(f"compared {self.counts}{cache}")
        if self.declarations:
            parts.append(f"looked up {self.declarations} declarations of the real headers "
                         "in uapi_headers")
        return "ABI conformance: " + "; ".join(parts or ["nothing compared"])

    def failure_text(self) -> str:
        """All mismatches, one a line, for the assertion message."""
        lines = [f"{len(self.mismatches)} ABI mismatches between the real headers (C) and "
                 "uapi_headers (Python):"]
        lines.extend(f"  {m}" for m in self.mismatches)
        return "\n".join(lines)


def check_probe(headers: RealHeaders, *, compiler: str = "cc") -> Report:
    """Compare every Python declaration with the C compiler's view of the real headers."""
    py = python_facts()
    result = run_probe(
        py,
        headers.include_dirs,
        [headers.test_header],
        INCLUDES,
        headers.identity,
        commands=kernel_ioctl_table(headers.ioctl_table),
        compiler=compiler,
    )
    mismatches, counts = compare(result.facts, py)
    return Report(dropped_mismatches(result.dropped) + mismatches, counts,
                  probe_cached=result.cached)


def check_inventory(headers: RealHeaders, *, compiler: str = "cc") -> Report:
    """Find what the real headers declare that the Python side lacks."""
    inventories = header_inventories(headers.include_dirs, INCLUDES,
                                     extra_dirs=[headers.test_header.parent],
                                     compiler=compiler)
    mismatches, checked = compare_inventory(inventories, SCOPES)
    return Report(mismatches, declarations=checked)
