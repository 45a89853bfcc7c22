"""Known divergences: kernel-version-keyed, reported instead of failed."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("known_divergences.toml")
ASPECTS = ("errno", "return", "output", "memory", "read")


@dataclass(frozen=True)
class KnownDivergence:
    """A call whose ``what`` differs on kernels whose release starts with ``kernel``."""

    kernel: str
    call: str
    what: str
    reason: str

    def matches(self, releases: tuple[str, ...], call: str, what: str) -> bool:
        """True for this call and aspect when either side runs a matching kernel."""
        return (call == self.call and what == self.what
                and any(r.startswith(self.kernel) for r in releases))


def load(path: Path = DEFAULT_FILE) -> list[KnownDivergence]:
    """Parse a known-divergences file; a malformed entry is a one-line ValueError."""
    entries = tomllib.loads(path.read_text()).get("divergence", [])
    known = []
    for number, entry in enumerate(entries, start=1):
        try:
            item = KnownDivergence(str(entry["kernel"]), str(entry["call"]),
                                   str(entry["what"]), str(entry["reason"]))
        except KeyError as missing:
            raise ValueError(f"{path}: divergence {number} lacks {missing}") from None
        if item.what not in ASPECTS:
            raise ValueError(f"{path}: divergence {number}: what={item.what!r} is not one "
                             f"of {', '.join(ASPECTS)}")
        known.append(item)
    return known


def lookup(known: list[KnownDivergence], releases: tuple[str, ...], call: str,
           what: str) -> str | None:
    """The reason this divergence is known, or None."""
    for item in known:
        if item.matches(releases, call, what):
            return item.reason
    return None
