"""Every command-line option of the pytest plugin, registered in this one place.

All options carry the ``--iommufd-`` prefix (as labgrid's carry ``--lg-``), so they can
never collide with another project's own ``--backend`` or ``--ktap``. Giving any of them
makes the session an iommufd session from the start (see :mod:`harness.plugin`).
Environment fallbacks (``IOMMUFD_BACKEND``, ``IOMMUFD_KTAP``, ...) are read through
:func:`value` only once the session runs iommufd scenarios, never at import or for
other projects.

This module imports nothing but pytest and the standard library: it is loaded by every
pytest run in an environment where the package is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

GROUP = "iommufd"


@dataclass(frozen=True)
class Option:
    """One plugin option: its flag, its ``config.getoption`` name and its env fallback."""

    flag: str
    dest: str
    env: str | None
    help: str
    metavar: str | None = None
    action: str = "store"


BACKEND = Option(
    "--iommufd-backend", "iommufd_backends", "IOMMUFD_BACKEND",
    "where the ioctls run: mock (default), kernel, qemu:x86_64, qemu:aarch64; repeat it or "
    "give a comma-separated list to run every case on each (env IOMMUFD_BACKEND)",
    metavar="SPEC", action="append")
KTAP = Option(
    "--iommufd-ktap", "iommufd_ktap", "IOMMUFD_KTAP",
    "write a KTAP v1 report with kselftest case names (env IOMMUFD_KTAP)", metavar="FILE")
KCIDB = Option(
    "--iommufd-kcidb", "iommufd_kcidb", "IOMMUFD_KCIDB",
    "write the run as KCIDB JSON for KernelCI (env IOMMUFD_KCIDB)", metavar="FILE")
LINEUP = Option(
    "--iommufd-kselftest-lineup", "iommufd_lineup", "IOMMUFD_LINEUP",
    "after the run, run the kernel's C selftests in the same guest and line their results "
    "up with ours by case name (env IOMMUFD_LINEUP=1)", action="store_true")
LINEUP_FILE = Option(
    "--iommufd-lineup-file", "iommufd_lineup_file", None,
    "write the full lineup table (every case) to FILE", metavar="FILE")
SESSION = Option(
    "--iommufd", "iommufd_session", None,
    "run as an iommufd session even before a scenario is collected (what `iommufd-harness "
    "run` passes); otherwise the plugin wakes up when it collects an iommufd scenario",
    action="store_true")

OPTIONS: tuple[Option, ...] = (SESSION, BACKEND, KTAP, KCIDB, LINEUP, LINEUP_FILE)

#: Options that name a file the run writes: checked before the run starts.
REPORT_FILES: tuple[Option, ...] = (KTAP, KCIDB, LINEUP_FILE)


def register(parser: pytest.Parser) -> None:
    """Add every option to the ``iommufd`` group."""
    group = parser.getgroup(GROUP, "iommufd-harness (active only in sessions that run "
                                   "iommufd scenarios)")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.dest, "action": option.action,
                                  "help": option.help}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.action != "store_true":
            kwargs["default"] = None
        group.addoption(option.flag, **kwargs)


def given(config: pytest.Config) -> bool:
    """True when any option of the plugin was given (command line or ``addopts``)."""
    return any(config.getoption(o.dest) for o in OPTIONS)


def value(config: pytest.Config, option: Option) -> Any:
    """The option's value, else its environment fallback (None or False when neither)."""
    given_value = config.getoption(option.dest)
    if given_value or option.env is None:
        return given_value
    raw = os.environ.get(option.env, "")
    if option.action == "store_true":
        return bool(raw)
    if option.action == "append":
        return [raw] if raw else None
    return raw or None
