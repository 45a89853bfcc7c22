"""Lining our results up with the C suite's."""

from __future__ import annotations

from pathlib import Path

from harness import kselftest_tap, lineup

DATA = Path(__file__).parent / "data"


def test_agreements_differences_and_one_sided_cases():
    ours = {"iommufd.simple_close": "pass",
            "iommufd_ioas.mock_domain.dmabuf_simple": ("xfail", "known issue 7.3.x"),
            "iommufd.cmd_length": ("fail", "AssertionError: EINVAL != 0"),
            "iommufd_viommu.no_viommu.hw_queue": "pass",
            "only.ours.case": "pass"}
    theirs = kselftest_tap.parse("""\
ok 1 iommufd.simple_close
not ok 2 iommufd_ioas.mock_domain.dmabuf_simple
ok 3 iommufd.cmd_length
ok 4 iommufd_viommu.no_viommu.hw_queue # SKIP Skipping test for variant no_viommu
ok 5 only.c.case
""").cases
    result = lineup.line_up(ours, theirs)
    assert [(r.name, r.status) for r in result.rows] == [
        ("iommufd.cmd_length", lineup.DIFFER),
        ("iommufd_viommu.no_viommu.hw_queue", lineup.DIFFER),
        ("only.ours.case", lineup.ONLY_OURS),
        ("only.c.case", lineup.ONLY_THEIRS),
        ("iommufd.simple_close", lineup.AGREE),
        ("iommufd_ioas.mock_domain.dmabuf_simple", lineup.AGREE),  # xfail == fail
    ]
    assert not result.agrees
    assert result.rows[0].reason == "AssertionError: EINVAL != 0"
    text = lineup.format_lineup(result)
    lines = text.splitlines()
    assert lines[0].split() == ["kselftest", "case", "ours", "C", "suite", "status"]
    assert lines[2].split()[:4] == ["iommufd.cmd_length", "fail", "pass", "DIFFER"]
    assert "(AssertionError: EINVAL != 0)" in lines[2]
    assert "only.c.case" in text and " -  " in text
    assert lines[-1] == "2 agree, 2 differ, 1 only ours, 1 only C suite"
    short = lineup.format_lineup(result, show_agreements=False)
    assert "iommufd.simple_close" not in short


def test_recorded_c_suite_against_itself_agrees():
    theirs = kselftest_tap.parse((DATA / "x86_64-7.3.4-selftests.tap").read_text())
    result = lineup.line_up(theirs.outcomes(), theirs.cases)
    assert result.agrees and result.count(lineup.AGREE) == 254


def test_same_verdict():
    assert lineup.same_verdict("xfail", "fail") and lineup.same_verdict("xpass", "pass")
    assert lineup.same_verdict("error", "fail")
    assert not lineup.same_verdict("skip", "pass") and not lineup.same_verdict("pass", "fail")


def test_long_reasons_are_cut():
    result = lineup.line_up({"a.b": ("fail", "x" * 200)}, {"a.b": "pass"})
    line = lineup.format_lineup(result, reason_width=20).splitlines()[2]
    assert line.endswith("(" + "x" * 17 + "...)")
