"""A WARN_ON the model hits fails the case that caused it, with its message."""

from __future__ import annotations

import pytest

from backends.mock import MockBackend

INJECTING_MODULE = """
from harness.helpers import Ioas

def test_warns(iommufd):
    Ioas.alloc(iommufd)
    iommufd.backend.kernel.warn_on(True, "injected: iopt_remove_access")

def test_clean_after_a_warning(iommufd):
    Ioas.alloc(iommufd)

def test_warns_in_teardown(iommufd):
    # Recorded only when the fixture closes the fd: the teardown is part of the case.
    kernel = iommufd.backend.kernel
    real = kernel.files.close
    def close(fd):
        kernel.files.close = real
        kernel.warn_on(True, "injected at close")
        real(fd)
    kernel.files.close = close
"""


def test_an_injected_warn_fails_the_case_with_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inject=INJECTING_MODULE)
    result = pytester.runpytest("--iommufd-backend", "mock", "-p", "no:randomly")
    # pytest counts a teardown failure as an error beside the passed call.
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_warns _*",
        "kernel splat during the case: WARNING: injected: iopt_remove_access",
        "*ERROR at teardown of test_warns_in_teardown _*",
        "kernel splat during the case: WARNING: injected at close",
    ])
    # The case after the WARN is not blamed for it.
    result.stdout.no_fnmatch_line("*ERROR*test_clean_after_a_warning*")


def test_take_splats_returns_each_warning_once() -> None:
    be = MockBackend()
    assert be.take_splats() == []
    be.kernel.warn_on(True, "one")
    be.kernel.warn_on(False, "not hit")
    assert be.take_splats() == ["WARNING: one"]
    assert be.take_splats() == []
    be.kernel.warn_on(True, "two")
    assert be.take_splats() == ["WARNING: two"]
    be.kernel.warnings.clear()
    be.shutdown()
