"""What can go wrong with a guest, as BackendError subclasses."""

from __future__ import annotations

from pathlib import Path

from backends.contract import BackendError


class GuestError(BackendError):
    """The guest could not be booted or reached (QEMU failed, no agent answered)."""


class GuestCrashed(BackendError):
    """The guest kernel crashed (panic, Oops, BUG, WARNING splat) or hung during a call.

    ``kind`` names what was seen (``"panic"``, ``"oops"``, ``"bug"``,
    ``"warning"``, ``"hang"``, ``"exited"``), ``summary`` is the splat's first
    line, ``console`` the console excerpt around it and ``log`` the whole
    console log of that boot. The backend boots a fresh guest for the next call.
    """

    def __init__(self, kind: str, summary: str, console: str, log: Path | None = None,
                 during: str = "") -> None:
        self.kind = kind
        self.summary = summary
        self.console = console
        self.log = log
        self.during = during
        where = f" during {during}" if during else ""
        log_note = f" (console log: {log})" if log else ""
        excerpt = "\n".join("    " + line for line in console.splitlines())
        super().__init__(f"guest {kind}{where}: {summary}{log_note}\n{excerpt}".rstrip())
