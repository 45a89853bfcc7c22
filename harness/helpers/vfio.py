"""VFIO device cdevs as test devices: bind to an iommufd, attach RID and PASIDs, reach
the device's config space and BARs.

Every call goes through the backend contract, so the device may be on this host or in
a test guest. Which devices may be used, and their binding to vfio-pci, is
:mod:`backends.kernel.vfio_devices`' job; this module starts from a cdev path.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import uapi_headers as u
from backends.contract import Backend
from harness.helpers.core import Iommufd

#: PCI config space: the command register and its bus-master bit
PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4


def vfio_cmd(ctype: str, fields: dict[str, Any] | None = None) -> Any:
    """A VFIO ioctl struct with ``argsz`` preset to its size."""
    init = dict(fields or {})
    init.setdefault("argsz", u.ffi.sizeof(f"struct {ctype}"))
    return u.ffi.new(f"struct {ctype} *", init)


@dataclass(frozen=True)
class Region:
    """Where one region of a VFIO device sits in its fd."""

    index: int
    flags: int
    size: int
    offset: int


class VfioDevice:
    """One open /dev/vfio/devices/vfioN (the C selftests' ``device->fd``)."""

    def __init__(self, backend: Backend, path: str, fd: int) -> None:
        self.backend = backend
        self.path = path
        self.fd = fd
        self.dev_id: int | None = None
        self.closed = False

    @classmethod
    def open(cls, backend: Backend, path: str) -> VfioDevice:
        """Open the cdev (O_RDWR) on ``backend``."""
        return cls(backend, path, backend.open(path, os.O_RDWR))

    def close(self) -> None:
        """close(2): unbinds from the iommufd if bound."""
        if not self.closed:
            self.closed = True
            self.backend.close(self.fd)

    def __enter__(self) -> VfioDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ioctl(self, request: int, arg: Any = None) -> int:
        """A raw ioctl on the device fd."""
        return self.backend.ioctl(self.fd, request, arg)

    # -- iommufd -------------------------------------------------------------
    def bind(self, iommufd: Iommufd | int, flags: int = 0) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD; returns (and keeps) the dev_id."""
        fd = iommufd.fd if isinstance(iommufd, Iommufd) else iommufd
        cmd = vfio_cmd("vfio_device_bind_iommufd", {"flags": flags, "iommufd": fd})
        self.ioctl(u.VFIO_DEVICE_BIND_IOMMUFD, cmd)
        self.dev_id = int(cmd.out_devid)
        return self.dev_id

    def attach(self, pt_id: int, pasid: int | None = None) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT of the RID (or ``pasid``) to an IOAS or HWPT;
        a second attach replaces. Returns the HWPT the kernel reports attached."""
        fields = {"pt_id": pt_id}
        if pasid is not None:
            fields.update(flags=u.VFIO_DEVICE_ATTACH_PASID, pasid=pasid)
        cmd = vfio_cmd("vfio_device_attach_iommufd_pt", fields)
        self.ioctl(u.VFIO_DEVICE_ATTACH_IOMMUFD_PT, cmd)
        return int(cmd.pt_id)

    def detach(self, pasid: int | None = None) -> None:
        """VFIO_DEVICE_DETACH_IOMMUFD_PT of the RID (or ``pasid``): DMA is blocked."""
        fields = {} if pasid is None else {"flags": u.VFIO_DEVICE_DETACH_PASID, "pasid": pasid}
        self.ioctl(u.VFIO_DEVICE_DETACH_IOMMUFD_PT,
                   vfio_cmd("vfio_device_detach_iommufd_pt", fields))

    # -- the device ----------------------------------------------------------
    def info(self) -> Any:
        """VFIO_DEVICE_GET_INFO."""
        cmd = vfio_cmd("vfio_device_info")
        self.ioctl(u.VFIO_DEVICE_GET_INFO, cmd)
        return cmd

    def region(self, index: int) -> Region:
        """VFIO_DEVICE_GET_REGION_INFO of region ``index``."""
        cmd = vfio_cmd("vfio_region_info", {"index": index})
        self.ioctl(u.VFIO_DEVICE_GET_REGION_INFO, cmd)
        return Region(index, int(cmd.flags), int(cmd.size), int(cmd.offset))

    def read32(self, region: Region, offset: int) -> int:
        """A 32-bit read at ``offset`` of the region (one 4-byte access)."""
        data = self.backend.pread(self.fd, 4, region.offset + offset)
        return int(struct.unpack("<I", data)[0])

    def write32(self, region: Region, offset: int, value: int) -> None:
        """A 32-bit write at ``offset`` of the region (one 4-byte access)."""
        self.backend.pwrite(self.fd, struct.pack("<I", value), region.offset + offset)

    def write64(self, region: Region, offset: int, value: int) -> None:
        """A 64-bit register written as low then high half (devices latch both)."""
        self.write32(region, offset, value & 0xFFFFFFFF)
        self.write32(region, offset + 4, value >> 32)

    def enable_bus_master(self) -> None:
        """Set memory decoding and bus mastering in the command register, so the
        device may do DMA (vfio-pci leaves them as it found them)."""
        config = self.region(u.VFIO_PCI_CONFIG_REGION_INDEX)
        data = self.backend.pread(self.fd, 2, config.offset + PCI_COMMAND)
        command = struct.unpack("<H", data)[0] | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        self.backend.pwrite(self.fd, struct.pack("<H", command), config.offset + PCI_COMMAND)


@dataclass(frozen=True)
class HwInfo:
    """IOMMU_GET_HW_INFO's answer for one device."""

    data_type: int
    data: bytes              # the driver's blob, ``data_len`` bytes as the kernel wrote
    max_pasid_log2: int
    capabilities: int
    flags: int


def get_hw_info(fd: Iommufd, dev_id: int, data_len: int = 64, *, flags: int = 0,
                in_data_type: int = 0) -> HwInfo:
    """IOMMU_GET_HW_INFO into a ``data_len``-byte buffer in the backend's memory."""
    backend = fd.backend
    length = max(data_len, backend.page_size)
    buf = backend.alloc(length)
    try:
        cmd = u.ffi.new("struct iommu_hw_info *", {
            "size": u.ffi.sizeof("struct iommu_hw_info"), "flags": flags, "dev_id": dev_id,
            "data_len": data_len, "data_uptr": buf, "in_data_type": in_data_type})
        fd.ioctl(u.IOMMU_GET_HW_INFO, cmd)
        data = backend.peek(buf, int(cmd.data_len)) if cmd.data_len else b""
    finally:
        backend.munmap(buf, length)
    return HwInfo(int(cmd.out_data_type), data, int(cmd.out_max_pasid_log2),
                  int(cmd.out_capabilities), int(cmd.flags))
