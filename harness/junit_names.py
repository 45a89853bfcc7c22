"""JUnit XML shows a ported case under its kernel name.

pytest's junitxml names a testcase after the node ID (``test_area[...]`` in class
``tests.iommufd.test_iommufd_ioas``). For ported cases this sets ``classname`` to
``iommufd.<fixture>`` and ``name`` to the kernel case name, so a CI viewer lists
``iommufd_ioas.mock_domain.area`` under ``iommufd`` / ``iommufd_ioas``, with nothing
outside the JUnit schema (no per-testcase ``<properties>``).
"""

from __future__ import annotations

import pytest
from _pytest.junitxml import xml_key  # the LogXML of --junitxml; no public accessor

from harness.state import STATE

SUITE = "iommufd"


class JunitNames:
    """Renames ported cases' testcases in pytest's own JUnit report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        xml = self.config.stash.get(xml_key, None)
        name = self.config.stash[STATE].kernel_name(report)
        if xml is None or not name:
            return
        # Runs before junitxml's own hook: attributes set on the testcase reporter here
        # survive its record_testreport(), which restores attributes set beforehand.
        reporter = xml.node_reporter(report)
        reporter.attrs["classname"] = f"{SUITE}.{name.split('.', 1)[0]}"
        reporter.attrs["name"] = name
