"""The state of an iommufd session, kept in ``config.stash[STATE]`` once it is active."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from backends import Backend
    from harness.known_issues import KnownIssue


@dataclass
class SessionState:
    """What the plugin's parts share during one iommufd session."""

    #: the backend specs of the run, in the order given
    specs: list[str]
    #: the known kernel issues (harness/known_issues.toml)
    issues: list[KnownIssue]
    #: nodeid -> kernel case name (``fixture.variant.test``, ``@spec`` in comparisons)
    names: dict[str, str] = field(default_factory=dict)
    #: nodeid -> the backend spec the test runs on
    item_backends: dict[str, str] = field(default_factory=dict)
    #: spec -> the backend opened for it (by the ``backend`` fixture)
    backends: dict[str, Backend] = field(default_factory=dict)

    def kernel_name(self, report: pytest.TestReport) -> str | None:
        """The kernel name of a report's case: from this process's collection, else
        from the report (an xdist controller collects nothing; workers tag reports)."""
        name = self.names.get(report.nodeid)
        return name if name is not None else getattr(report, "kselftest_name", None)

    def backend_of(self, report: pytest.TestReport) -> str:
        """The backend spec a report's test ran on (known here, else tagged by a worker)."""
        spec = self.item_backends.get(report.nodeid)
        return spec or str(getattr(report, "iommufd_backend", "") or self.specs[0])


STATE = pytest.StashKey[SessionState]()
