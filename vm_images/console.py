"""Reading a guest's console: the selftests' TAP totals and /init's own status lines."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: /init prefixes its own lines with this (vm_images/guest/init).
INIT_PREFIX = "iommufd-harness: "

_TOTALS = re.compile(r"^# Totals: (.*)$")
_EXEC_STATUS = re.compile(r"^iommufd-harness: exec status (\d+)\s*$")
_RUNNING = re.compile(r"^iommufd-harness: running /selftests/(\S+)\s*$")
_EXITED = re.compile(r"^iommufd-harness: (\S+) exited with status (\d+)\s*$")


@dataclass(frozen=True)
class SuiteTotals:
    """The ``# Totals:`` line of one kselftest program."""

    program: str
    counts: dict[str, int]   # pass, fail, xfail, xpass, skip, error

    @property
    def cases(self) -> int:
        """How many cases ran (every outcome counted once)."""
        return sum(self.counts.values())

    def __str__(self) -> str:
        detail = " ".join(f"{k}:{v}" for k, v in self.counts.items())
        return f"{self.program}: {self.cases} cases ({detail})"


def parse_totals(lines: Iterable[str]) -> list[SuiteTotals]:
    """Every kselftest ``# Totals:`` line, attributed to the program /init said it ran."""
    program = "?"
    found: list[SuiteTotals] = []
    for raw in lines:
        line = raw.strip("\r\n")
        if m := _RUNNING.match(line):
            program = m.group(1)
        elif m := _TOTALS.match(line):
            counts = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(1))}
            found.append(SuiteTotals(program, counts))
    return found


def program_statuses(lines: Iterable[str]) -> dict[str, int]:
    """``{program: exit status}`` for each selftest program /init saw finish."""
    found: dict[str, int] = {}
    for raw in lines:
        if m := _EXITED.match(raw.strip("\r\n")):
            found[m.group(1)] = int(m.group(2))
    return found


def exec_status(lines: Iterable[str]) -> int | None:
    """The status /init printed for ``iommufd.mode=exec``, or None if it never did."""
    status: int | None = None
    for raw in lines:
        if m := _EXEC_STATUS.match(raw.strip("\r\n")):
            status = int(m.group(1))
    return status


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """``key=value`` words of a kernel command line (bare words map to ""); last one wins.

    The same reading /init does in shell, for tests and for the host's side.
    """
    params: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        params[key] = value
    return params
