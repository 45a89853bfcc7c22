"""Known kernel issues: kernel-version-keyed expectations from known_issues.toml.

A run on a kernel whose release starts with an entry's ``kernel`` prefix marks the
matching cases xfail (not strict: a fixed kernel reports XPASS) with the reason
``known issue: ...``; the mock is never matched (its release is ``mock``).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("known_issues.toml")


@dataclass(frozen=True)
class KnownIssue:
    """One expectation: case-name patterns failing on kernels with a release prefix."""

    kernel: str
    cases: tuple[str, ...]
    reason: str

    def matches(self, kernel_release: str, case: str) -> bool:
        """True when ``case`` on ``kernel_release`` is expected to fail."""
        return kernel_release.startswith(self.kernel) and any(
            fnmatch.fnmatchcase(case, pattern) for pattern in self.cases
        )


def load(path: Path = DEFAULT_FILE) -> list[KnownIssue]:
    """Parse a known-issues file; a malformed entry is a one-line ValueError."""
    data = tomllib.loads(path.read_text())
    issues = []
    for number, entry in enumerate(data.get("issue", []), start=1):
        try:
            issues.append(KnownIssue(str(entry["kernel"]), tuple(entry["cases"]),
                                     str(entry["reason"])))
        except KeyError as missing:
            raise ValueError(f"{path}: issue {number} lacks {missing}") from None
    return issues


def lookup(issues: list[KnownIssue], kernel_release: str, case: str) -> str | None:
    """The reason ``case`` is expected to fail on ``kernel_release``, or None."""
    for issue in issues:
        if issue.matches(kernel_release, case):
            return f"known issue: {issue.reason}"
    return None
