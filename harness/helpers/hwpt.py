"""HW page tables: nested HWPT driver data and IOMMU_HWPT_INVALIDATE arrays.

The Python side of iommufd_utils.h's ``test_cmd_hwpt_alloc_nested`` and
``test_cmd_hwpt_invalidate`` helpers. What the kernel reads through a user pointer (the
``iommu_hwpt_selftest`` of a nested allocation, the array of invalidation requests) is a
:class:`UserStructs` in the backend's memory, edited in Python and written out before
each call, as a C test fills a stack array::

    data = selftest_hwpt_data(fd)                      # iotlb = IOMMU_TEST_IOTLB_DEFAULT
    nested = nested_hwpt_alloc(fd, dev_id, parent_id, data)
    reqs = invalidate_requests(fd)                     # iommu_hwpt_invalidate_selftest[2]
    reqs[0].iotlb_id = 1
    assert hwpt_invalidate(fd, nested, reqs.addr, DATA_SELFTEST,
                           reqs.entry_size, 1) == Invalidated(0, 1)

IOMMU_HWPT_INVALIDATE writes ``entry_num`` back on failure too, so
:func:`hwpt_invalidate` returns the errno with it instead of raising.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd
from harness.helpers.selftest import hwpt_alloc

__all__ = [
    "Invalidated",
    "UserStructs",
    "hwpt_invalidate",
    "invalidate_requests",
    "nested_hwpt_alloc",
    "selftest_hwpt_data",
]


class UserStructs:
    """``ctype[count]`` in the backend's user memory: a C test's local array whose address
    the kernel is given. Edit the elements, then :meth:`store` them (the calls below do)."""

    def __init__(self, fd: Iommufd, ctype: str, count: int = 1) -> None:
        self.fd = fd
        self.ctype = ctype
        self.entry_size = int(u.ffi.sizeof(ctype))
        self.count = count
        self.values = u.ffi.new(f"{ctype}[]", count)
        self.addr = fd.backend.alloc(self.entry_size * count, shared=False)

    def __getitem__(self, index: int) -> Any:
        return self.values[index]

    def store(self) -> None:
        """Write the Python-side values into the backend's memory."""
        self.fd.backend.poke(self.addr, bytes(u.ffi.buffer(self.values)))


def selftest_hwpt_data(fd: Iommufd, iotlb: int = u.IOMMU_TEST_IOTLB_DEFAULT) -> UserStructs:
    """A ``struct iommu_hwpt_selftest`` in user memory: the driver data of a nested mock
    HWPT (IOMMU_HWPT_DATA_SELFTEST), whose IOTLB entries all start as ``iotlb``."""
    data = UserStructs(fd, "struct iommu_hwpt_selftest")
    data[0].iotlb = iotlb
    data.store()
    return data


def nested_hwpt_alloc(fd: Iommufd, dev_id: int, pt_id: int, data: UserStructs, flags: int = 0,
                      *, fault_id: int = 0,
                      data_type: int = u.IOMMU_HWPT_DATA_SELFTEST) -> int:
    """IOMMU_HWPT_ALLOC of a nested HWPT on ``pt_id`` (a nest-parent HWPT or a vIOMMU) with
    the driver ``data`` in user memory; returns the HWPT ID (test_cmd_hwpt_alloc_nested).
    With ``IOMMU_HWPT_FAULT_ID_VALID`` in ``flags``, IOPFs go to fault queue ``fault_id``
    (test_cmd_hwpt_alloc_iopf)."""
    data.store()
    return hwpt_alloc(fd, dev_id, pt_id, flags, data_type=data_type, data_uptr=data.addr,
                      data_len=data.entry_size, fault_id=fault_id)


def invalidate_requests(fd: Iommufd, count: int = 2) -> UserStructs:
    """``struct iommu_hwpt_invalidate_selftest[count]``, zeroed, in user memory."""
    return UserStructs(fd, "struct iommu_hwpt_invalidate_selftest", count)


class Invalidated(NamedTuple):
    """What IOMMU_HWPT_INVALIDATE answered: its errno (0 on success) and the
    ``entry_num`` it wrote back, the number of requests the kernel handled."""

    errno: int
    entry_num: int


def hwpt_invalidate(fd: Iommufd, hwpt_id: int, data_uptr: int, data_type: int,
                    entry_len: int, entry_num: int,
                    reqs: UserStructs | None = None) -> Invalidated:
    """IOMMU_HWPT_INVALIDATE of ``entry_num`` requests of ``entry_len`` bytes at
    ``data_uptr`` on nested HWPT (or vIOMMU) ``hwpt_id`` (_test_cmd_hwpt_invalidate).

    ``reqs``, when given, is stored first. Never raises for a kernel errno: the
    ``entry_num`` the kernel writes back matters on failure too.
    """
    if reqs is not None:
        reqs.store()
    cmd = new_cmd("iommu_hwpt_invalidate", {
        "hwpt_id": hwpt_id, "data_uptr": data_uptr, "data_type": data_type,
        "entry_len": entry_len, "entry_num": entry_num,
    })
    try:
        fd.ioctl(u.IOMMU_HWPT_INVALIDATE, cmd)
    except OSError as error:
        return Invalidated(error.errno or 0, int(cmd.entry_num))
    return Invalidated(0, int(cmd.entry_num))
