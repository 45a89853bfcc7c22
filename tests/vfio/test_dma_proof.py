"""``dma_proof.<device>.<case>``: a real device's DMA proves that an IOAS mapping
translates and that an unmap blocks (with the IOMMU's fault in the kernel log).

Runs where a claimed test device has a DMA engine the harness drives (QEMU's edu).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends import Backend
from harness import kselftest, marks
from harness.helpers import Iommufd
from harness.helpers.kmsg import KernelLog
from harness.helpers.vfio import VfioDevice
from harness.vfio_claim import ClaimedDevice
from tests.vfio.dma import DmaRig, prove_blocked, prove_translation

# On the host: the session claims the guest's devices and gives them back (vfio_claim).
pytestmark = [kselftest.fixture("dma_proof", {"edu": "edu"}),
              marks.requires("vfio_cdev"), marks.on_host]


@pytest.fixture
def rig(backend: Backend, variant: str, vfio_test_devices: list[ClaimedDevice],
        vfio_iommufd: Iommufd) -> Iterator[DmaRig]:
    """The variant's device bound, attached to a fresh IOAS, with two pages."""
    device = next((d for d in vfio_test_devices if d.name == variant), None)
    if device is None:
        pytest.skip(f"no claimed {variant} device (--iommufd-vfio-device names the devices)")
    cdev = VfioDevice.open(backend, device.cdev)
    try:
        yield DmaRig.setup(backend, vfio_iommufd, cdev)
    finally:
        cdev.close()


def test_map_translates(rig: DmaRig) -> None:
    rig.map()
    prove_translation(rig)


def test_unmap_blocks(rig: DmaRig, backend: Backend) -> None:
    rig.map()
    prove_translation(rig, seed=3)
    log = KernelLog(backend)
    try:
        rig.unmap()
        prove_blocked(rig, log)
    finally:
        log.close()


def test_remap_translates_again(rig: DmaRig) -> None:
    rig.map()
    rig.unmap()
    rig.map()
    prove_translation(rig, seed=4)


def test_skipped_map_fails_the_proof(rig: DmaRig) -> None:
    # The proof must be able to fail: without the map the same scenario must not pass.
    with pytest.raises(AssertionError, match="did not arrive"):
        prove_translation(rig, seed=5)
