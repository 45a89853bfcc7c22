"""A KTAP v1 report of a run, in the kselftest style, with the ``# Totals:`` line.

Outcomes map onto KTAP as the kernel's kselftest.h prints them: pass ``ok``, fail
``not ok``, skip ``ok ... # SKIP``, xfail ``ok ... # XFAIL``, xpass ``ok ... # XPASS``;
an error (the case could not run: its setup failed) is ``not ok ... # ERROR <reason>``
as Documentation/dev-tools/ktap.rst writes it. Known kernel issues are xfails whose
reason starts with ``known issue``, so a reader sees them as such.

A failed or errored case's diagnostics (where it failed and why) are written as ``#``
lines right before its result line, where kselftest puts them and where the kernel's
KTAP parser (``kunit.py parse``) shows them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("pass", "fail", "xfail", "xpass", "skip", "error")
#: the ``user_properties`` key of a report line printed as a diagnostic before the case
DIAGNOSTIC = "ktap_diagnostic"


@dataclass(frozen=True)
class CaseResult:
    """One case as the report shows it."""

    name: str
    outcome: str  # one of OUTCOMES
    reason: str = ""
    #: lines written as ``# ...`` diagnostics before the result line
    diagnostics: tuple[str, ...] = ()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def case_line(number: int, result: CaseResult) -> str:
    """The KTAP result line of one case."""
    reason = _one_line(result.reason)
    if result.outcome == "pass":
        return f"ok {number} {result.name}"
    if result.outcome == "skip":
        return f"ok {number} {result.name} # SKIP {reason}".rstrip()
    if result.outcome == "xfail":
        return f"ok {number} {result.name} # XFAIL {reason}".rstrip()
    if result.outcome == "xpass":
        return f"ok {number} {result.name} # XPASS {reason}".rstrip()
    if result.outcome == "error":
        return f"not ok {number} {result.name} # ERROR {reason}".rstrip()
    return f"not ok {number} {result.name}"


def totals_line(results: list[CaseResult]) -> str:
    """kselftest's summary line: ``# Totals: pass:N fail:N xfail:N xpass:N skip:N error:N``."""
    counts = Counter(r.outcome for r in results)
    return "# Totals: " + " ".join(f"{o}:{counts.get(o, 0)}" for o in OUTCOMES)


def render(results: list[CaseResult], header: list[str] | None = None) -> str:
    """The whole report: version line, plan, optional ``#`` header lines, cases, totals."""
    lines = ["KTAP version 1", f"1..{len(results)}"]
    lines += [f"# {_one_line(h)}" for h in header or []]
    for number, result in enumerate(results, start=1):
        lines += [f"# {line}".rstrip() for line in result.diagnostics]
        lines.append(case_line(number, result))
    lines.append(totals_line(results))
    return "\n".join(lines) + "\n"


def write(path: Path, results: list[CaseResult], header: list[str] | None = None) -> None:
    """Write the report to ``path`` (the parent directory must exist)."""
    path.write_text(render(results, header))
