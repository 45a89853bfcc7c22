"""The kselftest TAP parser, against output recorded from a real guest.

data/x86_64-7.3.4-selftests.tap: /selftests/iommufd then /selftests/iommufd_fail_nth
as the agent's run op returned them (QemuBackend.run_selftests) on the
vm_images x86_64 guest, Linux 7.3.4. data/x86_64-7.3.4-selftests-console.log:
the serial console of the same image booted with iommufd.mode=selftests, where
kernel messages cut into the test's lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import kselftest_tap as tap

DATA = Path(__file__).parent / "data"
TAP = (DATA / "x86_64-7.3.4-selftests.tap").read_text()
CONSOLE = (DATA / "x86_64-7.3.4-selftests-console.log").read_text()
DMABUF = [f"iommufd_ioas.{v}.{t}" for v in ("no_domain", "mock_domain", "two_mock_domain",
                                            "mock_domain_limit")
          for t in ("dmabuf_simple", "dmabuf_revoke")]


@pytest.fixture(scope="module")
def recorded():
    return tap.parse(TAP)


def test_recorded_run_matches_its_totals(recorded):
    assert recorded.plans == [246, 8]
    assert recorded.totals == [
        {"pass": 233, "fail": 8, "xfail": 0, "xpass": 0, "skip": 5, "error": 0},
        {"pass": 8, "fail": 0, "xfail": 0, "xpass": 0, "skip": 0, "error": 0}]
    assert len(recorded.cases) == 246 + 8
    assert recorded.counts() == {"pass": 233 + 8, "fail": 8, "skip": 5, "xfail": 0}


def test_recorded_failures_are_the_7_3_4_dmabuf_issue(recorded):
    failed = sorted(n for n, c in recorded.cases.items() if c.result == "fail")
    assert failed == sorted(DMABUF)
    reason = recorded.cases["iommufd_ioas.no_domain.dmabuf_simple"].reason
    assert reason.startswith("iommufd.c:1595:dmabuf_simple:Expected -1 (-1) ==")
    assert reason.endswith("dmabuf_simple: Test terminated by assertion")


def test_recorded_skips_carry_their_reason(recorded):
    case = recorded.cases["iommufd_viommu.no_viommu.hw_queue"]
    assert (case.result, case.reason) == ("skip", "Skipping test for variant no_viommu")
    assert recorded.results()["iommufd.simple_close"] == ("pass", "")
    assert recorded.cases["basic_fail_nth.map_domain"].result == "pass"


def test_console_with_printk_in_the_middle_of_lines_parses_the_same(recorded):
    console = tap.parse(CONSOLE)
    assert "iommufd_mock_do[" in CONSOLE  # the recording really has cut lines
    assert console.cases == recorded.cases
    assert console.totals == recorded.totals


def test_nested_under_the_kselftest_runner():
    nested = ["TAP version 13", "1..1", "# selftests: iommu: iommufd"]
    nested += ["# " + line for line in TAP.splitlines()[:130]]
    nested += ["not ok 1 selftests: iommu: iommufd # exit=1"]
    run = tap.parse("\n".join(nested))
    assert run.programs["selftests: iommu: iommufd"].result == "fail"
    assert run.cases["iommufd_ioas.no_domain.dmabuf_simple"].result == "fail"
    assert run.cases["iommufd.simple_close"].result == "pass"
    assert "selftests: iommu: iommufd" not in run.cases
    assert run.plans == [1, 246]


def test_ktap_indented_subtests_and_directives():
    text = """\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: iommufd_ioas
    1..5
    ok 1 iommufd_ioas.mock_domain.area
    not ok 2 iommufd_ioas.mock_domain.unmap
    ok 3 iommufd_ioas.mock_domain.x # XFAIL known issue
    not ok 4 iommufd_ioas.mock_domain.y # XPASS unexpectedly passed
    not ok 5 - iommufd_ioas.mock_domain.z # TODO not written
# ok 12 iommufd_ioas.mock_domain.nested_hash
# # not ok 13 deeper.case.name
not ok 1 iommufd_ioas
Bail out! guest died
"""
    run = tap.parse(text)
    assert run.results() == {
        "iommufd_ioas.mock_domain.area": ("pass", ""),
        "iommufd_ioas.mock_domain.unmap": ("fail", ""),
        "iommufd_ioas.mock_domain.x": ("xfail", "known issue"),
        "iommufd_ioas.mock_domain.y": ("fail", "XPASS unexpectedly passed"),
        "iommufd_ioas.mock_domain.z": ("xfail", "not written"),
        "iommufd_ioas.mock_domain.nested_hash": ("pass", ""),
        "deeper.case.name": ("fail", ""),
        "iommufd_ioas": ("fail", ""),
    }
    assert run.bailouts == ["guest died"]


def test_markers_are_not_results():
    run = tap.parse("#            OK  iommufd.simple_close\n#      SKIP      reason\n"
                    "#  RUN           iommufd.cmd_fail ...\n")
    assert run.cases == {}


def test_unsplice_printk():
    lines = ["#  RUN  iommufd_mock_do[    6.787452] iommufd_mock iommufd_mock2: Adding",
             "main.one_[    6.787801] iommufd_mock iommufd_mock2: Adding",
             "[    6.790000] a whole kernel line",
             "hugepage.basic ...", "ok 5 x"]
    assert tap.unsplice_printk(lines) == ["#  RUN  iommufd_mock_domain.one_hugepage.basic ...",
                                          "ok 5 x"]
