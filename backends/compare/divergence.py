"""What a divergence says: the call, both results, and the rule an in-Python side applied."""

from __future__ import annotations

import errno as _errno
import linecache
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent
_BACKENDS = _PACKAGE.parent
# An errno raised in these came from a real kernel (a syscall or an agent's reply):
# there is no Python rule behind it to name.
_TRANSPORTS = (_BACKENDS / "kernel", _BACKENDS / "qemu")


@dataclass
class Attempt:
    """One side's result of one call: a value or an OSError."""

    value: Any = None
    error: OSError | None = None

    @property
    def errno(self) -> int:
        """0 on success."""
        return 0 if self.error is None else (self.error.errno or -1)

    def describe(self) -> str:
        """``ok, returned 0`` / ``errno 22 EINVAL``."""
        if self.error is not None:
            name = _errno.errorcode.get(self.errno, "?")
            return f"errno {self.errno} {name}"
        if isinstance(self.value, bytes):
            return f"ok, {len(self.value)} bytes"
        return f"ok, returned {self.value!r}"


def rule_of(error: BaseException | None) -> str | None:
    """Where an in-Python backend decided on ``error``: the raising line (with the
    condition above it) and the call path through the model; None for an errno that a
    real kernel returned or for a success."""
    if error is None or error.__traceback__ is None:
        return None
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not Path(f.filename).resolve().is_relative_to(_PACKAGE)]
    if not frames:
        return None
    last = frames[-1]
    if any(Path(last.filename).resolve().is_relative_to(t) for t in _TRANSPORTS):
        return None
    line = (last.line or "").strip()
    lineno = last.lineno or 0
    above = linecache.getline(last.filename, lineno - 1).strip()
    if above.startswith(("if ", "elif ")) and line.startswith("raise"):
        line = f"{above} {line}"
    where = _short(last.filename)
    path = " > ".join(f.name for f in frames[1:])
    return f"{where}:{lineno} in {last.name}: `{line}` (path: {path})"


def _short(filename: str) -> str:
    path = Path(filename).resolve()
    root = _BACKENDS.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else filename


class Divergence(AssertionError):
    """The two backends answered one call differently (and it is not a known difference).

    Not an OSError, so no scenario's ``expect_errno`` can swallow it.
    """

    def __init__(self, index: int, call: str, what: str, detail: str,
                 sides: tuple[str, str], attempts: tuple[Attempt, Attempt]) -> None:
        self.index = index
        self.call = call
        self.what = what
        self.detail = detail
        self.sides = sides
        self.attempts = attempts
        self.rules = (rule_of(attempts[0].error), rule_of(attempts[1].error))
        super().__init__(self.render())

    def render(self) -> str:
        """The multi-line message: call, both results, the detail and the rules."""
        lines = [f"lockstep divergence at call #{self.index} {self.call}: {self.what} differs"]
        for side, attempt, rule in zip(self.sides, self.attempts, self.rules, strict=True):
            lines.append(f"  {side}: {attempt.describe()}")
            if rule is not None:
                lines.append(f"    rule applied by {side}: {rule}")
        if self.detail:
            lines.append(f"  {self.detail}")
        return "\n".join(lines)


@dataclass
class Reported:
    """A divergence that was reported, not failed (known) or that failed a case."""

    index: int
    call: str
    what: str
    detail: str
    reason: str | None   # the known divergence's reason; None when it failed

    def line(self) -> str:
        """One line for the summary."""
        tail = f" (known: {self.reason})" if self.reason else ""
        return f"call #{self.index} {self.call}: {self.what} differs: {self.detail}{tail}"
