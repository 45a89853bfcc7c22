"""The pytest plugin, exercised through pytester as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

KSELFTEST_MODULE = """
import pytest
from harness import kselftest
from harness.marks import requires

pytestmark = kselftest.fixture("grp", {"first": 1, "second": 2})

def test_passes(variant):
    assert variant in (1, 2)

def test_fails_on_second(variant_name):
    assert variant_name == "first"

@requires("vfio_cdev", reason="needs a VFIO cdev")
def test_needs_fork(backend):
    pass

@pytest.mark.xfail(reason="expected")
def test_xfails(variant):
    assert False
"""


def test_unknown_backend_is_one_line_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--iommufd-backend", "bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown backend 'bogus': valid backends are mock,"
                                 " kernel, qemu:x86_64, qemu:aarch64"])


def test_bad_backend_env_is_a_usage_error_once_a_scenario_is_collected(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOMMUFD_BACKEND", "nonsense")
    pytester.makepyfile("def test_x(iommufd): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown backend 'nonsense': *"])
    result.stdout.no_fnmatch_line("*Traceback*")


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


def test_collect_only_and_verbose_show_kernel_names_and_k_takes_them(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_grp.py::test_passes[[]grp.first.passes[]]",
                                 "test_grp.py::test_passes[[]grp.second.passes[]]"])
    result = pytester.runpytest("-v", "-k", "grp.second.passes")
    result.assert_outcomes(passed=1, deselected=7)
    result.stdout.fnmatch_lines(["*::test_passes[[]grp.second.passes[]] PASSED*"])


def test_a_group_without_variants_is_named_fixture_dot_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="""
        from harness import kselftest
        pytestmark = kselftest.fixture("solo")

        def test_alone(iommufd):
            pass
    """)
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["*::test_alone[[]solo.alone[]] PASSED*"])


def test_requires_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    result = pytester.runpytest("-k", "needs_fork", "-rs")
    result.assert_outcomes(skipped=2, deselected=6)
    result.stdout.fnmatch_lines(["*backend mock lacks vfio_cdev: needs a VFIO cdev*"])


def test_requires_marker_skips_a_test_outside_any_kselftest_group(
        pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    iommufd_requires: registered by the project\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.iommufd_requires("vfio_cdev")
        def test_needs_a_vfio_device():
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*backend mock lacks vfio_cdev*"])


def parse_ktap(text: str) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Lines, ``{case name: ok / not ok / directive}`` and the totals of a KTAP report."""
    lines = text.splitlines()
    cases: dict[str, str] = {}
    for line in lines:
        match = re.match(r"(not ok|ok) \d+ (\S+)(?: # (\w+))?", line)
        if match:
            status, name, directive = match.groups()
            cases[name] = directive or status
    totals = {key: int(value) for key, value
              in re.findall(r"(\w+):(\d+)", lines[-1].removeprefix("# Totals: "))}
    return lines, cases, totals


def test_ktap_report_parses_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE)
    report = pytester.path / "out.ktap"
    result = pytester.runpytest("--iommufd-ktap", str(report))
    result.assert_outcomes(passed=3, failed=1, skipped=2, xfailed=2)
    lines, cases, totals = parse_ktap(report.read_text())
    assert lines[0] == "KTAP version 1"
    assert lines[1] == "1..8"
    assert lines[2].startswith("# backend mock: mock: in-Python iommufd model")
    assert cases == {
        "grp.first.passes": "ok", "grp.second.passes": "ok",
        "grp.first.fails_on_second": "ok", "grp.second.fails_on_second": "not ok",
        "grp.first.needs_fork": "SKIP", "grp.second.needs_fork": "SKIP",
        "grp.first.xfails": "XFAIL", "grp.second.xfails": "XFAIL",
    }
    assert lines[-1].startswith("# Totals: ")
    assert totals == {"pass": 3, "fail": 1, "xfail": 2, "xpass": 0, "skip": 2, "error": 0}


def test_ktap_env_fallback(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_scenario(iommufd): pass")
    report = pytester.path / "env.ktap"
    monkeypatch.setenv("IOMMUFD_KTAP", str(report))
    pytester.runpytest().assert_outcomes(passed=1)
    assert report.read_text().splitlines()[-1] == (
        "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0")


def test_iommufd_fixture_opens_and_checks_refs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_alloc(iommufd):
            assert iommufd.ioas_alloc() == 1
            assert iommufd.ioas_alloc() == 2
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_several_backends_parametrize_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_spec(backend_spec): pass")
    result = pytester.runpytest("--iommufd-backend", "mock,kernel", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_spec[[]mock[]]", "*test_spec[[]kernel[]]"])


def test_cli_run_help_lists_backends() -> None:
    # Through this interpreter, not PATH: a venv's python must work without activation.
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "mock (default), kernel, qemu:x86_64, qemu:aarch64" in result.stdout


def test_cli_translates_its_short_flags() -> None:
    from harness import cli

    args, extra = cli.build_parser().parse_known_args(
        ["run", "--backend", "kernel", "--ktap", "r.ktap", "--kcidb", "r.json", "-x"])
    argv = cli.pytest_argv(args, extra)
    assert argv[-7:] == ["--iommufd-backend", "kernel", "--iommufd-ktap", "r.ktap",
                         "--iommufd-kcidb", "r.json", "-x"]
    assert "--iommufd" in argv
    assert argv[0].endswith(str(Path("tests") / "iommufd"))


def test_cli_runs_the_files_given_instead_of_the_suite(tmp_path: Path) -> None:
    from harness import cli

    mine = tmp_path / "test_mine.py"
    mine.write_text("def test_x(iommufd): pass\n")
    args, extra = cli.build_parser().parse_known_args(["run", str(mine)])
    assert cli.pytest_argv(args, extra)[-1] == str(mine)
    assert not any(a.endswith("iommufd") and Path(a).is_dir()
                   for a in cli.pytest_argv(args, extra))


def test_suite_dir_exists() -> None:
    from harness import suite

    directory, installed = suite.location()
    assert (directory / "test_iommufd.py").is_file()
    assert not installed and directory.name == "iommufd"
