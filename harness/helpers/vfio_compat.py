"""VFIO type1 compat: an iommufd fd used as a /dev/vfio/vfio container (iommufd/vfio_compat.c).

IOMMU_VFIO_IOAS picks the IOAS the type1 ioctls work on (the "compat IOAS"), VFIO_SET_IOMMU
selects type1 or type1v2 behaviour, and from then on VFIO_IOMMU_MAP_DMA / UNMAP_DMA /
GET_INFO act on that IOAS::

    container = Type1Container(fd)
    container.set_ioas(ioas_id)
    container.set_iommu(u.VFIO_TYPE1v2_IOMMU)
    container.map_dma(buf, MOCK_APERTURE_START, length)
    assert container.unmap_dma(MOCK_APERTURE_START, length) == length

The MAP/UNMAP command structs are kept and reused, so a loop of small maps allocates nothing.
"""

from __future__ import annotations

from typing import Any

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd

__all__ = ["TYPE1_RW", "Type1Container", "vfio_ioas"]

#: VFIO_DMA_MAP_FLAG_READ | WRITE: what the kernel's tests map with.
TYPE1_RW = u.VFIO_DMA_MAP_FLAG_READ | u.VFIO_DMA_MAP_FLAG_WRITE


def vfio_ioas(fd: Iommufd, op: int, ioas_id: int = 0) -> int:
    """IOMMU_VFIO_IOAS with ``IOMMU_VFIO_IOAS_GET/SET/CLEAR``; returns the command's ioas_id
    (the compat IOAS for GET)."""
    cmd = new_cmd("iommu_vfio_ioas", {"op": op, "ioas_id": ioas_id})
    fd.ioctl(u.IOMMU_VFIO_IOAS, cmd)
    return int(cmd.ioas_id)


class Type1Container:
    """The type1 ioctls of one iommufd fd, with reused MAP_DMA / UNMAP_DMA structs."""

    def __init__(self, fd: Iommufd) -> None:
        self.fd = fd
        self._map: Any = u.ffi.new("struct vfio_iommu_type1_dma_map *")
        self._map.argsz = u.ffi.sizeof("struct vfio_iommu_type1_dma_map")
        self._unmap: Any = u.ffi.new("struct vfio_iommu_type1_dma_unmap *")
        self._unmap.argsz = u.ffi.sizeof("struct vfio_iommu_type1_dma_unmap")

    def set_ioas(self, ioas_id: int) -> None:
        """Make ``ioas_id`` the compat IOAS (IOMMU_VFIO_IOAS_SET)."""
        vfio_ioas(self.fd, u.IOMMU_VFIO_IOAS_SET, ioas_id)

    def set_iommu(self, version: int) -> None:
        """VFIO_SET_IOMMU(``VFIO_TYPE1_IOMMU`` or ``VFIO_TYPE1v2_IOMMU``)."""
        self.fd.ioctl(u.VFIO_SET_IOMMU, version)

    def map_dma(self, vaddr: int, iova: int, size: int, flags: int = TYPE1_RW) -> None:
        """VFIO_IOMMU_MAP_DMA of [vaddr, vaddr+size) at the fixed ``iova``."""
        cmd = self._map
        cmd.flags = flags
        cmd.vaddr = vaddr
        cmd.iova = iova
        cmd.size = size
        self.fd.ioctl(u.VFIO_IOMMU_MAP_DMA, cmd)

    def unmap_dma(self, iova: int, size: int, flags: int = 0) -> int:
        """VFIO_IOMMU_UNMAP_DMA; returns the bytes unmapped (the kernel rewrites ``size``).

        ``VFIO_DMA_UNMAP_FLAG_ALL`` wants iova and size 0.
        """
        cmd = self._unmap
        cmd.flags = flags
        cmd.iova = iova
        cmd.size = size
        self.fd.ioctl(u.VFIO_IOMMU_UNMAP_DMA, cmd)
        return int(cmd.size)

    def get_info(self, argsz: int, buffer: Any = None) -> Any:
        """VFIO_IOMMU_GET_INFO with ``argsz``; returns the ``struct vfio_iommu_type1_info *``.

        ``buffer`` (a cffi char array, at least argsz long) is passed whole, so the caller
        sees the reply with its capability chain and can check nothing beyond argsz was
        written; only ``argsz`` is set in it, the rest is the caller's. By default a zeroed
        buffer of max(argsz, sizeof(info)) is used.
        """
        if buffer is None:
            buffer = u.ffi.new("char[]", max(argsz, u.ffi.sizeof("struct vfio_iommu_type1_info")))
        info = u.ffi.cast("struct vfio_iommu_type1_info *", buffer)
        info.argsz = argsz
        self.fd.ioctl(u.VFIO_IOMMU_GET_INFO, buffer)
        return info
