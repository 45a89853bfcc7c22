"""Run the long steps of a build: one line of progress each, full output to a log file.

Builds report what they do and where the log is, never the make output itself: a
2,000-line kernel build on the terminal hides the one line that matters. On failure
the error names the step and its log, and carries the log's tail so CI output says why.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Where progress lines go: ``print`` by default, a logger or a list's append in tests.
Progress = Callable[[str], None]


class StepError(RuntimeError):
    """A build step failed. ``step`` and ``log`` name it; the message includes both."""

    def __init__(self, step: str, log: Path | None, detail: str) -> None:
        self.step = step
        self.log = log
        where = f"; log: {log}" if log is not None else ""
        super().__init__(f"{step} failed{where}\n{detail}".rstrip())


@dataclass(frozen=True)
class Reporter:
    """Progress lines of one build, prefixed with its tag (``[kernel x86_64] ...``)."""

    tag: str
    progress: Progress

    def say(self, message: str) -> None:
        """One progress line."""
        self.progress(f"[{self.tag}] {message}")

    def fail(self, what: str, log: Path | None, detail: str = "") -> StepError:
        """The error for step ``what`` of this build (to ``raise``)."""
        return StepError(f"{self.tag}: {what}", log, detail)

    def run(self, what: str, argv: Sequence[str], log: Path, *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, quiet: bool = False) -> float:
        """Run ``argv`` with stdout+stderr appended to ``log``; returns the seconds it took.

        Progress says the step starts (with the log) and ends, unless ``quiet`` (for
        steps too small to mention). Raises StepError naming the step and the log,
        with the log's last lines.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        if not quiet:
            self.say(f"{what} ... (log: {log})")
        start = time.monotonic()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(log, "ab") as out:
            out.write(f"\n$ {' '.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.run(list(argv), cwd=cwd, env=full_env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      check=False)
            except OSError as e:  # the program itself is missing
                raise self.fail(what, log, f"{argv[0]}: {e.strerror}; "
                                           "run vm_images/install_deps.sh") from e
        took = time.monotonic() - start
        if proc.returncode != 0:
            raise self.fail(what, log, f"exit {proc.returncode} after {took:.0f} s; "
                                       f"last lines:\n{log_tail(log)}")
        if not quiet:
            self.say(f"{what}: done in {took:.1f} s")
        return took


def log_tail(log: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two builds of one cache entry do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
