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
    #: spec -> the backend opened for it (by the ``backend`` fixture)
    backends: dict[str, Backend] = field(default_factory=dict)


STATE = pytest.StashKey[SessionState]()
