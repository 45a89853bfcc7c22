"""Kernel splats in a console stream: panics, Oopses, BUGs, WARNINGs, hung tasks.

A line-fed state machine with no I/O and no clock, so it is unit-tested with
recorded console text; :mod:`backends.qemu.console` feeds it from QEMU's serial
console and decides when a splat that never printed its end marker is over.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

# (kind, pattern) for a splat's first line, checked in order. Console lines may
# carry a printk time prefix ("[    1.234567] "), so these are searched, not matched.
START_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("warning", re.compile(r"------------\[ cut here \]------------")),
    ("warning", re.compile(r"\bWARNING: (?:CPU: \d+ PID: \d+|.* at )")),
    ("bug", re.compile(r"kernel BUG at ")),
    ("bug", re.compile(r"\bBUG: ")),
    ("bug", re.compile(r"\bUBSAN: ")),
    ("oops", re.compile(r"\bOops: |Internal error: Oops")),
    ("oops", re.compile(r"general protection fault")),
    ("oops", re.compile(r"Unable to handle kernel ")),
    ("hang", re.compile(r"INFO: task .* blocked for more than \d+ seconds")),
    ("hang", re.compile(r"rcu: INFO: \S+ (?:self-)?detected stalls?")),
)
# A splat ends with its trace's end marker (or, for a panic, the panic's own).
END_PATTERN = re.compile(r"---\[ end (?:trace [0-9a-f]+|Kernel panic)")
# Lines inside a splat that say better than "cut here" what it is.
_SUMMARY_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("bug", re.compile(r"kernel BUG at |\bBUG: ")),
    ("oops", re.compile(r"\bOops: |Internal error: Oops|general protection fault|"
                        r"Unable to handle kernel ")),
    ("warning", re.compile(r"\bWARNING: ")),
)
_SEVERITY = {"warning": 0, "hang": 1, "bug": 2, "oops": 3, "panic": 4}
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")


@dataclass
class Splat:
    """One kernel splat: its kind, its telling line, and the console excerpt."""

    kind: str
    summary: str
    lines: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def excerpt(self) -> str:
        """The console lines before and of the splat, as text."""
        return "\n".join(self.lines)


def strip_timestamp(line: str) -> str:
    """``"[    1.234] BUG: x"`` -> ``"BUG: x"``."""
    return _TIMESTAMP.sub("", line)


def classify(line: str) -> str | None:
    """The splat kind ``line`` starts, or None."""
    for kind, pattern in START_PATTERNS:
        if pattern.search(line):
            return kind
    return None


class SplatDetector:
    """Finds the first splat in a stream of console lines and collects its excerpt.

    ``context`` lines before the splat go into the excerpt (what the guest was
    doing), and at most ``max_lines`` of the splat itself. Later splats (a
    WARNING that escalates to a panic with panic_on_warn) raise the kind's
    severity but do not start a new excerpt.
    """

    def __init__(self, context: int = 10, max_lines: int = 150) -> None:
        self._recent: deque[str] = deque(maxlen=context)
        self._max_lines = max_lines
        self.splat: Splat | None = None

    @property
    def started(self) -> bool:
        """A splat has begun."""
        return self.splat is not None

    @property
    def complete(self) -> bool:
        """A splat has begun and ended."""
        return self.splat is not None and self.splat.complete

    def feed(self, line: str) -> None:
        """One console line, without its line ending."""
        splat = self.splat
        if splat is None:
            kind = classify(line)
            if kind is None:
                self._recent.append(line)
                return
            self.splat = Splat(kind, strip_timestamp(line).strip(), [*self._recent, line])
            self._refine(self.splat, line)
            return
        if splat.complete:
            self._escalate(splat, line)
            return
        if len(splat.lines) < len(self._recent) + self._max_lines:
            splat.lines.append(line)
        self._refine(splat, line)
        if END_PATTERN.search(line):
            splat.complete = True

    def finish(self) -> None:
        """The stream ended (or went quiet): whatever splat began is complete."""
        if self.splat is not None:
            self.splat.complete = True

    @staticmethod
    def _refine(splat: Splat, line: str) -> None:
        """Raise the kind to the most severe line seen; keep the first telling
        summary (the BUG line before its Oops, the WARNING before a panic), but
        never "cut here", which says nothing."""
        for kind, pattern in _SUMMARY_KINDS:
            if pattern.search(line):
                if "cut here" in splat.summary:
                    splat.summary = strip_timestamp(line).strip()
                if _SEVERITY[kind] > _SEVERITY[splat.kind]:
                    splat.kind = kind
                return

    def _escalate(self, splat: Splat, line: str) -> None:
        # After a WARNING's end marker, panic_on_warn's panic still matters.
        kind = classify(line)
        if kind is not None and _SEVERITY[kind] > _SEVERITY[splat.kind]:
            splat.kind = kind
            splat.lines.append(line)
