"""vIOMMU helpers: vIOMMU, vDEVICE, HW queue, vEVENTQ and fault-queue calls.

The Python side of iommufd_utils.h's ``test_cmd_viommu_alloc``, ``test_cmd_vdevice_alloc``,
``test_cmd_hw_queue_alloc``, ``test_cmd_veventq_alloc``, ``test_ioctl_fault_alloc``,
``test_cmd_trigger_iopf``, ``test_cmd_trigger_vevents``, ``test_cmd_read_vevents`` and
``test_cmd_viommu_invalidate``. Every call takes the open
:class:`~harness.helpers.core.Iommufd` first and raises ``OSError`` with the kernel's errno,
so ``with expect_errno(EEXIST):`` wraps any of them::

    viommu_id = viommu_alloc(fd, dev_id, nest_parent_id)
    nested_id = nested_hwpt_alloc(fd, dev_id, viommu_id, selftest_hwpt_data(fd))  # .hwpt
    vdev_id = vdevice_alloc(fd, viommu_id, dev_id, 0x99)
    veventq = veventq_alloc(fd, viommu_id, u.IOMMU_VEVENTQ_TYPE_SELFTEST, depth=2)

Driver data the kernel reads or writes back (``data_uptr``) is a cffi struct here: it is
copied into the backend's memory for the call and the kernel's answer copied back into
it, as the C helpers hand the kernel a pointer to their stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from errno import EFAULT, EINVAL, EIO, EOVERFLOW
from typing import Any, NamedTuple

import uapi_headers as u
from backends.contract import MAP_SHARED, PROT_READ, PROT_WRITE
from harness.helpers.core import Iommufd, new_cmd
from harness.helpers.selftest import run_test_cmd

__all__ = [
    "EntryNum",
    "EventQueue",
    "VeventSequence",
    "fault_alloc",
    "hw_queue_alloc",
    "iommufd_mmap",
    "read_vevents",
    "trigger_iopf",
    "trigger_vevents",
    "vdevice_alloc",
    "veventq_alloc",
    "viommu_alloc",
    "viommu_invalidate",
]

_HEADER = "struct iommufd_vevent_header"
_EVENT = "struct iommu_viommu_event_selftest"
_HEADER_SIZE = u.ffi.sizeof(_HEADER)
_EVENT_SIZE = u.ffi.sizeof(_EVENT)
_U32 = (1 << 32) - 1


class EventQueue(NamedTuple):
    """A FAULT or vEVENTQ object: its ID and the fd events are read from."""

    id: int
    fd: int


@contextmanager
def _in_backend(fd: Iommufd, data: Any) -> Iterator[int]:
    """The backend address of a copy of cffi ``data`` (0 for None) for one ioctl; what
    the kernel wrote there is copied back into ``data`` afterwards."""
    if data is None:
        yield 0
        return
    backend = fd.backend
    raw = u.ffi.buffer(data)
    addr = backend.alloc(len(raw))
    try:
        backend.poke(addr, bytes(raw))
        yield addr
        raw[:] = backend.peek(addr, len(raw))
    finally:
        backend.munmap(addr, len(raw))


# -- vIOMMU ----------------------------------------------------------------------------

def viommu_alloc(fd: Iommufd, dev_id: int, hwpt_id: int,
                 viommu_type: int = u.IOMMU_VIOMMU_TYPE_SELFTEST, data: Any = None,
                 data_len: int | None = None, flags: int = 0) -> int:
    """IOMMU_VIOMMU_ALLOC for device ``dev_id`` over nest-parent HWPT ``hwpt_id``; returns
    the vIOMMU ID (test_cmd_viommu_alloc).

    ``data`` is the driver's struct (``struct iommu_viommu_selftest *``), sent with
    ``data_len`` (default: its size) and updated with what the driver reports back.
    """
    length = 0 if data is None else u.ffi.sizeof(data[0]) if data_len is None else data_len
    with _in_backend(fd, data) as uptr:
        cmd = new_cmd("iommu_viommu_alloc", {
            "flags": flags, "type": viommu_type, "dev_id": dev_id, "hwpt_id": hwpt_id,
            "data_uptr": uptr, "data_len": length})
        fd.ioctl(u.IOMMU_VIOMMU_ALLOC, cmd)
    return int(cmd.out_viommu_id)


def iommufd_mmap(fd: Iommufd, length: int, offset: int) -> int:
    """mmap() of a driver region of the iommufd (read/write, shared); returns the address
    (test_err_mmap's call). Only the exact offset and length of a region map (ENXIO)."""
    return fd.backend.mmap(fd.fd, length, offset, PROT_READ | PROT_WRITE, MAP_SHARED)


@dataclass
class EntryNum:
    """``entry_num`` of IOMMU_HWPT_INVALIDATE, in and out: the entries sent, then the
    entries the kernel handled (written back on failure too), like the C helpers'
    ``uint32_t *nreqs``."""

    value: int


def viommu_invalidate(fd: Iommufd, viommu_id: int, reqs: Any, entry_len: int,
                      num: EntryNum,
                      data_type: int = u.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) -> None:
    """IOMMU_HWPT_INVALIDATE of vIOMMU ``viommu_id`` with the request array ``reqs`` (a
    cffi array, None for a NULL pointer) of ``entry_len``-byte entries
    (test_cmd_viommu_invalidate); ``num`` carries the count both ways."""
    with _in_backend(fd, reqs) as uptr:
        cmd = new_cmd("iommu_hwpt_invalidate", {
            "hwpt_id": viommu_id, "data_type": data_type, "data_uptr": uptr,
            "entry_len": entry_len, "entry_num": num.value})
        try:
            fd.ioctl(u.IOMMU_HWPT_INVALIDATE, cmd)
        finally:
            num.value = int(cmd.entry_num)


# -- vDEVICE and HW queue ---------------------------------------------------------------

def vdevice_alloc(fd: Iommufd, viommu_id: int, dev_id: int, virt_id: int) -> int:
    """IOMMU_VDEVICE_ALLOC: device ``dev_id`` as ``virt_id`` on the vIOMMU; returns the
    vDEVICE ID (test_cmd_vdevice_alloc)."""
    cmd = new_cmd("iommu_vdevice_alloc", {
        "viommu_id": viommu_id, "dev_id": dev_id, "virt_id": virt_id})
    fd.ioctl(u.IOMMU_VDEVICE_ALLOC, cmd)
    return int(cmd.out_vdevice_id)


def hw_queue_alloc(fd: Iommufd, viommu_id: int, queue_type: int, index: int,
                   base_addr: int, length: int) -> int:
    """IOMMU_HW_QUEUE_ALLOC of queue ``index`` in the nest parent's memory at IOVA
    ``base_addr``; returns the HW queue ID (test_cmd_hw_queue_alloc)."""
    cmd = new_cmd("iommu_hw_queue_alloc", {
        "viommu_id": viommu_id, "type": queue_type, "index": index,
        "nesting_parent_iova": base_addr, "length": length})
    fd.ioctl(u.IOMMU_HW_QUEUE_ALLOC, cmd)
    return int(cmd.out_hw_queue_id)


# -- event queues -----------------------------------------------------------------------

def fault_alloc(fd: Iommufd) -> EventQueue:
    """IOMMU_FAULT_QUEUE_ALLOC (test_ioctl_fault_alloc): neither the ID nor the fd is 0."""
    cmd = new_cmd("iommu_fault_alloc")
    fd.ioctl(u.IOMMU_FAULT_QUEUE_ALLOC, cmd)
    queue = EventQueue(int(cmd.out_fault_id), int(cmd.out_fault_fd))
    assert queue.id != 0, "IOMMU_FAULT_QUEUE_ALLOC returned fault ID 0"
    assert queue.fd != 0, "IOMMU_FAULT_QUEUE_ALLOC returned fd 0"
    return queue


def veventq_alloc(fd: Iommufd, viommu_id: int, veventq_type: int, depth: int) -> EventQueue:
    """IOMMU_VEVENTQ_ALLOC of a ``depth``-event queue of ``veventq_type`` on the vIOMMU
    (test_cmd_veventq_alloc)."""
    cmd = new_cmd("iommu_veventq_alloc", {
        "type": veventq_type, "veventq_depth": depth, "viommu_id": viommu_id})
    fd.ioctl(u.IOMMU_VEVENTQ_ALLOC, cmd)
    return EventQueue(int(cmd.out_veventq_id), int(cmd.out_veventq_fd))


def trigger_iopf(fd: Iommufd, dev_id: int, fault_fd: int, pasid: int = 0x1) -> None:
    """test_cmd_trigger_iopf(): have the mock device raise a read/write page request
    (group 2, address 0xdeadbeaf), read it from ``fault_fd`` and answer it SUCCESS
    with its cookie. A failed or empty read or write is EIO, as in the C helper."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_TRIGGER_IOPF, trigger_iopf={
        "dev_id": dev_id, "pasid": pasid, "grpid": 0x2,
        "perm": u.IOMMU_PGFAULT_PERM_READ | u.IOMMU_PGFAULT_PERM_WRITE,
        "addr": 0xDEADBEAF})
    backend = fd.backend
    size = u.ffi.sizeof("struct iommu_hwpt_pgfault")
    try:
        raw = backend.read(fault_fd, size)
    except OSError as error:
        raise OSError(EIO, f"read of the fault queue failed: {error}") from error
    if not raw:
        raise OSError(EIO, "the fault queue had nothing to read")
    fault = u.ffi.from_buffer("struct iommu_hwpt_pgfault *", bytearray(raw.ljust(size, b"\0")))
    response = u.ffi.new("struct iommu_hwpt_page_response *", {
        "cookie": fault.cookie, "code": u.IOMMUFD_PAGE_RESP_SUCCESS})
    try:
        written = backend.write(fault_fd, bytes(u.ffi.buffer(response)))
    except OSError as error:
        raise OSError(EIO, f"write of the page response failed: {error}") from error
    if written <= 0:
        raise OSError(EIO, "the page response was not taken")


def trigger_vevents(fd: Iommufd, dev_id: int, nvevents: int) -> None:
    """test_cmd_trigger_vevents(): ``nvevents`` TRIGGER_VEVENTs for the device, each
    reporting its virtual ID to the SELFTEST vEVENTQ of its vIOMMU."""
    for _ in range(nvevents):
        run_test_cmd(fd, u.IOMMU_TEST_OP_TRIGGER_VEVENT, trigger_vevent={"dev_id": dev_id})


@dataclass
class VeventSequence:
    """The last vEVENT sequence number read (the C tests' ``int prev_seq``, from -1)."""

    prev: int = -1


def read_vevents(fd: Iommufd, event_fd: int, nvevents: int, virt_id: int,
                 seq: VeventSequence) -> None:
    """test_cmd_read_vevents(): read ``nvevents`` SELFTEST vEVENTs in one read().

    Each header must carry no LOST_EVENTS flag and the sequence number after
    ``seq.prev`` (EOVERFLOW otherwise, ``seq`` then at the header that broke the run);
    the event must name ``virt_id`` (EINVAL). Like the C helper, it reads the event
    right after the first header for every header. The C helper polls for up to a
    second first: here every event is reported by the ioctl before this read.
    """
    record = _HEADER_SIZE + _EVENT_SIZE
    try:
        raw = fd.backend.read(event_fd, nvevents * record)
    except OSError as error:
        raise OSError(EFAULT, f"read of the vEVENTQ failed: {error}") from error
    if not raw:
        raise OSError(EFAULT, "the vEVENTQ had nothing to read")
    # The C helper reads into a zeroed buffer of the full size.
    data = bytearray(raw.ljust(nvevents * record, b"\0"))
    first_event = u.ffi.from_buffer(f"{_EVENT} *", data[_HEADER_SIZE:record])
    for i in range(nvevents):
        hdr = u.ffi.from_buffer(f"{_HEADER} *", data[i * record:i * record + _HEADER_SIZE])
        sequence = int(hdr.sequence)
        if hdr.flags & u.IOMMU_VEVENTQ_FLAG_LOST_EVENTS or \
                (sequence - seq.prev) & _U32 > 1:
            seq.prev = sequence
            raise OSError(EOVERFLOW, f"vEVENT {i}: events were lost (sequence {sequence})")
        seq.prev = sequence
        if first_event.virt_id != virt_id:
            raise OSError(EINVAL, f"vEVENT {i}: virt_id {int(first_event.virt_id):#x}, "
                                  f"expected {virt_id:#x}")
