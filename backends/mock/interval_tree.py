"""Interval sets with O(log n) lookup: the model's ``interval_tree`` and span iterators.

The kernel keeps areas, reserved and allowed ranges in augmented rb-trees
(``interval_tree_iter_first``) and walks holes with ``interval_tree_span_iter``. The
model keeps the same inclusive ``[start, last]`` intervals in *blocked sorted lists*
(short sorted lists of nodes plus a bisectable list of each block's first start), so
lookup, insert and remove cost O(log n) comparisons plus an O(block) list move, and
never scan every node:

- :class:`IntervalTree` holds disjoint nodes (areas, domain mappings).
- :class:`HoleTree` holds the free IOVA holes with each block's largest hole in a
  segment tree, so the auto-IOVA allocator finds the first hole that can fit a length
  without visiting the holes in between.
- :func:`merge_spans` / :func:`holes_of` are the span iterator over a few, possibly
  overlapping, intervals (reserved ranges).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from operator import sub
from typing import Generic, Protocol, TypeVar

U64_MAX = (1 << 64) - 1
"""ULONG_MAX on a 64-bit kernel."""

_LOAD = 128
"""Nodes per block before it is split in two."""


class Interval(Protocol):
    """Anything with an inclusive ``[start, last]`` range."""

    start: int
    last: int


N = TypeVar("N", bound=Interval)


class IntervalTree(Generic[N]):
    """Disjoint intervals sorted by start (the kernel's ``rb_root_cached`` of nodes)."""

    def __init__(self) -> None:
        self._keys: list[list[int]] = []
        self._nodes: list[list[N]] = []
        self._firsts: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len != 0

    def __iter__(self) -> Iterator[N]:
        for block in self._nodes:
            yield from block

    def snapshot(self) -> list[N]:
        """Every node in order, as a list that stays valid while the tree changes."""
        out: list[N] = []
        for block in self._nodes:
            out.extend(block)
        return out

    def _locate(self, key: int) -> tuple[int, int]:
        """Block and position of the last node whose start is <= key, or (-1, -1)."""
        b = bisect_right(self._firsts, key) - 1
        if b < 0:
            return -1, -1
        return b, bisect_right(self._keys[b], key) - 1

    def _at(self, b: int, p: int) -> N | None:
        """The node at (b, p), moving on to the next block when p runs off the end."""
        nodes = self._nodes
        while b < len(nodes):
            if p < len(nodes[b]):
                return nodes[b][p]
            b += 1
            p = 0
        return None

    def find(self, index: int) -> N | None:
        """The node containing ``index``."""
        b, p = self._locate(index)
        if b < 0:
            return None
        node = self._nodes[b][p]
        return node if node.last >= index else None

    def first_overlap(self, start: int, last: int) -> N | None:
        """The lowest node intersecting ``[start, last]`` (``interval_tree_iter_first``)."""
        b, p = self._locate(start)
        if b >= 0:
            node = self._nodes[b][p]
            if node.last >= start:
                return node
            nxt = self._at(b, p + 1)
        else:
            nxt = self._at(0, 0)
        if nxt is not None and nxt.start <= last:
            return nxt
        return None

    def next_node(self, node: N) -> N | None:
        """The node after ``node`` in address order."""
        b, p = self._locate(node.start)
        return self._at(b, p + 1)

    def overlapping(self, start: int, last: int) -> list[N]:
        """Every node intersecting ``[start, last]``, in order."""
        out: list[N] = []
        node = self.first_overlap(start, last)
        if node is None:
            return out
        b, p = self._locate(node.start)
        nodes = self._nodes
        while b < len(nodes):
            block = nodes[b]
            while p < len(block):
                node = block[p]
                if node.start > last:
                    return out
                out.append(node)
                p += 1
            b += 1
            p = 0
        return out

    def insert(self, node: N) -> None:
        """Add ``node``; the caller guarantees it does not overlap another node."""
        key = node.start
        if not self._nodes:
            self._keys.append([key])
            self._nodes.append([node])
            self._firsts.append(key)
            self._len = 1
            return
        b = max(bisect_right(self._firsts, key) - 1, 0)
        keys = self._keys[b]
        p = bisect_right(keys, key)
        keys.insert(p, key)
        self._nodes[b].insert(p, node)
        self._firsts[b] = keys[0]
        self._len += 1
        if len(keys) > 2 * _LOAD:
            self._split(b)

    def _split(self, b: int) -> None:
        keys = self._keys[b]
        nodes = self._nodes[b]
        self._keys[b:b + 1] = [keys[:_LOAD], keys[_LOAD:]]
        self._nodes[b:b + 1] = [nodes[:_LOAD], nodes[_LOAD:]]
        self._firsts[b:b + 1] = [keys[0], keys[_LOAD]]

    def remove(self, node: N) -> None:
        """Remove ``node`` (it must be in the tree)."""
        b, p = self._locate(node.start)
        if b < 0 or self._nodes[b][p] is not node:
            raise KeyError(f"interval [{node.start:#x}, {node.last:#x}] is not in the tree")
        del self._keys[b][p]
        del self._nodes[b][p]
        self._len -= 1
        if self._keys[b]:
            self._firsts[b] = self._keys[b][0]
        else:
            del self._keys[b]
            del self._nodes[b]
            del self._firsts[b]


class Span:
    """A plain ``[start, last]`` interval."""

    __slots__ = ("last", "start")

    def __init__(self, start: int, last: int) -> None:
        self.start = start
        self.last = last

    def __repr__(self) -> str:
        return f"Span({self.start:#x}, {self.last:#x})"


def merge_spans(intervals: Iterable[Interval]) -> list[tuple[int, int]]:
    """The used spans of possibly overlapping intervals: touching ones merge, as the
    kernel's span iterator reports no hole between them."""
    spans: list[tuple[int, int]] = []
    for start, last in sorted((i.start, i.last) for i in intervals):
        if spans and start <= spans[-1][1] + 1:
            if last > spans[-1][1]:
                spans[-1] = (spans[-1][0], last)
        else:
            spans.append((start, last))
    return spans


def holes_of(intervals: Iterable[Interval], first: int = 0,
             last: int = U64_MAX) -> list[tuple[int, int]]:
    """The holes of ``intervals`` within ``[first, last]`` (``is_hole`` spans)."""
    holes: list[tuple[int, int]] = []
    cur = first
    for start, end in merge_spans(intervals):
        if end < cur:
            continue
        if start > last:
            break
        if start > cur:
            holes.append((cur, start - 1))
        cur = end + 1
        if cur > last:
            return holes
    if cur <= last:
        holes.append((cur, last))
    return holes


class HoleTree:
    """The free IOVA: disjoint holes, looked up by address and by size.

    Each block keeps parallel ``starts``/``lasts`` lists and an upper bound of its
    largest hole; a segment tree over those bounds lets :meth:`first_fit` skip every
    block that cannot hold a length. Shrinking a hole only marks its block for a
    recount, done lazily when a search lands there, so fixed-IOVA maps never pay for it.
    """

    def __init__(self, start: int = 0, last: int = U64_MAX) -> None:
        self._starts: list[list[int]] = [[start]]
        self._lasts: list[list[int]] = [[last]]
        self._firsts: list[int] = [start]
        self._bmax: list[int] = [last - start + 1]
        self._dirty: list[bool] = [False]
        self._size = 1
        self._tree: list[int] = []
        self._rebuild()

    # -- the segment tree of block maxima --------------------------------
    def _block_max(self, b: int) -> int:
        starts = self._starts[b]
        if not starts:
            return -1
        return int(max(map(sub, self._lasts[b], starts))) + 1

    def _rebuild(self) -> None:
        n = len(self._starts)
        size = 1
        while size < n:
            size *= 2
        self._size = size
        tree = [-1] * (2 * size)
        tree[size:size + n] = self._bmax
        for i in range(size - 1, 0, -1):
            left = tree[2 * i]
            right = tree[2 * i + 1]
            tree[i] = left if left > right else right
        self._tree = tree

    def _set_leaf(self, b: int, value: int) -> None:
        """Store block ``b``'s bound and fix the maxima above it."""
        self._bmax[b] = value
        tree = self._tree
        i = self._size + b
        if tree[i] == value:
            return
        tree[i] = value
        i >>= 1
        while i:
            left = tree[2 * i]
            right = tree[2 * i + 1]
            top = left if left > right else right
            if tree[i] == top:
                return
            tree[i] = top
            i >>= 1

    def _first_block(self, b0: int, length: int) -> int:
        """The first block >= b0 whose bound admits ``length`` (exact, after a lazy
        recount of the blocks the search lands on), or -1."""
        while True:
            b = self._first_bound(b0, length)
            if b < 0 or b >= len(self._starts) or not self._dirty[b]:
                return b
            self._dirty[b] = False
            self._set_leaf(b, self._block_max(b))
            if self._bmax[b] >= length:
                return b
            b0 = b + 1

    def _first_bound(self, b0: int, length: int) -> int:
        size = self._size
        tree = self._tree
        if b0 >= size:
            return -1
        i = size + b0
        if tree[i] >= length:
            return b0
        while i > 1:
            if not i & 1 and tree[i + 1] >= length:
                i += 1
                while i < size:
                    i *= 2
                    if tree[i] < length:
                        i += 1
                return i - size
            i >>= 1
        return -1

    # -- lookup -----------------------------------------------------------
    def _locate(self, key: int) -> tuple[int, int]:
        b = bisect_right(self._firsts, key) - 1
        if b < 0:
            return -1, -1
        return b, bisect_right(self._starts[b], key) - 1

    def hole_at(self, index: int) -> tuple[int, int] | None:
        """The hole containing ``index``."""
        b, p = self._locate(index)
        if b < 0 or p < 0 or self._lasts[b][p] < index:
            return None
        return self._starts[b][p], self._lasts[b][p]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for starts, lasts in zip(self._starts, self._lasts, strict=True):
            yield from zip(starts, lasts, strict=True)

    def __len__(self) -> int:
        return sum(len(s) for s in self._starts)

    # -- updates ----------------------------------------------------------
    def _delete(self, b: int, p: int) -> None:
        del self._starts[b][p]
        del self._lasts[b][p]
        if self._starts[b]:
            self._firsts[b] = self._starts[b][0]
            self._dirty[b] = True
        elif len(self._starts) > 1:
            for lst in (self._starts, self._lasts, self._firsts, self._bmax, self._dirty):
                del lst[b]
            self._rebuild()
        else:
            self._dirty[b] = False
            self._set_leaf(b, -1)

    def _add(self, start: int, last: int) -> None:
        length = last - start + 1
        if len(self._starts) == 1 and not self._starts[0]:
            self._starts[0].append(start)
            self._lasts[0].append(last)
            self._firsts[0] = start
            self._set_leaf(0, length)
            return
        b = max(bisect_right(self._firsts, start) - 1, 0)
        starts = self._starts[b]
        p = bisect_left(starts, start)
        starts.insert(p, start)
        self._lasts[b].insert(p, last)
        self._firsts[b] = starts[0]
        if len(starts) > 2 * _LOAD:
            lasts = self._lasts[b]
            self._starts[b:b + 1] = [starts[:_LOAD], starts[_LOAD:]]
            self._lasts[b:b + 1] = [lasts[:_LOAD], lasts[_LOAD:]]
            self._firsts[b:b + 1] = [starts[0], starts[_LOAD]]
            self._dirty[b:b + 1] = [False, False]
            self._bmax[b:b + 1] = [0, 0]
            self._bmax[b] = self._block_max(b)
            self._bmax[b + 1] = self._block_max(b + 1)
            self._rebuild()
        elif length > self._bmax[b]:
            self._set_leaf(b, length)

    def occupy(self, start: int, last: int) -> None:
        """Mark ``[start, last]`` used: every hole is trimmed or split around it."""
        while True:
            b, p = self._locate(last)
            if b < 0 or p < 0:
                return
            hs = self._starts[b][p]
            hl = self._lasts[b][p]
            if hl < start:
                return
            self._delete(b, p)
            if hl > last:
                self._add(last + 1, hl)
            if hs < start:
                self._add(hs, start - 1)
                return

    def release(self, start: int, last: int) -> None:
        """Mark ``[start, last]`` free, merging with the holes it touches."""
        if start > 0:
            before = self.hole_at(start - 1)
            if before is not None:
                b, p = self._locate(before[0])
                self._delete(b, p)
                start = before[0]
        if last < U64_MAX:
            after = self.hole_at(last + 1)
            if after is not None:
                b, p = self._locate(after[0])
                self._delete(b, p)
                last = after[1]
        self._add(start, last)

    # -- allocation -------------------------------------------------------
    def first_fit(self, lo: int, hi: int, length: int,
                  fits: Callable[[int, int], int | None]) -> int | None:
        """Walk the holes meeting ``[lo, hi]`` in address order, clipped to it, and return
        the first ``fits(start, last)`` that is not None. Holes shorter than ``length``
        (before clipping) are never offered, and blocks without one are skipped whole."""
        b, p = self._locate(lo)
        if b < 0:
            b, p = 0, 0
        elif p < 0 or self._lasts[b][p] < lo:
            p += 1
        nblocks = len(self._starts)
        while b < nblocks:
            if p == 0:
                nb = self._first_block(b, length)
                if nb < 0 or nb >= nblocks:
                    return None
                b = nb
            starts = self._starts[b]
            lasts = self._lasts[b]
            while p < len(starts):
                hs = starts[p]
                if hs > hi:
                    return None
                hl = lasts[p]
                if hl - hs + 1 >= length:
                    found = fits(max(hs, lo), min(hl, hi))
                    if found is not None:
                        return found
                p += 1
            b += 1
            p = 0
        return None
