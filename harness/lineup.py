"""Line our results up with the kernel's C suite, case by case, by kselftest name.

Both sides are ``{kselftest name: outcome}`` (ours from the pytest run, the C
suite's from :mod:`harness.kselftest_tap`); an outcome is a result string
(``pass``, ``fail``, ``skip``, ``xfail``, ``xpass``, ``error``), a
``(result, reason)`` pair or anything with ``.result`` / ``.reason``.

Two outcomes *agree* when they say the same about the kernel: ``xfail`` (a
known issue that failed) agrees with ``fail``, ``xpass`` with ``pass``, and
``error`` counts as ``fail``. A skip agrees only with a skip: a case one side
skipped and the other ran is a difference worth seeing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AGREE = "agree"
DIFFER = "DIFFER"
ONLY_OURS = "only ours"
ONLY_THEIRS = "only C"

_SAME_AS = {"xfail": "fail", "xpass": "pass", "error": "fail"}
_ORDER = {DIFFER: 0, ONLY_OURS: 1, ONLY_THEIRS: 2, AGREE: 3}


@dataclass(frozen=True)
class Row:
    """One case: both sides' results and reasons, and how they compare."""

    name: str
    ours: str | None
    theirs: str | None
    status: str
    reason: str = ""


@dataclass
class Lineup:
    """All rows, disagreements first."""

    rows: list[Row] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many rows have ``status``."""
        return sum(1 for row in self.rows if row.status == status)

    def by_status(self, status: str) -> list[Row]:
        """The rows with ``status``, by name."""
        return [row for row in self.rows if row.status == status]

    @property
    def agrees(self) -> bool:
        """Every case both sides ran agrees (cases only one side ran do not count)."""
        return self.count(DIFFER) == 0


def _split(outcome: Any) -> tuple[str, str]:
    if isinstance(outcome, str):
        return outcome, ""
    if isinstance(outcome, tuple):
        return str(outcome[0]), str(outcome[1]) if len(outcome) > 1 else ""
    return str(outcome.result), str(getattr(outcome, "reason", "") or "")


def same_verdict(a: str, b: str) -> bool:
    """Two results say the same about the kernel (see the module docstring)."""
    return _SAME_AS.get(a, a) == _SAME_AS.get(b, b)


def line_up(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> Lineup:
    """Compare two ``{kselftest name: outcome}`` maps."""
    rows: list[Row] = []
    for name in sorted(set(ours) | set(theirs)):
        mine = _split(ours[name]) if name in ours else None
        other = _split(theirs[name]) if name in theirs else None
        if mine is None:
            assert other is not None
            rows.append(Row(name, None, other[0], ONLY_THEIRS, other[1]))
        elif other is None:
            rows.append(Row(name, mine[0], None, ONLY_OURS, mine[1]))
        else:
            status = AGREE if same_verdict(mine[0], other[0]) else DIFFER
            reason = " | ".join(r for r in (mine[1], other[1]) if r) if status == DIFFER else ""
            rows.append(Row(name, mine[0], other[0], status, reason))
    rows.sort(key=lambda row: (_ORDER[row.status], row.name))
    return Lineup(rows)


def format_lineup(lineup: Lineup, *, ours_label: str = "ours", theirs_label: str = "C suite",
                  show_agreements: bool = True, reason_width: int = 80) -> str:
    """The lineup as a text table, then one summary line."""
    rows = [r for r in lineup.rows if show_agreements or r.status != AGREE]
    name_width = max([len("kselftest case"), *(len(r.name) for r in rows)])
    side_width = max(len(ours_label), len(theirs_label), len("xfail"))
    header = (f"{'kselftest case':<{name_width}}  {ours_label:<{side_width}}  "
              f"{theirs_label:<{side_width}}  status")
    out = [header, "-" * len(header)]
    for row in rows:
        line = (f"{row.name:<{name_width}}  {row.ours or '-':<{side_width}}  "
                f"{row.theirs or '-':<{side_width}}  {row.status}")
        if row.reason:
            reason = row.reason if len(row.reason) <= reason_width else (
                row.reason[:reason_width - 3] + "...")
            line += f"  ({reason})"
        out.append(line.rstrip())
    out.append(f"{lineup.count(AGREE)} agree, {lineup.count(DIFFER)} differ, "
               f"{lineup.count(ONLY_OURS)} only {ours_label}, "
               f"{lineup.count(ONLY_THEIRS)} only {theirs_label}")
    return "\n".join(out)
