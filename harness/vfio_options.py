"""The VFIO test-device options (``--iommufd-vfio-device``, ``--iommufd-vfio-bind``,
registered in :mod:`harness.options`): which devices a run may use, and the bind opt-in.

A device is used only when the user names it; on a qemu backend the guest's emulated
test devices are throwaway and named by the machine definition instead.
"""

from __future__ import annotations

import pytest

DEVICE_DEST = "iommufd_vfio_devices"
BIND_DEST = "iommufd_vfio_bind"


def named_devices(config: pytest.Config) -> list[str]:
    """The BDFs given with --iommufd-vfio-device (comma-separated lists accepted)."""
    given: list[str] = config.getoption(DEVICE_DEST) or []
    return [b.strip() for entry in given for b in entry.split(",") if b.strip()]


def bind_allowed(config: pytest.Config) -> bool:
    """--iommufd-vfio-bind was given."""
    return bool(config.getoption(BIND_DEST))
