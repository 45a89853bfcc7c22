"""KTAP rendering and known-issue matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import known_issues, ktap


def test_render_lines_and_totals() -> None:
    text = ktap.render([
        ktap.CaseResult("iommufd.simple_close", "pass"),
        ktap.CaseResult("iommufd.cmd_fail", "fail", "AssertionError: expected ENOENT",
                        ("test_iommufd.py:40: AssertionError: expected ENOENT",
                         "iommufd.cmd_fail: test failed")),
        ktap.CaseResult("change_process.account_none.basic", "skip", "backend mock lacks fork"),
        ktap.CaseResult("iommufd_ioas.mock_domain.dmabuf_simple", "xfail", "known issue: x"),
        ktap.CaseResult("a.b", "xpass"),
        ktap.CaseResult("a.c", "error", "RuntimeError: no /dev/iommu"),
    ], header=["backend mock: model"])
    assert text.splitlines() == [
        "KTAP version 1",
        "1..6",
        "# backend mock: model",
        "ok 1 iommufd.simple_close",
        "# test_iommufd.py:40: AssertionError: expected ENOENT",
        "# iommufd.cmd_fail: test failed",
        "not ok 2 iommufd.cmd_fail",
        "ok 3 change_process.account_none.basic # SKIP backend mock lacks fork",
        "ok 4 iommufd_ioas.mock_domain.dmabuf_simple # XFAIL known issue: x",
        "ok 5 a.b # XPASS",
        "not ok 6 a.c # ERROR RuntimeError: no /dev/iommu",
        "# Totals: pass:1 fail:1 xfail:1 xpass:1 skip:1 error:1",
    ]


def test_reasons_are_one_line() -> None:
    line = ktap.case_line(1, ktap.CaseResult("x.y", "skip", "two\nlines"))
    assert line == "ok 1 x.y # SKIP two lines"


def test_known_issue_7_3_dmabuf() -> None:
    issues = known_issues.load()
    reason = known_issues.lookup(issues, "7.3.4", "iommufd_ioas.mock_domain.dmabuf_revoke")
    assert reason is not None and reason.startswith("known issue: 7.3.x")
    assert known_issues.lookup(issues, "7.2.13", "iommufd_ioas.mock_domain.dmabuf_revoke") is None
    assert known_issues.lookup(issues, "mock", "iommufd_ioas.no_domain.dmabuf_simple") is None
    assert known_issues.lookup(issues, "7.3.4", "iommufd_ioas.mock_domain.area") is None


def test_malformed_known_issue_names_the_missing_key(tmp_path: Path) -> None:
    bad = tmp_path / "k.toml"
    bad.write_text('[[issue]]\nkernel = "7.3."\ncases = []\n')
    with pytest.raises(ValueError, match="issue 1 lacks 'reason'"):
        known_issues.load(bad)
