"""Interval sets against brute force: lookups, holes and first fit."""

from __future__ import annotations

import itertools
import random

from backends.mock import interval_tree as it
from backends.mock.interval_tree import U64_MAX, HoleTree, IntervalTree, Span


def test_interval_tree_matches_brute_force() -> None:
    rng = random.Random(1)
    tree: IntervalTree[Span] = IntervalTree()
    nodes: list[Span] = []
    for _ in range(3000):
        start = rng.randrange(0, 1 << 20) * 16
        node = Span(start, start + rng.randrange(1, 16) - 1)
        if any(n.start <= node.last and n.last >= node.start for n in nodes):
            continue
        tree.insert(node)
        nodes.append(node)
        if rng.random() < 0.3:
            victim = nodes.pop(rng.randrange(len(nodes)))
            tree.remove(victim)
    nodes.sort(key=lambda n: n.start)
    assert list(tree) == nodes
    for _ in range(500):
        s = rng.randrange(0, 1 << 24)
        last = s + rng.randrange(0, 1 << 12)
        expect = [n for n in nodes if n.start <= last and n.last >= s]
        assert tree.overlapping(s, last) == expect
        assert tree.first_overlap(s, last) is (expect[0] if expect else None)
        inside = [n for n in nodes if n.start <= s <= n.last]
        assert tree.find(s) is (inside[0] if inside else None)
    for a, b in itertools.pairwise(nodes):
        assert tree.next_node(a) is b


def test_holes_of_merges_touching_ranges() -> None:
    spans = [Span(10, 19), Span(20, 29), Span(25, 40), Span(100, 100)]
    assert it.merge_spans(spans) == [(10, 40), (100, 100)]
    assert it.holes_of(spans, 0, 200) == [(0, 9), (41, 99), (101, 200)]
    assert it.holes_of([], 5, 9) == [(5, 9)]
    assert it.holes_of([Span(0, U64_MAX)]) == []


def _brute_first_fit(used: list[tuple[int, int]], lo: int, hi: int, length: int,
                     align: int) -> int | None:
    start = lo
    for s, last in [*sorted(used), (hi + 1, hi + 1)]:
        end = min(s - 1, hi)
        cand = (start + align - 1) & ~(align - 1)
        if end >= cand and end - cand >= length - 1 and cand < end:
            return cand
        start = max(start, last + 1)
        if start > hi:
            return None
    return None


def test_hole_tree_first_fit_matches_brute_force() -> None:
    rng = random.Random(2)
    holes = HoleTree(0, (1 << 24) - 1)
    used: list[tuple[int, int]] = []
    for _ in range(2500):
        if used and rng.random() < 0.35:
            s, last = used.pop(rng.randrange(len(used)))
            holes.release(s, last)
            continue
        s = rng.randrange(0, (1 << 24) - 64)
        last = s + rng.randrange(0, 64)
        if any(a <= last and b >= s for a, b in used):
            continue
        holes.occupy(s, last)
        used.append((s, last))
    expect_holes = it.holes_of([Span(a, b) for a, b in used], 0, (1 << 24) - 1)
    assert list(holes) == expect_holes
    for _ in range(300):
        length = rng.choice([1, 7, 64, 200, 4096])
        align = 1 << rng.randrange(0, 8)
        lo = rng.randrange(0, 1 << 23)
        hi = (1 << 24) - 1

        def fits(start: int, last: int, length: int = length, align: int = align) -> int | None:
            cand = (start + align - 1) & ~(align - 1)
            if cand >= last or last - cand < length - 1:
                return None
            return cand

        assert holes.first_fit(lo, hi, length, fits) == _brute_first_fit(used, lo, hi,
                                                                          length, align)


def test_hole_tree_occupy_across_holes() -> None:
    holes = HoleTree(0, 999)
    holes.occupy(100, 199)
    holes.occupy(300, 399)
    holes.occupy(150, 350)  # a reserved range over used and free IOVA alike
    assert list(holes) == [(0, 99), (400, 999)]
    holes.release(100, 399)
    assert list(holes) == [(0, 999)]
