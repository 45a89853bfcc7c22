"""vIOMMU, vDEVICE and HW queue ioctls (viommu.c): the checks that come before a
vIOMMU would be needed. No vIOMMU can be created yet (the mock's vIOMMU type arrives
with the nesting issue), so every path that would need one ends in EOPNOTSUPP or, for
a lookup by ID, ENOENT, as the kernel answers for an ID that is not a vIOMMU.
"""

from __future__ import annotations

from errno import EINVAL, EOPNOTSUPP, EOVERFLOW
from typing import TYPE_CHECKING

import uapi_headers as u
from backends.mock.device import iommufd_get_device
from backends.mock.errors import kerr
from backends.mock.interval_tree import U64_MAX
from backends.mock.objects import ObjType

if TYPE_CHECKING:
    from backends.mock.main import Ucmd


def iommufd_viommu_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_VIOMMU_ALLOC: flags or the DEFAULT type are EOPNOTSUPP; the device must
    exist (ENOENT); the mock driver's vIOMMU is not modelled yet (EOPNOTSUPP)."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.type == u.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    idev = iommufd_get_device(ucmd.ictx, int(cmd.dev_id))
    ucmd.ictx.put_object(idev)
    raise kerr(EOPNOTSUPP)


def iommufd_vdevice_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_VDEVICE_ALLOC: ``viommu_id`` must be a vIOMMU (ENOENT)."""
    cmd = ucmd.cmd
    if cmd.virt_id > U64_MAX:
        raise kerr(EINVAL)
    viommu = ucmd.ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU)
    ucmd.ictx.put_object(viommu)
    raise kerr(EOPNOTSUPP)


def iommufd_hw_queue_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_HW_QUEUE_ALLOC: flags/type (EOPNOTSUPP), length (EINVAL), range
    (EOVERFLOW), then the vIOMMU lookup (ENOENT)."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.type == u.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    if not cmd.length:
        raise kerr(EINVAL)
    if cmd.nesting_parent_iova + cmd.length - 1 > U64_MAX:
        raise kerr(EOVERFLOW)
    viommu = ucmd.ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU)
    ucmd.ictx.put_object(viommu)
    raise kerr(EOPNOTSUPP)
