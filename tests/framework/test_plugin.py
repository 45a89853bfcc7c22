"""The pytest plugin, exercised through pytester as a user would run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

KSELFTEST_MODULE = """
import pytest
from harness import kselftest

pytestmark = kselftest.fixture("grp", {"first": 1, "second": 2})

def test_passes(variant):
    assert variant in (1, 2)

def test_fails_on_second(variant_name):
    assert variant_name == "first"

@pytest.mark.requires("vfio_cdev", reason="needs a VFIO cdev")
def test_needs_fork(backend):
    pass

@pytest.mark.xfail(reason="expected")
def test_xfails(variant):
    assert False
"""


def test_unknown_backend_is_one_line_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--backend", "bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown backend 'bogus': valid backends are mock, kernel,"
                                 " qemu:x86_64, qemu:aarch64"])


def test_backend_env_fallback(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_spec(backend_spec): assert backend_spec == 'kernel'")
    monkeypatch.setenv("IOMMUFD_BACKEND", "kernel")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["iommufd-harness backends: kernel"])
    result.assert_outcomes(passed=1)


def test_default_backend_is_mock(pytester: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOMMUFD_BACKEND", raising=False)
    pytester.makepyfile("def test_spec(backend): assert backend.spec == 'mock'")
    pytester.runpytest().assert_outcomes(passed=1)


def test_variants_get_kselftest_ids_and_k_selects_kernel_names(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_passes[[]first[]]", "*test_passes[[]second[]]"])
    result = pytester.runpytest("-k", "grp.second.passes", "-q")
    result.assert_outcomes(passed=1, deselected=7)


def test_requires_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    result = pytester.runpytest("-k", "needs_fork", "-rs")
    result.assert_outcomes(skipped=2, deselected=6)
    result.stdout.fnmatch_lines(["*backend mock lacks vfio_cdev: needs a VFIO cdev*"])


def _parse_ktap(text: str) -> tuple[list[str], dict[str, str], dict[str, int]]:
    lines = text.splitlines()
    cases: dict[str, str] = {}
    for line in lines:
        match = re.match(r"(not ok|ok) \d+ (\S+)(?: # (\w+))?", line)
        if match:
            status, name, directive = match.groups()
            cases[name] = directive or status
    totals = dict(
        (key, int(value))
        for key, value in re.findall(r"(\w+):(\d+)", lines[-1].removeprefix("# Totals: ")))
    return lines, cases, totals


def test_ktap_report_parses_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    report = pytester.path / "out.ktap"
    result = pytester.runpytest("--ktap", str(report))
    result.assert_outcomes(passed=3, failed=1, skipped=2, xfailed=2)
    lines, cases, totals = _parse_ktap(report.read_text())
    assert lines[0] == "KTAP version 1"
    assert lines[1] == "1..8"
    assert cases == {
        "grp.first.passes": "ok", "grp.second.passes": "ok",
        "grp.first.fails_on_second": "ok", "grp.second.fails_on_second": "not ok",
        "grp.first.needs_fork": "SKIP", "grp.second.needs_fork": "SKIP",
        "grp.first.xfails": "XFAIL", "grp.second.xfails": "XFAIL",
    }
    assert lines[-1].startswith("# Totals: ")
    assert totals == {"pass": 3, "fail": 1, "xfail": 2, "xpass": 0, "skip": 2, "error": 0}


def test_ktap_env_fallback(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_plain(): pass")
    report = pytester.path / "env.ktap"
    monkeypatch.setenv("IOMMUFD_KTAP", str(report))
    pytester.runpytest().assert_outcomes(passed=1)
    assert report.read_text().splitlines()[-1] == (
        "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0")


def test_junit_carries_kselftest_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    junit = pytester.path / "junit.xml"
    pytester.runpytest(f"--junitxml={junit}")
    assert 'name="kselftest_name" value="grp.second.fails_on_second"' in junit.read_text()


def test_iommufd_fixture_opens_and_checks_refs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import uapi_headers as u
        from harness.helpers import new_cmd

        def test_alloc(iommufd):
            assert iommufd.ioas_alloc() == 1
            assert iommufd.ioas_alloc() == 2
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_several_backends_parametrize_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_spec(backend_spec): pass")
    result = pytester.runpytest("--backend", "mock,kernel", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_spec[[]mock[]]", "*test_spec[[]kernel[]]"])


def test_cli_run_help_lists_backends(pytester: pytest.Pytester) -> None:
    result = pytester.run("iommufd-harness", "run", "--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*mock (default), kernel, qemu:x86_64, qemu:aarch64*"])


def test_suite_dir_exists() -> None:
    from harness.cli import SUITE_DIR

    assert (SUITE_DIR / "test_iommufd.py").is_file()
    assert Path(SUITE_DIR).name == "iommufd"
