"""The plugin's reports as their consumers read them: KTAP through the kernel's own
parser, JUnit against the schema, KCIDB through kcidb-io; xdist; bad report paths."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import kcidb_io
import pytest
import xmlschema

from tests.framework.test_plugin import KSELFTEST_MODULE, parse_ktap
from vm_images.cache import cache_root

DATA = Path(__file__).with_name("data")
ROOT = Path(__file__).resolve().parents[2]
# Read before pytester points HOME at a temporary directory.
KUNIT_PY = sorted(cache_root().glob(
    "debs/*/root/usr/src/tree/linux-source-7.3*/tools/testing/kunit/kunit.py"))

# A setup error, a teardown failure and a plain test beside the kselftest group.
MORE_OUTCOMES = """
import pytest
from harness import kselftest

pytestmark = kselftest.fixture("more")

@pytest.fixture
def broken():
    raise RuntimeError("no such device")

@pytest.fixture
def leaky():
    yield
    raise AssertionError("pages still pinned")

def test_setup_errors(broken):
    pass

def test_teardown_fails(leaky):
    pass
"""


# The diagnostics of grp.second.fails_on_second, as written and as kunit.py shows them.
WHY_IT_FAILED = ["# test_grp.py:11: AssertionError: assert 'second' == 'first'", "#",
                 "#   - first", "#   + second", "# grp.second.fails_on_second: test failed"]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_grp=KSELFTEST_MODULE, test_more=MORE_OUTCOMES)
    return pytester


def test_ktap_writes_the_reason_before_not_ok(suite: pytest.Pytester) -> None:
    report = suite.path / "r.ktap"
    suite.runpytest("--iommufd-ktap", str(report)).assert_outcomes(
        passed=4, failed=1, skipped=2, xfailed=2, errors=2)
    lines = report.read_text().splitlines()
    failed = lines.index("not ok 4 grp.second.fails_on_second")
    assert lines[failed - 5:failed] == WHY_IT_FAILED
    assert "not ok 9 more.setup_errors # ERROR RuntimeError: no such device" in lines
    assert "# more.setup_errors: setup failed" in lines
    teardown = lines.index("not ok 10 more.teardown_fails")
    assert lines[teardown - 1] == "# more.teardown_fails: teardown failed"
    assert lines[teardown - 2].endswith("AssertionError: pages still pinned")


@pytest.mark.skipif(not KUNIT_PY, reason="no Linux 7.3 tree in the cache "
                                         "(iommufd-harness vm build unpacks one)")
def test_kunit_parse_shows_why_a_case_failed(suite: pytest.Pytester) -> None:
    report = suite.path / "r.ktap"
    suite.runpytest("--iommufd-ktap", str(report))
    kunit = KUNIT_PY[-1]
    # The kernel's own KTAP parser, run from its tree.
    parsed = subprocess.run([sys.executable, "kunit.py", "parse", str(report)],
                            cwd=kunit.parent, capture_output=True, text=True, check=False)
    out = [line.split("] ", 1)[-1] for line in parsed.stdout.splitlines()]
    assert parsed.returncode == 1, parsed.stdout + parsed.stderr  # failures parsed
    failed = out.index("[FAILED] grp.second.fails_on_second")
    assert out[failed - 5:failed] == WHY_IT_FAILED
    errored = out.index("[FAILED] more.setup_errors")
    assert out[errored - 2:errored] == ["# test_more.py:8: RuntimeError: no such device",
                                        "# more.setup_errors: setup failed"]
    assert out[-1] == "Testing complete. Ran 10 tests: passed: 5, failed: 3, skipped: 2"


def test_junit_names_cases_by_kernel_name_and_validates(suite: pytest.Pytester) -> None:
    junit = suite.path / "junit.xml"
    suite.runpytest(f"--junitxml={junit}")
    schema = xmlschema.XMLSchema(DATA / "junit.xsd")
    schema.validate(junit)
    cases = {(c.get("classname"), c.get("name"))
             for c in ET.parse(junit).getroot().iter("testcase")}
    assert ("iommufd.grp", "grp.second.fails_on_second") in cases
    assert ("iommufd.more", "more.setup_errors") in cases
    assert len(cases) == 10


def test_the_ported_suite_validates_as_junit(pytester: pytest.Pytester) -> None:
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(str(ROOT / "tests" / "iommufd" / "test_iommufd.py"),
                                f"--junitxml={junit}", "-p", "no:cacheprovider")
    assert result.ret == 0
    xmlschema.XMLSchema(DATA / "junit.xsd").validate(junit)
    names = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert "iommufd.simple_close" in names and all(n.startswith("iommufd.") for n in names)


def test_kcidb_output_validates_with_kcidb_io(suite: pytest.Pytester) -> None:
    out = suite.path / "kcidb.json"
    suite.runpytest("--iommufd-kcidb", str(out))
    data = json.loads(out.read_text())
    kcidb_io.schema.V5_3.validate(data)
    assert kcidb_io.schema.LATEST.is_compatible(data)
    (checkout,) = data["checkouts"]
    (build,) = data["builds"]
    assert checkout["misc"]["kernel_release"] == "mock"
    assert build["checkout_id"] == checkout["id"] and build["misc"]["backend"] == "mock"
    tests = {t["path"]: t for t in data["tests"]}
    assert len(tests) == 10
    failed = tests["iommufd.grp.second.fails_on_second"]
    assert failed["status"] == "FAIL" and failed["build_id"] == build["id"]
    assert "AssertionError" in failed["log_excerpt"]
    assert failed["environment"]["misc"] == {"backend": "mock"}
    assert failed["duration"] >= 0
    assert tests["iommufd.grp.first.passes"]["status"] == "PASS"
    assert tests["iommufd.grp.first.needs_fork"]["status"] == "SKIP"
    assert tests["iommufd.more.setup_errors"]["status"] == "ERROR"


@pytest.mark.parametrize("given_by", ["option", "env"])
def test_xdist_writes_the_same_ktap_as_a_serial_run(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, given_by: str) -> None:
    # By the environment alone, the controller only learns from the workers' reports
    # that the session runs iommufd scenarios.
    serial, parallel = suite.path / "serial.ktap", suite.path / "parallel.ktap"
    suite.runpytest_subprocess("--iommufd-ktap", str(serial), "-p", "no:xdist")
    if given_by == "option":
        result = suite.runpytest_subprocess("--iommufd-ktap", str(parallel), "-n", "2")
    else:
        monkeypatch.setenv("IOMMUFD_KTAP", str(parallel))
        result = suite.runpytest_subprocess("-n", "2")
    result.stdout.fnmatch_lines(["*2 workers*"])
    assert serial.read_text().splitlines()[3:] == parallel.read_text().splitlines()[3:]
    assert parallel.read_text() == serial.read_text()
    _, cases, totals = parse_ktap(parallel.read_text())
    assert "grp.second.fails_on_second" in cases and totals["fail"] == 2


def test_xdist_controller_alone_writes_the_report(suite: pytest.Pytester) -> None:
    # Workers run with the same options; had they written the file too, a worker's
    # partial report (about half the cases) would be what is left.
    report = suite.path / "r.ktap"
    suite.runpytest_subprocess("--iommufd-ktap", str(report), "-n", "2")
    lines, cases, _ = parse_ktap(report.read_text())
    assert lines[1] == "1..10" and len(cases) == 10


@pytest.mark.parametrize("option", ["--iommufd-ktap", "--iommufd-kcidb"])
def test_a_report_path_that_cannot_be_written_stops_before_the_run(
        suite: pytest.Pytester, option: str) -> None:
    result = suite.runpytest(option, "/nonexistent/dir/x.out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: {option} /nonexistent/dir/x.out: cannot write the report: "
        "its directory /nonexistent/dir does not exist")
    result.stdout.no_fnmatch_line("*passed*")


def test_the_cli_reports_a_bad_ktap_path_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--ktap",
                           "/nonexistent/dir/x.ktap"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert done.stderr.strip().splitlines()[0].startswith(
        "ERROR: --iommufd-ktap /nonexistent/dir/x.ktap: cannot write the report")
    assert "Traceback" not in done.stderr + done.stdout


def test_last_failed_reruns_only_the_failures_with_the_projects_config(
        suite: pytest.Pytester) -> None:
    # The repository's own pytest configuration, so its addopts cannot disable the cache.
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    options = {k: v for k, v in ini["ini_options"].items() if k != "testpaths"}
    suite.makepyprojecttoml("[tool.pytest.ini_options]\n" + "\n".join(
        f"{key} = {json.dumps(value)}" for key, value in options.items()))
    suite.runpytest().assert_outcomes(passed=4, failed=1, skipped=2, xfailed=2, errors=2)
    again = suite.runpytest("--lf", "-v")
    # The three that did not pass: a failure, a setup error, a teardown error (whose
    # call passes again); none of the seven others.
    again.assert_outcomes(passed=1, failed=1, errors=2)
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 3 failures*",
                                "*test_fails_on_second[[]grp.second.fails_on_second[]] FAILED*"])
    ran = [line.split()[0] for line in again.outlines if "::test_" in line and "%]" in line]
    assert list(dict.fromkeys(ran)) == [
        "test_grp.py::test_fails_on_second[grp.second.fails_on_second]",
        "test_more.py::test_setup_errors[more.setup_errors]",
        "test_more.py::test_teardown_fails[more.teardown_fails]"]
    first = suite.runpytest("--ff", "-q", "-x")
    first.assert_outcomes(failed=1)


def test_the_ported_suite_under_xdist_writes_the_serial_ktap(pytester: pytest.Pytester) -> None:
    group = str(ROOT / "tests" / "iommufd" / "test_iommufd.py")
    serial, parallel = pytester.path / "serial.ktap", pytester.path / "parallel.ktap"
    pytester.runpytest_subprocess(group, "--iommufd-ktap", str(serial), "-p", "no:xdist")
    pytester.runpytest_subprocess(group, "--iommufd-ktap", str(parallel), "-n", "2")
    assert parallel.read_text() == serial.read_text()
    _, cases, totals = parse_ktap(serial.read_text())
    assert "iommufd.simple_close" in cases and totals["fail"] == 0
