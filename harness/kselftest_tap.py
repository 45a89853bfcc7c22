"""Parse what the kernel's C selftests print: kselftest TAP 13 / KTAP, nested or not.

The iommufd suites (tools/testing/selftests/iommu) use kselftest_harness.h,
which prints for each case::

    #  RUN           iommufd_ioas.mock_domain.area ...
    # iommufd.c:123:area:Expected 0 (0) == rc (-1)       <- diagnostics, on failure
    #            FAIL  iommufd_ioas.mock_domain.area
    not ok 12 iommufd_ioas.mock_domain.area
    ok 13 iommufd_viommu.no_viommu.vdevice_alloc # SKIP Skipping: no vIOMMU

and at the end ``# Totals: pass:233 fail:8 xfail:0 xpass:0 skip:5 error:0``.
Run under run_kselftest.sh the same lines come nested one level down, behind
``# `` (and the runner's own ``ok 1 selftests: iommu: iommufd``); KTAP nests
with indentation instead. Both are flattened here: a case is whatever a
result line names, at any depth, except the runner's ``selftests: ...`` lines.

Results are the kselftest ones mapped onto four: ``pass``, ``fail``,
``skip``, ``xfail`` (an XPASS is ``not ok``: a fail, its reason says XPASS; a
TODO ``not ok`` is an xfail).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

RESULTS = ("pass", "fail", "skip", "xfail")

_RESULT = re.compile(
    r"^(?P<not>not )?ok (?P<num>\d+)(?: -)? ?(?P<name>[^#]*?)\s*"
    r"(?:#\s*(?P<directive>SKIP|XFAIL|XPASS|TODO|skip|xfail|xpass|todo)\b\s*(?P<reason>.*)"
    r"|#.*)?$")  # any other "# ..." after the name is a comment (the runner's "# exit=1")
_RUN = re.compile(r"^\s*RUN\s+(?P<name>\S+)")
_END_MARK = re.compile(r"^\s*(?:OK|FAIL|SKIP|XFAIL|XPASS|TIMEOUT)\s+(?P<name>\S+)\s*$")
_TOTALS = re.compile(r"^Totals: (?P<fields>(?:\w+:\d+\s*)+)$")
_PLAN = re.compile(r"^1\.\.(?P<count>\d+)")
_RUNNER_NAME = re.compile(r"^selftests: ")
_BAIL = re.compile(r"^Bail out!\s*(?P<reason>.*)")
_PRINTK = re.compile(r"\[\s*\d+\.\d{6}\] ")


@dataclass(frozen=True)
class CaseResult:
    """One case: its result (one of RESULTS) and why (skip reason, failure diagnostics)."""

    result: str
    reason: str = ""
    number: int = 0


@dataclass
class SelftestRun:
    """Everything parsed from one console or output text."""

    #: case name -> result, in the order the cases ran
    cases: dict[str, CaseResult] = field(default_factory=dict)
    #: each ``# Totals:`` line, as {"pass": 233, "fail": 8, ...}
    totals: list[dict[str, int]] = field(default_factory=list)
    #: each plan (``1..N``) of a suite's own cases
    plans: list[int] = field(default_factory=list)
    #: the runner's per-program results (``selftests: iommu: iommufd`` -> pass/fail)
    programs: dict[str, CaseResult] = field(default_factory=dict)
    #: ``Bail out!`` reasons
    bailouts: list[str] = field(default_factory=list)

    def results(self) -> dict[str, tuple[str, str]]:
        """``{case name: (result, reason)}``."""
        return {name: (case.result, case.reason) for name, case in self.cases.items()}

    def outcomes(self) -> dict[str, str]:
        """``{case name: result}``, the shape :mod:`harness.lineup` compares."""
        return {name: case.result for name, case in self.cases.items()}

    def counts(self) -> dict[str, int]:
        """How many cases have each result."""
        counts = dict.fromkeys(RESULTS, 0)
        for case in self.cases.values():
            counts[case.result] += 1
        return counts


def strip_nesting(line: str) -> str:
    """A line without its nesting: indentation, and each ``#`` level that has a
    result, a plan or another level under it.

    A kselftest comment (``#  RUN ...``, ``#            OK  name``) keeps its
    ``#``: what follows is neither, so it never reads as a result line.
    """
    text = line.strip()
    while text.startswith("#"):
        rest = text[1:].strip()
        if not (rest.startswith("#") or _RESULT.match(rest) or _PLAN.match(rest)):
            break
        text = rest
    return text


def unsplice_printk(lines: Iterable[str]) -> list[str]:
    """Console lines with kernel messages taken out of the test's lines.

    On a serial console, printk can land in the middle of a line a test is
    writing: ``#  RUN  iommufd_mock_do[    6.787452] iommufd_mock ...`` then
    ``main.one_domain_[    6.787801] ...`` then ``hugepage.basic ...``. The
    pieces before each embedded ``[ seconds.micros]`` are joined to the next
    line that has none; lines that start with a timestamp are dropped.
    """
    out: list[str] = []
    carry = ""
    for raw in lines:
        line = raw.rstrip("\r\n")
        match = _PRINTK.search(line)
        if match is None:
            out.append(carry + line)
            carry = ""
        elif match.start() > 0:
            carry += line[:match.start()]
    if carry:
        out.append(carry)
    return out


def _result_of(negated: bool, directive: str | None, reason: str) -> tuple[str, str]:
    kind = (directive or "").upper()
    if kind == "SKIP":
        return "skip", reason
    if kind == "XFAIL":
        return "xfail", reason
    if kind == "XPASS":
        return "fail", f"XPASS {reason}".strip()
    if kind == "TODO":
        return ("xfail" if negated else "pass"), reason
    return ("fail" if negated else "pass"), reason


def parse(text: str | Iterable[str]) -> SelftestRun:
    """Parse kselftest/KTAP output (a whole console log is fine: other lines are ignored)."""
    lines = unsplice_printk(text.splitlines() if isinstance(text, str) else text)
    run = SelftestRun()
    diagnostics: list[str] = []
    for raw in lines:
        line = strip_nesting(raw)
        match = _RESULT.match(line)
        if match is not None:
            result, reason = _result_of(bool(match["not"]), match["directive"],
                                        (match["reason"] or "").strip())
            if result == "fail" and not reason and diagnostics:
                reason = "; ".join(diagnostics[:3])
            name = match["name"].strip()
            case = CaseResult(result, reason, int(match["num"]))
            if _RUNNER_NAME.match(name):
                run.programs[name] = case
            elif name:
                run.cases[name] = case
            diagnostics = []
            continue
        plan = _PLAN.match(line)
        if plan is not None:
            run.plans.append(int(plan["count"]))
            continue
        bail = _BAIL.match(line)
        if bail is not None:
            run.bailouts.append(bail["reason"])
            continue
        if not line.startswith("#"):
            continue  # kernel messages and anything else on the console
        comment = line[1:].strip()
        totals = _TOTALS.match(comment)
        if totals is not None:
            run.totals.append({key: int(value) for key, value in
                               (item.split(":") for item in totals["fields"].split())})
        elif _RUN.match(comment):
            diagnostics = []
        elif comment and not _END_MARK.match(comment):
            diagnostics.append(comment)
    return run
