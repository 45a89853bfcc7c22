"""Differential exploration: random operation sequences on a lockstep pair, shrunk on failure.

A Hypothesis state machine draws operations from :mod:`harness.explore.ops` and runs them
on a :class:`~backends.compare.CompareBackend`, which compares every call. The first
divergence no known divergence explains fails the sequence; Hypothesis shrinks it to a
minimal one and replays that last, so the pair's call log then holds the shrunk calls,
from which the reproducers are written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from backends.compare import CompareBackend, Divergence
from harness.explore.ops import Op, World, available, open_world

# Typed in some hypothesis releases, untyped in others: one typed name serves both under mypy.
run_machine = cast("Callable[..., None]", run_state_machine_as_test)

STEPS = 40
"""Operations per sequence (Hypothesis' stateful_step_count)."""
BUFFER_PAGES = 16


@dataclass
class Exploration:
    """What an exploration did: operations run, divergences seen, the failing one."""

    pair: CompareBackend
    operations: int = 0
    sequences: int = 0
    failure: Divergence | None = None
    error: BaseException | None = None
    reproducers: list[Path] = field(default_factory=list)

    @property
    def divergences(self) -> int:
        """Distinct divergences seen (known ones included; a shrunk failure counts once)."""
        seen = {(r.call, r.what, r.reason is not None) for r in self.pair.reported}
        return len(seen)

    def summary(self) -> str:
        """``explore A vs B: N operations, D divergences``."""
        return (f"explore {self.pair.primary.spec} vs {self.pair.secondary.spec}: "
                f"{self.operations} operations, {self.divergences} divergences")


def machine(result: Exploration, ops: Sequence[Op], buffer: int, memfd: int,
            ) -> type[RuleBasedStateMachine]:
    """A state machine class over ``ops`` on ``result.pair``, counting into ``result``."""
    pair = result.pair

    class Explorer(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            pair.begin_case()
            result.sequences += 1
            self.world: World = open_world(pair, buffer, BUFFER_PAGES, memfd)

        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            ready = [o for o in ops if o.ready(self.world)]
            chosen = data.draw(st.sampled_from(ready), label="op")
            result.operations += 1
            chosen.run(self.world, data)

        def teardown(self) -> None:
            # After a divergence the two sides no longer agree on what is open:
            # tear down without comparing, so the first divergence stays the one shown.
            with pair.tolerant():
                try:
                    self.world.close()
                except OSError:
                    pass

    return Explorer


def explore(pair: CompareBackend, operations: int, seed: int = 0, *,
            steps: int = STEPS, repro_dir: Path | None = None,
            only: Collection[str] | None = None) -> Exploration:
    """Run about ``operations`` random operations on ``pair`` (stopping at the first
    unexplained divergence, shrunk); write its reproducers into ``repro_dir``.
    ``only`` limits the operations to those names."""
    result = Exploration(pair)
    ops = [o for o in available(pair) if only is None or o.name in only]
    if not ops:
        raise ValueError(f"no operation of {sorted(only or ())} is available on {pair.spec}")
    buffer = pair.alloc(BUFFER_PAGES * pair.page_size)
    pair.poke(buffer, bytes(range(256)) * (BUFFER_PAGES * pair.page_size // 256))
    memfd = pair.memfd(BUFFER_PAGES * pair.page_size)
    rounds = 0
    while result.operations < operations and result.failure is None:
        wanted = operations - result.operations
        config = settings(max_examples=max(1, math.ceil(wanted / steps)),
                          stateful_step_count=min(steps, wanted), deadline=None,
                          database=None, derandomize=False, print_blob=False,
                          suppress_health_check=list(HealthCheck),
                          phases=[Phase.generate, Phase.shrink])
        factory = with_seed(seed + rounds)(machine(result, ops, buffer, memfd))
        rounds += 1
        try:
            run_machine(factory, settings=config)
        except Divergence as divergence:
            result.failure = divergence
        except Flaky as flaky:
            result.error = flaky
            break
    if result.failure is not None and repro_dir is not None:
        from harness.reproducer import write_reproducers

        result.reproducers = write_reproducers(pair, repro_dir, "explore", result.failure)
    return result
