"""Installed, the plugin leaves every other pytest project alone (and imports cheaply)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Another project: its own --backend option, requires marker and backend fixture. Its
# conftest records, at the end of its run, what of iommufd-harness got loaded.
UNRELATED_CONFTEST = """
import json, sys
import pytest

def pytest_addoption(parser):
    parser.addoption("--backend", default="sqlite")

def pytest_configure(config):
    config.addinivalue_line("markers", "requires(what): a resource the test needs")

@pytest.fixture
def backend(request):
    return request.config.getoption("--backend")

def pytest_sessionfinish(session):
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("backends", "uapi_headers", "cffi")
                    or m in ("harness.session", "harness.fixtures"))
    with open("loaded.json", "w") as out:
        json.dump(loaded, out)
"""

UNRELATED_TESTS = """
import pytest

@pytest.mark.requires("network")
def test_requires_is_ours(backend):
    assert backend == "postgres"

def test_plain():
    pass
"""

HEAVY = ("backends", "uapi_headers", "cffi")


def mentions(result: pytest.RunResult, word: str) -> list[str]:
    """Output lines naming ``word``, but for pytest's own list of installed plugins."""
    return [line for line in result.outlines
            if word in line and not line.startswith("plugins:")]


@pytest.fixture
def unrelated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(UNRELATED_CONFTEST)
    pytester.makepyfile(test_unrelated=UNRELATED_TESTS)
    monkeypatch.setenv("IOMMUFD_BACKEND", "nonsense")
    monkeypatch.setenv("IOMMUFD_KTAP", str(pytester.path / "must-not-exist.ktap"))
    return pytester


def test_an_unrelated_project_passes_untouched(unrelated: pytest.Pytester) -> None:
    result = unrelated.runpytest_subprocess("--backend", "postgres", "-v", "--strict-markers")
    result.assert_outcomes(passed=2)
    assert mentions(result, "iommufd") == []
    assert not (unrelated.path / "must-not-exist.ktap").exists()
    # Nothing heavy was imported: no backend, no cffi, not the plugin proper.
    assert json.loads((unrelated.path / "loaded.json").read_text()) == []


def test_an_unrelated_project_sees_no_marker_or_fixture_of_the_plugin(
        unrelated: pytest.Pytester) -> None:
    markers = unrelated.runpytest_subprocess("--markers")
    assert markers.ret == 0
    markers.stdout.fnmatch_lines(["@pytest.mark.requires(what): a resource the test needs"])
    assert mentions(markers, "iommufd") == []
    fixtures = unrelated.runpytest_subprocess("--fixtures", "-v")
    assert fixtures.ret == 0
    assert mentions(fixtures, "harness") == []
    for name in ("kglobals", "variant_name", "iommufd ", "backend_spec"):
        fixtures.stdout.no_fnmatch_line(f"{name}*")
    fixtures.stdout.fnmatch_lines(["backend -- conftest.py:*"])


def test_importing_the_plugin_loads_nothing_heavy() -> None:
    code = ("import sys, time, pytest\n"
            "start = time.perf_counter()\n"
            "import harness.plugin\n"
            "elapsed = time.perf_counter() - start\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
            "print(heavy, elapsed)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out[0] == "[]", out
    # Measured: about 2 ms (it was 616 ms with the backends imported).
    assert float(out[1]) < 0.2, out


def test_the_gate_knows_every_public_fixture(pytester: pytest.Pytester) -> None:
    # A scenario that asks for any of them must wake the plugin up.
    from harness.plugin import PLUGIN_FIXTURES

    listing = pytester.runpytest("--iommufd", "--fixtures").outlines
    start = next(i for i, line in enumerate(listing) if "defined from harness.fixtures" in line)
    section = listing[start + 1:]
    end = next((i for i, line in enumerate(section) if line.startswith("---")), len(section))
    public = {line.split()[0] for line in section[:end] if " -- " in line}
    assert public == PLUGIN_FIXTURES


OWN_BACKEND_CONFTEST = """
import pytest
from backends.mock import MockBackend

class Own(MockBackend):
    pass

@pytest.fixture(scope="session")
def backend():
    return Own()
"""

OWN_BACKEND_SCENARIO = """
from harness import kselftest

pytestmark = kselftest.fixture("own")

def test_uses_the_projects_backend(backend, iommufd):
    assert type(backend).__name__ == "Own"
    assert iommufd.backend is backend
"""


@pytest.mark.parametrize("woken", ["while collecting", "by an option"])
def test_a_root_conftest_fixture_overrides_the_plugins(pytester: pytest.Pytester,
                                                       woken: str) -> None:
    # Since pytest 9.2 the fixture registered later at the same node wins, and the
    # plugin, woken mid-collection, registers after the root conftest: it must leave
    # the project's names alone (the plugin's other fixtures then use the project's).
    pytester.makeconftest(OWN_BACKEND_CONFTEST)
    pytester.makepyfile(test_own=OWN_BACKEND_SCENARIO)
    args = ["-p", "no:hypothesispytest"] + (["--iommufd"] if woken == "by an option" else [])
    pytester.runpytest(*args).assert_outcomes(passed=1)


def test_only_the_helpers_packages_asserts_are_rewritten() -> None:
    """pytest rewrites every package of a plugin's distribution; the plugin keeps the
    model, the backends, the headers and the image builder out of it (they hold no
    assertion helpers, and the rewriter cost each fresh run half a second)."""
    script = (
        "import sys, pytest\n"
        "from _pytest.assertion.rewrite import AssertionRewritingHook as Hook\n"
        "pytest.main(['tests/iommufd/test_iommufd_ioas.py', '--collect-only', '-q',\n"
        "             '-p', 'no:cacheprovider', '--iommufd-backend', 'mock'])\n"
        "rewritten = {n for n, m in list(sys.modules.items())\n"
        "             if isinstance(getattr(m, '__loader__', None), Hook)}\n"
        "print('REWRITTEN', ' '.join(sorted(rewritten)))\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("REWRITTEN"))
    rewritten = set(line.split()[1:])
    assert "harness.helpers.access" in rewritten
    assert "backends.mock.main" not in rewritten and "backends.calls" not in rewritten
