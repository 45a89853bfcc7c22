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
    type: Any = None


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

QEMU_RUN = Option(
    "--iommufd-qemu-run", "iommufd_qemu_run", "IOMMUFD_QEMU_RUN",
    "qemu backends: 'guest' (default) runs the cases in a pytest session inside the guest, "
    "'agent' runs them here with every call crossing to the guest (env IOMMUFD_QEMU_RUN)",
    metavar="MODE")
GUEST_BACKEND = Option(
    "--iommufd-guest-backend", "iommufd_guest_backend", "IOMMUFD_GUEST_BACKEND",
    "the backend of the session inside a guest (default kernel: the guest's own /dev/iommu; "
    "env IOMMUFD_GUEST_BACKEND)", metavar="SPEC")
FAIL_NTH = Option(
    "--iommufd-fail-nth", "iommufd_fail_nth", "IOMMUFD_FAIL_NTH",
    "sweep every ported case with fail_nth fault injection, as the kernel's "
    "iommufd_fail_nth does (env IOMMUFD_FAIL_NTH=1)", action="store_true")
FAIL_NTH_LIMIT = Option(
    "--iommufd-fail-nth-limit", "iommufd_fail_nth_limit", None,
    "stop a sweep at fault point N (default 1000, as the kernel's test)", metavar="N",
    type=int)
FAIL_NTH_HOST = Option(
    "--iommufd-fail-nth-on-host", "iommufd_fail_nth_host", None,
    "allow fail_nth fault injection on a real host's kernel backend (env "
    "IOMMUFD_FAIL_NTH_HOST=1); it can destabilise the machine", action="store_true")
FAIL_NTH_KSELFTEST = Option(
    "--iommufd-fail-nth-kselftest", "iommufd_fail_nth_kselftest", None,
    "count each sweep's injected faults per fault attribute and, in guests, line the points "
    "up with the kernel's C iommufd_fail_nth run in the same guest", action="store_true")
COMPARE = Option(
    "--iommufd-compare", "iommufd_compare", "IOMMUFD_COMPARE",
    "run each case on every backend and on SPEC in lockstep, failing at the first "
    "divergence (env IOMMUFD_COMPARE)", metavar="SPEC")
REPRO_DIR = Option(
    "--iommufd-repro-dir", "iommufd_repro_dir", None,
    "with --iommufd-compare: write a Python and a C reproducer of each failed case",
    metavar="DIR")
EXPLORE_OPS = Option(
    "--iommufd-explore-ops", "iommufd_explore_ops", "IOMMUFD_EXPLORE_OPS",
    "the budget of the differential exploration test: random operations to run (env "
    "IOMMUFD_EXPLORE_OPS, default 200)", metavar="N", type=int)
VFIO_DEVICE = Option(
    "--iommufd-vfio-device", "iommufd_vfio_devices", None,
    "a PCI device the VFIO tests may use (repeatable); no device is used unless named "
    "(qemu guests: their emulated edu)", metavar="BDF", action="append")
VFIO_BIND = Option(
    "--iommufd-vfio-bind", "iommufd_vfio_bind", None,
    "allow rebinding a named device from its driver to vfio-pci; the original driver is "
    "restored afterwards", action="store_true")

OPTIONS: tuple[Option, ...] = (SESSION, BACKEND, KTAP, KCIDB, LINEUP, LINEUP_FILE, QEMU_RUN,
                               GUEST_BACKEND, FAIL_NTH, FAIL_NTH_LIMIT, FAIL_NTH_HOST,
                               FAIL_NTH_KSELFTEST, COMPARE, REPRO_DIR, EXPLORE_OPS,
                               VFIO_DEVICE, VFIO_BIND)

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
        if option.type is not None:
            kwargs["type"] = option.type
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
    if raw and option.type is not None:
        try:
            return option.type(raw)
        except ValueError:
            raise pytest.UsageError(f"{option.env}={raw!r}: not a valid {option.flag} "
                                    "value") from None
    return raw or None
