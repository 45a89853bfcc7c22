"""``--compare``: the suite's cases on two backends in lockstep, with the summary line."""

from __future__ import annotations

import pytest

CASES = """
import pytest
import uapi_headers as u
from harness.helpers.core import Iommufd

def test_alloc_and_destroy(backend):
    fd = Iommufd.open(backend)
    fd.destroy(fd.ioas_alloc())
    fd.close()

def test_fails_after_some_calls(backend):
    fd = Iommufd.open(backend)
    fd.ioas_alloc()
    assert False, "a case failing on its own"
"""


def test_compare_runs_cases_in_lockstep_and_prints_the_summary(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=CASES)
    repro = pytester.path / "repro"
    result = pytester.runpytest("-p", "no:hypothesispytest", "--iommufd-backend", "mock",
                                "--iommufd-compare", "mock", "--iommufd-repro-dir", str(repro))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "iommufd-harness backends: compare:mock+mock",
        "compare mock vs mock: 2 cases, * calls, 0 divergences (0 known)",
        "reproducer: *test_fails_after_some_calls.py",
        "reproducer: *test_fails_after_some_calls.c",
    ])
    script = (repro / "test_fails_after_some_calls.py").read_text()
    assert "u.IOMMU_IOAS_ALLOC" in script and "IOMMU_DESTROY" not in script


def test_compare_with_a_bad_spec_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(backend): pass")
    result = pytester.runpytest("-p", "no:hypothesispytest", "--iommufd-compare", "bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--iommufd-compare: unknown backend 'bogus'*"])
