"""The DMA proof's scenario: a real device copies through IOVAs of an IOAS.

Two pages of the backend's memory are mapped at fixed IOVAs; edu reads the source
page into its buffer and writes its buffer to the destination page. Data arriving
proves the mapping translates; after IOAS_UNMAP the same DMA must move nothing and
the IOMMU must log a fault for the IOVA.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from backends import Backend, Features
from harness.helpers import Ioas, Iommufd
from harness.helpers.edu import MAX_TRANSFER, Edu
from harness.helpers.kmsg import KernelLog
from harness.helpers.vfio import VfioDevice

# Below edu's 28-bit DMA mask, and clear of every IOMMU's reserved windows.
IOVA_SRC = 0x100000
IOVA_DST = 0x200000
LENGTH = MAX_TRANSFER
SKIP_MAP_ENV = "IOMMUFD_DMA_PROOF_SKIP_MAP"


@dataclass
class DmaRig:
    """A bound, attached edu with two pages and their IOVAs."""

    backend: Backend
    cdev: VfioDevice
    ioas: Ioas
    edu: Edu
    src: int
    dst: int
    page: int
    mapped: bool = False

    @classmethod
    def setup(cls, backend: Backend, fd: Iommufd, cdev: VfioDevice) -> DmaRig:
        """Bind ``cdev`` to ``fd``, attach it to a new IOAS, allocate the two pages."""
        cdev.bind(fd)
        ioas = Ioas.alloc(fd)
        cdev.attach(ioas.id)
        page = backend.page_size
        return cls(backend, cdev, ioas, Edu(cdev), backend.alloc(page), backend.alloc(page),
                   page)

    def map(self) -> None:
        """Map the source and destination pages at IOVA_SRC / IOVA_DST.

        With IOMMUFD_DMA_PROOF_SKIP_MAP=1 in the environment nothing is mapped: a
        sabotaged run that shows the proof fails when the map is missing."""
        if os.environ.get(SKIP_MAP_ENV):
            return
        self.ioas.map_fixed(self.src, self.page, IOVA_SRC)
        self.ioas.map_fixed(self.dst, self.page, IOVA_DST)
        self.mapped = True

    def unmap(self) -> None:
        """IOAS_UNMAP both pages; each unmap must report a whole page."""
        for iova in (IOVA_SRC, IOVA_DST):
            assert self.ioas.unmap(iova, self.page) == self.page
        self.mapped = False

    def copy(self, pattern: bytes, dst_fill: bytes) -> bytes:
        """Put ``pattern`` in the source page and ``dst_fill`` in the destination, let
        edu copy source -> its buffer -> destination, and return what the
        destination page holds afterwards (its first LENGTH bytes)."""
        self.backend.poke(self.src, pattern)
        self.backend.poke(self.dst, dst_fill)
        self.edu.read_from(IOVA_SRC, LENGTH)
        self.edu.write_to(IOVA_DST, LENGTH)
        return self.backend.peek(self.dst, LENGTH)


def pattern(seed: int) -> bytes:
    """LENGTH bytes that no other seed (and no zero page) produces."""
    return bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF or 1 for i in range(LENGTH))


def fault_pattern(backend: Backend, iova: int) -> re.Pattern[str]:
    """How the IOMMU in front of the device logs a translation fault at ``iova``:
    intel-iommu's DMAR fault record, arm-smmu-v3's F_TRANSLATION event."""
    if backend.has(Features.INTEL_VTD):
        return re.compile(rf"DMAR: .*fault addr 0x0*{iova:x}\b", re.IGNORECASE)
    if backend.has(Features.SMMUV3):
        return re.compile(rf"F_TRANSLATION.*iova: 0x0*{iova:x}\b", re.IGNORECASE)
    raise AssertionError(f"{backend.spec}: no VT-d or SMMUv3 unit to log the fault")


def prove_translation(rig: DmaRig, seed: int = 1) -> None:
    """The data edu copied through the IOVAs arrived in the destination page."""
    sent = pattern(seed)
    got = rig.copy(sent, b"\0" * LENGTH)
    if got != sent:
        same = sum(a == b for a, b in zip(got, sent, strict=True))
        raise AssertionError(f"DMA through IOVA 0x{IOVA_SRC:x} -> 0x{IOVA_DST:x} did not "
                             f"arrive: {same}/{LENGTH} bytes match (mapped: {rig.mapped})")


def prove_blocked(rig: DmaRig, log: KernelLog, seed: int = 2) -> list[str]:
    """The same DMA moved nothing, and the IOMMU logged a fault for each IOVA;
    returns the fault lines."""
    sentinel = bytes([0xA5]) * LENGTH
    got = rig.copy(pattern(seed), sentinel)
    assert got == sentinel, "DMA reached the destination page after IOAS_UNMAP"
    lines = log.new_lines()
    faults = [line for line in lines
              if fault_pattern(rig.backend, IOVA_SRC).search(line)
              or fault_pattern(rig.backend, IOVA_DST).search(line)]
    assert faults, ("no IOMMU fault in the kernel log after DMA to unmapped IOVAs; "
                    f"new lines: {lines[-10:]}")
    return faults
