"""QEMU's edu device as a DMA engine, driven through its VFIO cdev.

edu (1234:11e8, QEMU docs/specs/edu.rst) has a 4 KiB buffer at device address 0x40000
and one DMA channel: source, destination and count registers, and a command register
whose bit 0 starts a transfer (bit 1: 0 reads from the bus into the buffer, 1 writes
the buffer to the bus). The transfer runs 100 ms of virtual time later; the run bit
clears when it is done. Bus addresses pass through the device's dma_mask (28 bits by
default), so IOVAs must stay below 256 MiB.

Transfers are kept to :data:`MAX_TRANSFER` bytes: QEMU 7.2's range check rejects a
transfer that ends exactly at the buffer's end and kills QEMU (hw_error). QEMU 10.0.2
(measured in the x86_64 guest) moves the whole 4096-byte buffer, and past it only logs a
guest error: a 4097-byte transfer "works" by overrunning the buffer into the device's
own state. The proof needs neither, so 2048 bytes serve every QEMU.
"""

from __future__ import annotations

import time

import uapi_headers as u
from harness.helpers.vfio import Region, VfioDevice

ID = (0x1234, 0x11E8)
BUFFER = 0x40000
MAX_TRANSFER = 2048
DMA_MASK = (1 << 28) - 1

REG_ID = 0x00
REG_LIVENESS = 0x04
REG_DMA_SRC = 0x80
REG_DMA_DST = 0x88
REG_DMA_COUNT = 0x90
REG_DMA_CMD = 0x98
CMD_RUN = 0x1
CMD_TO_BUS = 0x2


class EduTimeout(RuntimeError):
    """A transfer did not finish in time."""


class Edu:
    """The DMA engine of an edu device whose cdev is bound and attached."""

    def __init__(self, device: VfioDevice) -> None:
        self.device = device
        self.bar: Region = device.region(u.VFIO_PCI_BAR0_REGION_INDEX)
        device.enable_bus_master()

    def alive(self) -> bool:
        """The liveness register answers the complement of what was written."""
        self.device.write32(self.bar, REG_LIVENESS, 0x12345678)
        return self.device.read32(self.bar, REG_LIVENESS) == (~0x12345678 & 0xFFFFFFFF)

    def _transfer(self, src: int, dst: int, length: int, command: int,
                  timeout: float) -> None:
        if not 0 < length <= MAX_TRANSFER:
            raise ValueError(f"edu transfers are 1..{MAX_TRANSFER} bytes, not {length}")
        for reg, value in ((REG_DMA_SRC, src), (REG_DMA_DST, dst), (REG_DMA_COUNT, length)):
            self.device.write32(self.bar, reg, value)
        self.device.write32(self.bar, REG_DMA_CMD, command | CMD_RUN)
        deadline = time.monotonic() + timeout
        while self.device.read32(self.bar, REG_DMA_CMD) & CMD_RUN:
            if time.monotonic() > deadline:
                raise EduTimeout(f"edu DMA of {length} bytes still running after {timeout} s")
            time.sleep(0.02)

    def read_from(self, iova: int, length: int, timeout: float = 20.0) -> None:
        """DMA ``length`` bytes from bus address ``iova`` into the device's buffer."""
        self._transfer(iova & DMA_MASK, BUFFER, length, 0, timeout)

    def write_to(self, iova: int, length: int, timeout: float = 20.0) -> None:
        """DMA ``length`` bytes of the device's buffer to bus address ``iova``."""
        self._transfer(BUFFER, iova & DMA_MASK, length, CMD_TO_BUS, timeout)
