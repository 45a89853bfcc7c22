"""The fault-queue and vIOMMU calls the nested-HWPT and PASID cases make.

alloc_hwpt_nested and pasid_attach also exercise objects the vIOMMU work models: a fault
queue that receives an I/O page fault (test_ioctl_fault_alloc, test_cmd_trigger_iopf)
and a vIOMMU to allocate a nested HWPT on (test_cmd_viommu_alloc). These are the same
calls, under the same names and signatures, as the vIOMMU helper module's, so a test
reads the same with either import::

    queue = fault_alloc(fd)                            # EventQueue(id, fd)
    trigger_iopf(fd, dev_id, queue.fd, pasid=2048)     # raise, read, answer SUCCESS
    viommu_id = viommu_alloc(fd, dev_id, parent_hwpt_id)
"""

from __future__ import annotations

from errno import EIO
from typing import NamedTuple

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd
from harness.helpers.selftest import run_test_cmd

__all__ = ["EventQueue", "fault_alloc", "trigger_iopf", "viommu_alloc"]


class EventQueue(NamedTuple):
    """A FAULT object: its ID and the fd its events are read from."""

    id: int
    fd: int


def fault_alloc(fd: Iommufd) -> EventQueue:
    """IOMMU_FAULT_QUEUE_ALLOC (test_ioctl_fault_alloc): neither the ID nor the fd is 0."""
    cmd = new_cmd("iommu_fault_alloc")
    fd.ioctl(u.IOMMU_FAULT_QUEUE_ALLOC, cmd)
    queue = EventQueue(int(cmd.out_fault_id), int(cmd.out_fault_fd))
    assert queue.id != 0, "IOMMU_FAULT_QUEUE_ALLOC returned fault ID 0"
    assert queue.fd != 0, "IOMMU_FAULT_QUEUE_ALLOC returned fd 0"
    return queue


def trigger_iopf(fd: Iommufd, dev_id: int, fault_fd: int, pasid: int = 0x1) -> None:
    """test_cmd_trigger_iopf(): the mock device raises a read/write page request (group 2,
    address 0xdeadbeaf) on ``pasid``; read it from ``fault_fd`` and answer SUCCESS with its
    cookie. An empty read or write is EIO, as in the C helper."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_TRIGGER_IOPF, trigger_iopf={
        "dev_id": dev_id, "pasid": pasid, "grpid": 0x2,
        "perm": u.IOMMU_PGFAULT_PERM_READ | u.IOMMU_PGFAULT_PERM_WRITE,
        "addr": 0xDEADBEAF})
    backend = fd.backend
    size = u.ffi.sizeof("struct iommu_hwpt_pgfault")
    raw = backend.read(fault_fd, size)
    if not raw:
        raise OSError(EIO, "the fault queue had nothing to read")
    fault = u.ffi.from_buffer("struct iommu_hwpt_pgfault *", bytearray(raw.ljust(size, b"\0")))
    response = u.ffi.new("struct iommu_hwpt_page_response *", {
        "cookie": fault.cookie, "code": u.IOMMUFD_PAGE_RESP_SUCCESS})
    if backend.write(fault_fd, bytes(u.ffi.buffer(response))) <= 0:
        raise OSError(EIO, "the page response was not taken")


def viommu_alloc(fd: Iommufd, dev_id: int, hwpt_id: int,
                 viommu_type: int = u.IOMMU_VIOMMU_TYPE_SELFTEST) -> int:
    """IOMMU_VIOMMU_ALLOC for device ``dev_id`` over nest-parent HWPT ``hwpt_id``, without
    driver data; returns the vIOMMU ID (test_cmd_viommu_alloc)."""
    cmd = new_cmd("iommu_viommu_alloc", {
        "type": viommu_type, "dev_id": dev_id, "hwpt_id": hwpt_id})
    fd.ioctl(u.IOMMU_VIOMMU_ALLOC, cmd)
    return int(cmd.out_viommu_id)
