"""Differential exploration: random operations on a pair, a wrong rule found and shrunk,
and its reproducers written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import Backend, open_backend
from backends.compare import CompareBackend
from backends.mock import MockBackend
from harness import cli
from harness.explore import explore
from harness.explore.ops import OPS, available
from harness.reproducer import program_of
from tests.framework.wrong_mock import WrongRuleMock

ROOT = Path(__file__).resolve().parents[2]


def test_exploration_budget(request: pytest.FixtureRequest, backend: Backend) -> None:
    """``--iommufd-explore-ops N``: N random operations on the session's pair (``--backend A
    --compare B``), or on mock against mock; no divergence may be left unexplained."""
    from harness import options

    budget: int = options.value(request.config, options.EXPLORE_OPS) or 200
    pair = backend if isinstance(backend, CompareBackend) else open_backend(
        "compare:mock+mock")
    assert isinstance(pair, CompareBackend)
    result = explore(pair, budget, seed=int(os.environ.get("IOMMUFD_EXPLORE_SEED", "0")))
    print(result.summary())
    assert result.failure is None, str(result.failure)
    assert result.operations >= budget


def test_every_area_of_the_table_runs_on_the_mock():
    names = {op.name for op in available(MockBackend())}
    assert names == {op.name for op in OPS}
    assert {"ioas_map", "ioas_copy", "mock_domain", "access_rw", "hwpt_alloc",
            "mock_domain_replace", "fail_nth", "destroy"} <= names


def test_wrong_rule_is_found_shrunk_and_reproduced(tmp_path: Path):
    pair = CompareBackend(MockBackend(), WrongRuleMock())
    pair.secondary.spec = "mock-wrong"
    result = explore(pair, 4000, seed=3, repro_dir=tmp_path)
    assert result.failure is not None, result.summary()
    assert result.failure.call in ("IOMMU_IOAS_MAP", "IOMMU_IOAS_MAP_FILE")
    assert "the injected wrong rule" in str(result.failure)
    program = program_of(pair, result.failure)
    assert len(program.steps) <= 5, [s.record.call for s in program.steps]
    assert result.summary().startswith("explore mock vs mock-wrong: ")
    script, source = result.reproducers
    assert "ioctl(fd" in source.read_text() and "#include <linux/iommufd.h>" in (
        source.read_text())
    # Replayed on the (right) mock, the divergent call gives the mock's errno, not the
    # wrong copy's: the script says so and exits 1.
    done = subprocess.run([sys.executable, str(script), "mock"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not ok" in done.stdout and "expected errno 22 EINVAL" in done.stdout


def test_cli_prints_the_summary_line(capsys: pytest.CaptureFixture[str]):
    status = cli.main(["explore", "--backend", "mock", "--compare", "mock", "--ops", "30",
                       "--seed", "7"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.strip().splitlines()[-1].startswith("explore mock vs mock: ")
    assert out.strip().endswith(", 0 divergences")


def test_cli_bad_backend_is_one_line(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["explore", "--compare", "nope", "--ops", "5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_only_limits_the_operations():
    pair = CompareBackend(MockBackend(), MockBackend())
    result = explore(pair, 40, seed=1, only={"ioas_alloc"})
    assert result.failure is None and result.operations >= 40
    ioctls = {r.call for r in pair.log.records if r.op == "ioctl"}
    assert ioctls == {"IOMMU_IOAS_ALLOC"}
    with pytest.raises(ValueError, match="no operation"):
        explore(pair, 5, only={"nope"})


class _Draws:
    """Stands in for hypothesis' data object: hands out the given values in order."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: object, label: str | None = None) -> object:
        return self.values.pop(0)


def test_fail_nth_op_runs_while_the_world_pins_the_page():
    # MD_CHECK_REFS after the injected run is EIO on both sides when the world's own
    # domain maps the buffer's first page: an outcome to compare, not an abort.
    import uapi_headers as u
    from harness.explore.ops import new_cmd, open_world
    from harness.helpers.selftest import run_test_cmd

    pair = CompareBackend(MockBackend(), MockBackend())
    buffer = pair.alloc(4 * pair.page_size)
    world = open_world(pair, buffer, 4, pair.memfd(4 * pair.page_size))
    ioas = world.fd.ioas_alloc()
    run_test_cmd(world.fd, u.IOMMU_TEST_OP_MOCK_DOMAIN, ioas)
    world.fd.ioctl(u.IOMMU_IOAS_MAP, new_cmd("iommu_ioas_map", {
        "ioas_id": ioas, "user_va": buffer, "length": pair.page_size,
        "flags": u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE}))
    fail_nth = next(o for o in available(pair) if o.name == "fail_nth")
    fail_nth.run(world, _Draws(1))
    assert pair.reported == []
    world.close()
