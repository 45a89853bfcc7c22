"""The IOMMU core's group attachment: RID and PASID handles (iommu.c).

A group's ``pasid_array`` holds one attach handle per attached PASID, and the RID's
under IOMMU_NO_PASID. The core publishes a handle only after the driver accepted the
domain, so a failed attach or replace leaves the array (and what PASID_CHECK_HWPT or
IOPF delivery see) unchanged:

- a PASID attach never overwrites (EBUSY); a replace needs an attached PASID (EINVAL)
  and hands the driver the current domain as ``old``; when a device of the group fails,
  the ones that already switched go back to ``old`` (or to blocking on a plain attach);
- the RID switches between domains directly, without passing through blocking.

Every domain here is the mock driver's, so its ``attach_dev`` and ``set_dev_pasid`` are
called directly.
"""

from __future__ import annotations

from errno import EBUSY, EINVAL
from typing import TYPE_CHECKING

from backends.mock import mock_driver
from backends.mock.errors import kerr
from backends.mock.iommu import IOMMU_NO_PASID, IommuDomain

if TYPE_CHECKING:
    from backends.mock.mock_driver import IommuGroup, MockDev


class AttachHandle:
    """``struct iommufd_attach_handle``: the core's handle (``domain``) plus the iommufd
    device that attached it, which IOPF delivery uses to name the device."""

    __slots__ = ("domain", "idev")

    def __init__(self, idev: object) -> None:
        self.domain: IommuDomain | None = None
        self.idev = idev


def _ops_compatible(dev: MockDev, domain: IommuDomain) -> bool:
    """domain_iommu_ops_compatible(): the domain belongs to the device's driver."""
    return domain.owner is dev.iommu


def iommu_attach_handle_get(group: IommuGroup, pasid: int) -> AttachHandle | None:
    """iommu_attach_handle_get(..., type 0): the published handle, or None (ENOENT)."""
    handle = group.pasid_array.get(pasid)
    return handle if isinstance(handle, AttachHandle) else None


# -- the RID ---------------------------------------------------------------------

def _group_set_domain(group: IommuGroup, new_domain: IommuDomain) -> None:
    """__iommu_group_set_domain(): ``attach_dev`` for each device; on a failure the
    devices already switched go back to the group's current domain."""
    old = group.domain
    if old is new_domain:
        return
    done: list[MockDev] = []
    for dev in group.devices:
        try:
            mock_driver.mock_domain_nop_attach(new_domain, dev, old)
        except OSError:
            for prev in done:
                if old is not None:
                    mock_driver.mock_domain_nop_attach(old, prev, new_domain)
            raise
        done.append(dev)
    group.domain = new_domain


def iommu_attach_group_handle(domain: IommuDomain, group: IommuGroup,
                              handle: AttachHandle) -> None:
    """iommu_attach_group_handle(): EBUSY if the RID is attached already; EINVAL for a
    domain of another driver."""
    if IOMMU_NO_PASID in group.pasid_array:
        raise kerr(EBUSY)
    blocking = group.devices[0].iommu.blocking_domain
    if group.domain is not None and group.domain is not blocking:
        raise kerr(EBUSY)
    if not _ops_compatible(group.devices[0], domain):
        raise kerr(EINVAL)
    _group_set_domain(group, domain)
    handle.domain = domain
    group.pasid_array[IOMMU_NO_PASID] = handle


def iommu_replace_group_handle(group: IommuGroup, new_domain: IommuDomain,
                               handle: AttachHandle) -> None:
    """iommu_replace_group_handle(): switch the RID straight to ``new_domain``."""
    _group_set_domain(group, new_domain)
    handle.domain = new_domain
    group.pasid_array[IOMMU_NO_PASID] = handle


def iommu_detach_group_handle(group: IommuGroup) -> None:
    """iommu_detach_group_handle(): the RID back to the blocking domain."""
    blocking = group.devices[0].iommu.blocking_domain
    _group_set_domain(group, blocking)
    group.pasid_array.pop(IOMMU_NO_PASID, None)


# -- PASIDs ----------------------------------------------------------------------

def _remove_dev_pasid(dev: MockDev, pasid: int, domain: IommuDomain) -> None:
    """iommu_remove_dev_pasid(): the blocked domain's set_dev_pasid cannot fail."""
    blocked = dev.iommu.blocking_domain
    try:
        mock_driver.mock_domain_set_dev_pasid_nop(blocked, dev, pasid, domain)
    except OSError:
        dev.iommu.kernel.warn_on(True, "iommu_remove_dev_pasid: blocked domain failed")


def _set_group_pasid(domain: IommuDomain, group: IommuGroup, pasid: int,
                     old: IommuDomain | None) -> None:
    """__iommu_set_group_pasid(): set ``domain`` on each PASID-capable device; on a
    failure the devices already set go back to ``old`` (or to blocking without one)."""
    done: list[MockDev] = []
    for dev in group.devices:
        if not dev.max_pasids:
            continue
        try:
            mock_driver.mock_domain_set_dev_pasid_nop(domain, dev, pasid, old)
        except OSError:
            for prev in done:
                _revert_dev_pasid(prev, pasid, domain, old)
            raise
        done.append(dev)


def _revert_dev_pasid(dev: MockDev, pasid: int, domain: IommuDomain,
                      old: IommuDomain | None) -> None:
    """Put one device back on ``old``: a driver failing a previously good domain is a bug
    (WARN), and the device is then blocked."""
    if old is not None:
        try:
            mock_driver.mock_domain_set_dev_pasid_nop(old, dev, pasid, domain)
            return
        except OSError:
            dev.iommu.kernel.warn_on(True, "__iommu_set_group_pasid: rollback to old failed")
    _remove_dev_pasid(dev, pasid, domain)


def iommu_attach_device_pasid(domain: IommuDomain, dev: MockDev, pasid: int,
                              handle: AttachHandle) -> None:
    """iommu_attach_device_pasid(): EINVAL for IOMMU_NO_PASID, another driver's domain
    or a PASID beyond a device's width; EBUSY if the PASID is attached already."""
    group = dev.group
    if not _ops_compatible(dev, domain) or pasid == IOMMU_NO_PASID:
        raise kerr(EINVAL)
    for member in group.devices:
        if member.max_pasids and pasid >= member.max_pasids:
            raise kerr(EINVAL)
    if pasid in group.pasid_array:
        raise kerr(EBUSY)
    _set_group_pasid(domain, group, pasid, None)
    handle.domain = domain
    group.pasid_array[pasid] = handle


def iommu_replace_device_pasid(domain: IommuDomain, dev: MockDev, pasid: int,
                               handle: AttachHandle) -> None:
    """iommu_replace_device_pasid(): EINVAL unless the PASID is attached; the old
    handle stays published when the driver refuses the new domain."""
    group = dev.group
    if not _ops_compatible(dev, domain) or pasid == IOMMU_NO_PASID:
        raise kerr(EINVAL)
    curr = iommu_attach_handle_get(group, pasid)
    if curr is None:
        raise kerr(EINVAL)
    if curr is handle:
        dev.iommu.kernel.warn_on(True, "iommu_replace_device_pasid: handle reused")
        raise kerr(EINVAL)
    if curr.domain is not domain:
        _set_group_pasid(domain, group, pasid, curr.domain)
    handle.domain = domain
    group.pasid_array[pasid] = handle


def iommu_detach_device_pasid(domain: IommuDomain, dev: MockDev, pasid: int) -> None:
    """iommu_detach_device_pasid(): every PASID-capable device of the group to blocked."""
    group = dev.group
    for member in group.devices:
        if member.max_pasids:
            _remove_dev_pasid(member, pasid, domain)
    group.pasid_array.pop(pasid, None)
