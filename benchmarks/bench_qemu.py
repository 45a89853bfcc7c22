"""The whole suite in a QEMU guest beside the kernel's own C suite in the same guest.

Runs ``pytest tests/iommufd --iommufd-backend qemu:ARCH --iommufd-kselftest-lineup`` in this
process and prints: time to the first test result (warm start: cached images), the suite's wall time
from the first test to the last, the C suites' wall time in the same guest, and the
ratio (target: at most 3x). Run: ``python3 benchmarks/bench_qemu.py [--arch x86_64]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Timer:
    """A pytest plugin noting when the session started and each case finished."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first: float | None = None
        self.last: float | None = None
        self.first_started: float | None = None
        self.config: Any = None

    def pytest_configure(self, config: Any) -> None:
        self.config = config

    def pytest_runtest_logstart(self) -> None:
        if self.first_started is None:
            self.first_started = time.monotonic()

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and report.skipped):
            now = time.monotonic()
            self.first = self.first or now
            self.last = now


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    args = parser.parse_args()
    spec = f"qemu:{args.arch}"
    timer = Timer()
    code = pytest.main([str(ROOT / "tests" / "iommufd"), "-q", "--iommufd-backend", spec,
                        "--iommufd-kselftest-lineup", "-p", "no:cacheprovider"],
                       plugins=[timer])
    reporter = timer.config.pluginmanager.get_plugin("iommufd-lineup")
    c_seconds = reporter.c_seconds.get(spec) if reporter else None
    if timer.first is None or timer.last is None or timer.first_started is None or not c_seconds:
        print(f"bench_qemu: incomplete run (pytest exit {code})", file=sys.stderr)
        return 1
    suite = timer.last - timer.first_started
    print(f"{spec}: warm start to first test result: {timer.first - timer.start:.1f} s")
    print(f"{spec}: python suite (first test to last): {suite:.1f} s")
    print(f"{spec}: kernel C suites (iommufd + iommufd_fail_nth), same guest: {c_seconds:.1f} s")
    print(f"{spec}: ratio python / C: {suite / c_seconds:.2f}x (target <= 3x)")
    return 0 if code == 0 else int(code)


if __name__ == "__main__":
    sys.exit(main())
