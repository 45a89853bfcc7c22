"""Fixtures of the VFIO group: claimed test devices and their open cdevs.

A device is used only when named with ``--iommufd-vfio-device BDF``; on a qemu backend the
guest's emulated edu is named by the machine definition (vm_images.arch). Devices are
claimed once per session (see harness.vfio_claim) and given back at its end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends import Backend
from harness import vfio_options
from harness.helpers import Iommufd
from harness.helpers.vfio import VfioDevice
from harness.vfio_claim import Claim, ClaimedDevice, ClaimRefused
from vm_images.arch import TEST_DEVICE_BDFS


def default_devices(backend: Backend) -> list[str]:
    """The devices a run uses when none is named: a qemu guest's edu, else none."""
    return [TEST_DEVICE_BDFS["edu"]] if backend.spec.startswith("qemu:") else []


@pytest.fixture(scope="session")
def vfio_test_devices(request: pytest.FixtureRequest, backend: Backend) -> Iterator[
        list[ClaimedDevice]]:
    """The claimed devices (on vfio-pci, each with a cdev); skips when none is named."""
    bdfs = vfio_options.named_devices(request.config) or default_devices(backend)
    if not bdfs:
        pytest.skip("no VFIO test device named (--iommufd-vfio-device BDF)")
    try:
        claim = Claim(backend, bdfs, allow_bind=vfio_options.bind_allowed(request.config))
    except ClaimRefused as exc:
        pytest.exit(f"iommufd-harness: VFIO device refused: {exc}",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    try:
        yield claim.devices
    finally:
        claim.release()


@pytest.fixture
def vfio_test_device(vfio_test_devices: list[ClaimedDevice]) -> ClaimedDevice:
    """The first claimed device (the one the kernel's single-device tests use)."""
    return vfio_test_devices[0]


@pytest.fixture
def cdev(backend: Backend, vfio_test_device: ClaimedDevice) -> Iterator[VfioDevice]:
    """The device's cdev, opened O_RDWR (the kernel fixture's ``cdev_fd``)."""
    device = VfioDevice.open(backend, vfio_test_device.cdev)
    yield device
    device.close()


@pytest.fixture
def vfio_iommufd(backend: Backend) -> Iterator[Iommufd]:
    """A plain /dev/iommu (no selftest buffers: real devices, real pages)."""
    fd = Iommufd.open(backend)
    yield fd
    fd.close()
