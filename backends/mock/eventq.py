"""Fault queues and vEVENT queues (eventq.c): the early checks; the queues themselves
(an object plus an fd to read events from) come with the IOPF / vEVENTQ issue."""

from __future__ import annotations

from errno import EINVAL, EOPNOTSUPP
from typing import TYPE_CHECKING

import uapi_headers as u
from backends.mock.errors import kerr
from backends.mock.objects import ObjType

if TYPE_CHECKING:
    from backends.mock.main import Ucmd

VEVENTQ_MAX_DEPTH = 1 << 19


def iommufd_fault_alloc(ucmd: Ucmd) -> int:
    """IOMMU_FAULT_QUEUE_ALLOC: flags must be 0; the queue is not modelled yet."""
    if ucmd.cmd.flags:
        raise kerr(EOPNOTSUPP)
    raise kerr(EOPNOTSUPP)


def iommufd_veventq_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VEVENTQ_ALLOC: flags/type (EOPNOTSUPP), depth (EINVAL), then the vIOMMU
    lookup (ENOENT: none can exist yet)."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.__reserved or cmd.type == u.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    if not cmd.veventq_depth or cmd.veventq_depth > VEVENTQ_MAX_DEPTH:
        raise kerr(EINVAL)
    viommu = ucmd.ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU)
    ucmd.ictx.put_object(viommu)
    raise kerr(EOPNOTSUPP)
