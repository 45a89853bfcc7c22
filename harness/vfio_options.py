"""The VFIO test-device options: which devices a run may use, and the bind opt-in.

A device is used only when the user names it; on a qemu backend the guest's emulated
test devices are throwaway and named by the machine definition instead.
"""

from __future__ import annotations

from typing import Any

import pytest

DEVICE_DEST = "iommufd_vfio_devices"
BIND_DEST = "iommufd_vfio_bind"


def add_options(group: Any) -> None:
    """Register ``--vfio-device BDF`` (repeatable) and ``--vfio-bind`` in ``group``."""
    group.addoption(
        "--vfio-device", action="append", dest=DEVICE_DEST, metavar="BDF", default=None,
        help="a PCI device the VFIO tests may use (repeatable); no device is used unless "
             "named (qemu guests: their emulated edu)")
    group.addoption(
        "--vfio-bind", action="store_true", dest=BIND_DEST, default=False,
        help="allow rebinding a named device from its driver to vfio-pci; the original "
             "driver is restored afterwards")


def named_devices(config: pytest.Config) -> list[str]:
    """The BDFs given with --vfio-device (comma-separated lists accepted)."""
    given: list[str] = config.getoption(DEVICE_DEST) or []
    return [b.strip() for entry in given for b in entry.split(",") if b.strip()]


def bind_allowed(config: pytest.Config) -> bool:
    """--vfio-bind was given."""
    return bool(config.getoption(BIND_DEST))
