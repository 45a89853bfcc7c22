"""The vIOMMU model beyond what iommufd_viommu checks; every expectation is read off the
7.3.4 sources (viommu.c, eventq.c, driver.c, main.c, selftest.c) as cited."""

from __future__ import annotations

from errno import EBUSY, EEXIST, EINVAL, ENOENT, ENXIO, ESPIPE

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from harness.helpers import (
    EntryNum,
    Ioas,
    Iommufd,
    expect_errno,
    fault_alloc,
    hw_queue_alloc,
    hwpt_alloc,
    iommufd_mmap,
    mock_domain,
    nested_hwpt_alloc,
    run_test_cmd,
    selftest_hwpt_data,
    trigger_iopf,
    trigger_vevents,
    vdevice_alloc,
    veventq_alloc,
    viommu_alloc,
    viommu_invalidate,
)
from harness.helpers import mock_domain_replace as replace
from tests.mock.helpers import fail_nth_sweep

PAGE_SIZE = 4096
PGFAULT_SIZE = u.ffi.sizeof("struct iommu_hwpt_pgfault")
HDR = u.ffi.sizeof("struct iommufd_vevent_header")
EVENT = u.ffi.sizeof("struct iommu_viommu_event_selftest")


class Setup:
    """A mock device on an IOAS, a nest parent, a vIOMMU and a nested HWPT on it."""

    def __init__(self, fd: Iommufd) -> None:
        self.fd = fd
        self.ioas = Ioas.alloc(fd)
        self.stdev, _, self.idev = mock_domain(fd, self.ioas.id)
        self.parent = hwpt_alloc(fd, self.idev, self.ioas.id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.viommu = viommu_alloc(fd, self.idev, self.parent)
        self.nested = nested_hwpt_alloc(fd, self.idev, self.viommu, selftest_hwpt_data(fd))


@pytest.fixture
def s(be: MockBackend) -> Setup:
    return Setup(Iommufd.open(be))


def test_split_mapping_holds_the_viommu_until_the_last_piece(s: Setup) -> None:
    # A VMA split runs vm_ops->open for the new piece (main.c iommufd_fops_vma_open):
    # each piece holds the owner until it is unmapped.
    data = u.ffi.new("struct iommu_viommu_selftest *", {"in_data": 7})
    viommu = viommu_alloc(s.fd, s.idev, s.parent, data=data)
    length = int(data.out_mmap_length)
    assert int(data.out_mmap_offset) == PAGE_SIZE  # the first page is never handed out
    # mmap(2) rounds the length up to pages (do_mmap) before the fop compares it.
    addr = iommufd_mmap(s.fd, length - 1, int(data.out_mmap_offset))
    s.fd.backend.munmap(addr, PAGE_SIZE)
    with expect_errno(EBUSY):
        s.fd.destroy(viommu)
    s.fd.backend.munmap(addr + PAGE_SIZE, PAGE_SIZE)
    s.fd.destroy(viommu)
    # The region went with its owner.
    with expect_errno(ENXIO):
        iommufd_mmap(s.fd, length, int(data.out_mmap_offset))


def test_vdevice_rules(s: Setup) -> None:
    fd = s.fd
    # A vIOMMU with a vDEVICE or a nested HWPT cannot go; nor the parent under it.
    vdev = vdevice_alloc(fd, s.viommu, s.idev, 0x10)
    with expect_errno(EBUSY):
        fd.destroy(s.viommu)
    # One virtual ID per vIOMMU (viommu.c xa_insert -> EEXIST), one vDEVICE per device.
    _, _, idev2 = mock_domain(fd, s.ioas.id)
    with expect_errno(EEXIST):
        vdevice_alloc(fd, s.viommu, idev2, 0x10)
    vdev2 = vdevice_alloc(fd, s.viommu, idev2, 0x20)
    fd.destroy(vdev)
    fd.destroy(vdev2)
    fd.destroy(s.nested)
    with expect_errno(EBUSY):
        fd.destroy(s.parent)
    fd.destroy(s.viommu)
    fd.destroy(s.parent)


def test_fault_queue_read_write_rules(s: Setup) -> None:
    fd, be = s.fd, s.fd.backend
    fault = fault_alloc(fd)
    iopf = nested_hwpt_alloc(fd, s.idev, s.viommu, selftest_hwpt_data(fd),
                             u.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault.id)
    vdevice_alloc(fd, s.viommu, s.idev, 0x99)
    replace(fd, s.stdev, iopf)
    # The fd holds the queue (eventq.c iommufd_eventq_init takes a users reference).
    with expect_errno(EBUSY):
        fd.destroy(fault.id)
    run_test_cmd(fd, u.IOMMU_TEST_OP_TRIGGER_IOPF, trigger_iopf={
        "dev_id": s.idev, "pasid": 0, "grpid": 5, "perm": 1, "addr": 0x1000})
    with expect_errno(ESPIPE):  # not a multiple of the record
        be.read(fault.fd, PGFAULT_SIZE - 1)
    with expect_errno(EINVAL):  # the group does not fit
        be.read(fault.fd, 0)
    raw = be.read(fault.fd, 2 * PGFAULT_SIZE)
    assert len(raw) == PGFAULT_SIZE
    record = u.ffi.from_buffer("struct iommu_hwpt_pgfault *", bytearray(raw))
    assert (record.dev_id, record.grpid, record.addr, record.cookie) == (s.idev, 5, 0x1000, 1)
    # PASID 0 is no PASID: only the last-page flag.
    assert record.flags == u.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    assert be.read(fault.fd, PGFAULT_SIZE) == b""
    bad = u.ffi.new("struct iommu_hwpt_page_response *", {"cookie": 1, "code": 7})
    with expect_errno(EINVAL):
        be.write(fault.fd, bytes(u.ffi.buffer(bad)))
    # Leaving the HWPT answers the unanswered fault (iommufd_auto_response_faults):
    # its cookie is gone.
    replace(fd, s.stdev, s.ioas.id)
    ok = u.ffi.new("struct iommu_hwpt_page_response *", {"cookie": 1, "code": 0})
    with expect_errno(EINVAL):
        be.write(fault.fd, bytes(u.ffi.buffer(ok)))
    fd.destroy(iopf)
    be.close(fault.fd)
    fd.destroy(fault.id)


def test_lost_events_header_tracks_the_latest_sequence(s: Setup) -> None:
    # Once full, each further event re-queues the one lost-events header with the next
    # sequence number (iommufd_private.h iommufd_vevent_handler).
    fd, be = s.fd, s.fd.backend
    veventq = veventq_alloc(fd, s.viommu, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 1)
    vdevice_alloc(fd, s.viommu, s.idev, 0x42)
    replace(fd, s.stdev, s.nested)
    trigger_vevents(fd, s.idev, 4)
    raw = be.read(veventq.fd, 64)
    assert len(raw) == HDR + EVENT + HDR
    flags0, seq0, virt_id = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    flags1, seq1 = (int.from_bytes(raw[i:i + 4], "little") for i in (12, 16))
    assert (flags0, seq0, virt_id) == (0, 0, 0x42)
    assert (flags1, seq1) == (u.IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 3)
    # A read too short for a header leaves the event queued.
    trigger_vevents(fd, s.idev, 2)
    raw = be.read(veventq.fd, HDR + EVENT + HDR - 1)
    assert len(raw) == HDR + EVENT
    assert int.from_bytes(raw[4:8], "little") == 4
    raw = be.read(veventq.fd, 64)
    assert int.from_bytes(raw[0:4], "little") == u.IOMMU_VEVENTQ_FLAG_LOST_EVENTS
    assert int.from_bytes(raw[4:8], "little") == 5
    replace(fd, s.stdev, s.ioas.id)
    # No vIOMMU behind the device any more (selftest.c trigger_vevent).
    with expect_errno(ENOENT):
        trigger_vevents(fd, s.idev, 1)
    be.close(veventq.fd)


def test_closing_iommufd_waits_for_event_fds(s: Setup) -> None:
    # An event fd holds the context (iommufd_ctx_get in iommufd_eventq_init): the
    # objects live until it is closed, then everything goes without a WARN.
    fd, be = s.fd, s.fd.backend
    veventq = veventq_alloc(fd, s.viommu, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 4)
    fd.close()
    assert be.read(veventq.fd, 64) == b""
    be.close(veventq.fd)


def _viommu_chain(be: MockBackend, buf: int, nth: int) -> None:
    """fail_nth's ``device`` chain, vIOMMU part: armed after the IOAS and the device."""
    fd = Iommufd.open(be)
    ioas = Ioas.alloc(fd)
    stdev, _, idev = mock_domain(fd, ioas.id)
    be.fail_nth_write(nth)
    parent = hwpt_alloc(fd, idev, ioas.id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    data = u.ffi.new("struct iommu_viommu_selftest *", {"in_data": 1})
    viommu = viommu_alloc(fd, idev, parent, data=data)
    vdevice_alloc(fd, viommu, idev, 0x99)
    iova = ioas.map(buf, PAGE_SIZE)
    hw_queue_alloc(fd, viommu, u.IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, PAGE_SIZE)
    fault = fault_alloc(fd)
    nested = nested_hwpt_alloc(fd, idev, viommu, selftest_hwpt_data(fd),
                               u.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault.id)
    veventq = veventq_alloc(fd, viommu, u.IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
    replace(fd, stdev, nested)
    trigger_vevents(fd, idev, 3)
    be.read(veventq.fd, 64)
    trigger_iopf(fd, idev, fault.fd)
    reqs = u.ffi.new("struct iommu_viommu_invalidate_selftest[1]", [{"vdev_id": 0x99}])
    viommu_invalidate(fd, viommu, reqs, u.ffi.sizeof(reqs[0]), EntryNum(1))
    addr = iommufd_mmap(fd, int(data.out_mmap_length), int(data.out_mmap_offset))
    be.munmap(addr, int(data.out_mmap_length))
    replace(fd, stdev, ioas.id)


def test_fail_nth_sweep_of_the_viommu_chain_unwinds_cleanly() -> None:
    be = MockBackend()
    buf = be.alloc(PAGE_SIZE)
    nth = fail_nth_sweep(be, lambda n: _viommu_chain(be, buf, n), buf, PAGE_SIZE)
    assert nth > 30  # the chain walks the vIOMMU's fault points
    _viommu_chain(be, buf, 0)  # and works without injection
    be.shutdown()
    assert be.warnings == []
