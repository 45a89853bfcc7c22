"""The lockstep comparison: handles mapped, divergences caught and named, known ones reported.

The second side is the mock itself or a copy of it with one deliberately wrong rule
(tests/framework/wrong_mock.py); expectations come from the kernel (an IOAS map of any
length in the mock aperture succeeds; 7.3.4's DMABUF_GET returns 0, see the known issues).
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

import uapi_headers as u
from backends import BackendError, open_backend, parse_spec
from backends.compare import CompareBackend, Divergence
from backends.compare.fields import Kind
from backends.compare.handles import HandleMaps
from backends.compare.known import load
from backends.contract import IoctlArg
from backends.mock import MockBackend
from harness.helpers.core import new_cmd
from harness.helpers.selftest import test_cmd
from tests.framework.wrong_mock import WRONG_LIMIT, WrongRuleMock


def _pair(secondary: Any = None, primary: Any = None, **kw: Any) -> CompareBackend:
    pair = CompareBackend(primary or MockBackend(), secondary or MockBackend(), **kw)
    pair.secondary.spec = "second"
    return pair


def _ioas_alloc(be: Any, fd: int) -> int:
    cmd = new_cmd("iommu_ioas_alloc")
    be.ioctl(fd, u.IOMMU_IOAS_ALLOC, cmd)
    return int(cmd.out_ioas_id)


def _map(be: Any, fd: int, ioas: int, buf: int, length: int) -> Any:
    cmd = new_cmd("iommu_ioas_map", {
        "ioas_id": ioas, "user_va": buf, "length": length,
        "flags": u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE})
    be.ioctl(fd, u.IOMMU_IOAS_MAP, cmd)
    return cmd


def test_spec_opens_a_pair_and_rejects_bad_ones():
    assert parse_spec("compare:kernel+mock") == ("compare", "kernel+mock")
    with pytest.raises(BackendError, match="compare:A\\+B"):
        parse_spec("compare:mock")
    with pytest.raises(BackendError, match="unknown backend 'mok'"):
        parse_spec("compare:mock+mok")
    with open_backend("compare:mock+mock") as pair:
        assert isinstance(pair, CompareBackend)
        assert pair.spec == "compare:mock+mock"


def test_ids_fds_and_addresses_are_mapped_not_compared_raw():
    pair = _pair()
    # Skew the secondary: an extra fd and an extra object before the pair starts.
    pair.secondary.open("/dev/iommu")
    fd = pair.open("/dev/iommu")
    sfd = pair.maps.to_secondary(Kind.FD, 0, fd)
    assert sfd != fd
    _ioas_alloc(pair.secondary, sfd)
    buf = pair.alloc(16 * 4096)
    ioas = _ioas_alloc(pair, fd)
    cmd = _map(pair, fd, ioas, buf, 4 * 4096)
    assert cmd.iova  # the primary's answer came back
    pair.ioctl(fd, u.IOMMU_DESTROY, new_cmd("iommu_destroy", {"id": ioas}))
    assert pair.divergences == 0
    assert pair.calls == 5


def test_wrong_rule_is_caught_at_the_call_with_both_results_and_the_rule():
    pair = _pair(WrongRuleMock())
    fd = pair.open("/dev/iommu")
    buf = pair.alloc(64 * 4096)
    ioas = _ioas_alloc(pair, fd)
    _map(pair, fd, ioas, buf, WRONG_LIMIT)  # at the limit: both map it
    with pytest.raises(Divergence) as info:
        _map(pair, fd, ioas, buf, WRONG_LIMIT + 4096)
    divergence = info.value
    assert divergence.call == "IOMMU_IOAS_MAP"
    assert divergence.what == "errno"
    assert divergence.attempts[0].errno == 0
    assert divergence.attempts[1].errno == errno.EINVAL
    assert divergence.rules[0] is None  # nothing failed on the first side
    assert "wrong_mock.py" in (divergence.rules[1] or "")
    assert "the injected wrong rule" in str(divergence)
    assert "mock: ok, returned 0" in str(divergence)
    assert "second: errno 22 EINVAL" in str(divergence)


class _SkewedOutput(MockBackend):
    """Reports one more byte of IOVA alignment than it should."""

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        try:
            return super().ioctl(fd, request, arg)
        finally:
            if request == u.IOMMU_IOAS_IOVA_RANGES:
                arg.out_iova_alignment += 1


def test_output_field_difference_names_the_field():
    pair = _pair(_SkewedOutput())
    fd = pair.open("/dev/iommu")
    ioas = _ioas_alloc(pair, fd)
    cmd = new_cmd("iommu_ioas_iova_ranges", {"ioas_id": ioas})  # no room: EMSGSIZE
    with pytest.raises(Divergence, match="out_iova_alignment: 0x1 vs 0x2"):
        pair.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, cmd)


def test_written_back_and_peeked_memory_is_compared():
    pair = _pair()
    fd = pair.open("/dev/iommu")
    ranges = pair.alloc(4096)
    ioas = _ioas_alloc(pair, fd)
    cmd = new_cmd("iommu_ioas_iova_ranges", {"ioas_id": ioas, "num_iovas": 4,
                                             "allowed_iovas": ranges})
    pair.ioctl(fd, u.IOMMU_IOAS_IOVA_RANGES, cmd)   # written on both, the same
    assert pair.divergences == 0
    pair.secondary.poke(pair.maps.to_secondary(Kind.ADDR, 0, ranges), b"\x01")
    with pytest.raises(Divergence, match="memory differs"):
        pair.peek(ranges, 16)


class _Dmabuf(MockBackend):
    """A mock whose IOMMU_TEST_OP_DMABUF_GET answers like a kernel of ``release``:
    7.3.x returns 0, 7.2 returns the new fd (a memfd stands in for the dma-buf)."""

    def __init__(self, release: str) -> None:
        super().__init__()
        self.release = release

    @property
    def kernel_release(self) -> str:
        return self.release

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        if request == u.IOMMU_TEST_CMD and arg.op == u.IOMMU_TEST_OP_DMABUF_GET:
            new_fd = self.memfd(int(arg.dmabuf_get.length))
            return 0 if self.release.startswith("7.3.") else new_fd
        return super().ioctl(fd, request, arg)


def test_dmabuf_get_return_is_a_known_divergence_on_7_3():
    assert any(k.call == "IOMMU_TEST_CMD/IOMMU_TEST_OP_DMABUF_GET" and k.what == "return"
               for k in load())
    pair = _pair(_Dmabuf("mock"), _Dmabuf("7.3.4"))
    fd = pair.open("/dev/iommu")
    cmd = test_cmd(u.IOMMU_TEST_OP_DMABUF_GET, dmabuf_get={"length": 4096})
    assert pair.ioctl(fd, u.IOMMU_TEST_CMD, cmd) == 0      # the primary's answer
    assert pair.divergences == 1 and pair.known_count == 1
    reported = pair.reported[0]
    assert reported.call == "IOMMU_TEST_CMD/IOMMU_TEST_OP_DMABUF_GET"
    assert "returned 0 vs" in reported.detail
    assert "7.3.x" in (reported.reason or "")


def test_dmabuf_get_return_fails_where_it_is_not_known():
    pair = _pair(_Dmabuf("7.2.13"), _Dmabuf("7.3.4"), known=[])
    fd = pair.open("/dev/iommu")
    cmd = test_cmd(u.IOMMU_TEST_OP_DMABUF_GET, dmabuf_get={"length": 4096})
    with pytest.raises(Divergence, match="return differs"):
        pair.ioctl(fd, u.IOMMU_TEST_CMD, cmd)


def test_dmabuf_fds_returned_by_both_are_mapped():
    pair = _pair(_Dmabuf("7.2.13"), _Dmabuf("7.2.13"), known=[])
    pair.secondary.open("/dev/iommu")  # the secondary's fds are numbered one higher
    fd = pair.open("/dev/iommu")
    cmd = test_cmd(u.IOMMU_TEST_OP_DMABUF_GET, dmabuf_get={"length": 4096})
    dmabuf = pair.ioctl(fd, u.IOMMU_TEST_CMD, cmd)
    pair.close(dmabuf)
    assert pair.divergences == 0


def test_errno_under_armed_fault_injection_is_not_compared():
    pair = _pair()
    fd = pair.open("/dev/iommu")
    pair.secondary.fail_nth_write(1)          # only the secondary fails its next point
    with pair.tolerant():
        _ioas_alloc_or_errno(pair, fd)
    pair.secondary.fail_nth_write(0)
    assert pair.divergences == 0


def _ioas_alloc_or_errno(pair: CompareBackend, fd: int) -> None:
    try:
        _ioas_alloc(pair, fd)
    except OSError:
        pass


def test_short_argument_is_compared_through_the_command_table():
    pair = _pair()
    fd = pair.open("/dev/iommu")
    arg = u.ffi.new("uint8_t[]", 12)
    arg[0] = 24
    with pytest.raises(OSError) as info:
        pair.ioctl(fd, u.IOMMU_IOAS_ALLOC, arg)
    assert info.value.errno == errno.EFAULT
    assert pair.divergences == 0


def test_fault_records_carry_device_ids_through_the_maps():
    """A fault queue's records name devices by ID: the secondary's are read in the
    primary's numbering before the bytes are compared (no model of the queue yet, so
    the records are made here)."""
    pair = _pair()
    size = u.ffi.sizeof("struct iommu_hwpt_pgfault")
    pair.maps.bind(Kind.ID, 3, 5, 9, (1, "out_idev_id"))   # device 5 here is 9 there
    pair._fault_fds[7] = 3                                 # fault fd 7 of iommufd fd 3
    record = u.ffi.new("struct iommu_hwpt_pgfault *", {"dev_id": 9, "addr": 0x1000})
    secondary = bytes(u.ffi.buffer(record)) * 2
    primary = pair._fault_records_to_primary(7, secondary)
    back = u.ffi.from_buffer("struct iommu_hwpt_pgfault[]", bytearray(primary))
    assert [back[i].dev_id for i in range(2)] == [5, 5]
    assert back[1].addr == 0x1000 and len(primary) == 2 * size
    assert pair._fault_records_to_primary(8, secondary) == secondary  # not a fault fd


def test_an_address_at_the_end_of_one_buffer_and_the_start_of_the_next_is_the_next():
    """Found in the lockstep suite run: a 4 MiB buffer, unmapped, ended exactly where the
    session's shared buffer began; the start of the latter must map to its own region."""
    maps = HandleMaps()
    maps.add_region(0x10000, 0xA0000, 0x1000, origin=1)    # the shared buffer
    maps.add_region(0xF000, 0x50000, 0x1000, origin=2)     # ends at its start
    maps.unmapped(0xF000, 0x1000)
    assert maps.to_secondary(Kind.ADDR, 0, 0x10000) == 0xA0000
    assert maps.to_secondary(Kind.ADDR, 0, 0xF800) == 0x50800   # unmapped: still paired
    assert maps.to_secondary(Kind.ADDR, 0, 0x11000) == 0xA1000  # an end pointer
    assert maps.to_primary(Kind.ADDR, 0, 0xA0000) == 0x10000
    assert maps.to_secondary(Kind.ADDR, 0, 0x999999) == 0x999999  # unknown: unchanged


def test_a_forked_child_pair_runs_in_lockstep_with_the_parents_maps():
    pair = _pair()
    # Skew the secondary, so that the child's calls only agree through the maps.
    pair.secondary.open("/dev/iommu")
    fd = pair.open("/dev/iommu")
    buf = pair.alloc(16 * 4096)
    ioas = _ioas_alloc(pair, fd)
    child = pair.fork_child()
    try:
        assert isinstance(child, CompareBackend) and child is not pair
        _map(child, fd, ioas, buf, 4 * 4096)  # the inherited fd and memory, mapped
        with pytest.raises(OSError) as refused:  # and an errno both agree on
            child.ioctl(fd, u.IOMMU_DESTROY, new_cmd("iommu_destroy", {"id": 999}))
        assert refused.value.errno == errno.ENOENT
    finally:
        child.shutdown()
    # One numbering and one report for the pair and its child.
    assert pair.calls == child.calls == 6 and pair.divergences == 0


def test_a_divergence_in_a_forked_child_is_the_pairs():
    pair = _pair()
    fd = pair.open("/dev/iommu")
    child = pair.fork_child()
    try:
        assert isinstance(child, CompareBackend)
        child.secondary.close(pair.maps.to_secondary(Kind.FD, 0, fd))  # only one side's
        with pytest.raises(Divergence) as diverged:
            _ioas_alloc(child, fd)
        assert "errno differs" in str(diverged.value)
    finally:
        child.shutdown()
    assert pair.divergences == 1


def test_what_differs_after_a_known_divergence_in_that_case_is_its_consequence():
    pair = _pair(_Dmabuf("mock"), _Dmabuf("7.3.4"))
    pair.begin_case()
    fd = pair.open("/dev/iommu")
    pair.ioctl(fd, u.IOMMU_TEST_CMD, test_cmd(u.IOMMU_TEST_OP_DMABUF_GET,
                                              dmabuf_get={"length": 4096}))
    # The case goes on from different state: what then differs is reported, not failed.
    pair.secondary.close(pair.maps.to_secondary(Kind.FD, 0, fd))
    _ioas_alloc(pair, fd)
    assert pair.divergences == 2 and pair.known_count == 2
    assert "follows the known divergence at call #2" in (pair.reported[1].reason or "")
    # A new case starts clean: the same difference fails it.
    pair.begin_case()
    with pytest.raises(Divergence, match="errno differs"):
        _ioas_alloc(pair, fd)


def test_what_only_the_secondary_made_under_fault_injection_is_undone():
    # The primary fails the call (its fault point is reached), the secondary's is not:
    # the caller sees the failure, so the secondary's new fd and object must go, or they
    # keep its context (and the pages its objects pin) alive after the caller's close.
    pair = _pair()
    fd = pair.open("/dev/iommu")
    sfd = pair.maps.to_secondary(Kind.FD, 0, fd)
    pair.fail_nth_write(1)
    pair.secondary.fail_nth_write(0)
    with pytest.raises(OSError) as failed:
        pair.ioctl(fd, u.IOMMU_FAULT_QUEUE_ALLOC, new_cmd("iommu_fault_alloc"))
    assert failed.value.errno == errno.ENOMEM
    pair.fail_nth_write(0)
    with pytest.raises(OSError) as gone:  # the secondary's fault object was destroyed
        pair.secondary.ioctl(sfd, u.IOMMU_DESTROY, new_cmd("iommu_destroy", {"id": 1}))
    assert gone.value.errno == errno.ENOENT
    with pytest.raises(OSError) as closed:  # and its fd closed
        pair.secondary.close(sfd + 1)
    assert closed.value.errno == errno.EBADF


def test_a_childs_look_at_its_parents_pins_reads_the_parent_on_both_sides():
    # change_process: the child reads VmPin of its parent by pid, pids differ per side.
    pair = _pair()
    fd = pair.open("/dev/iommu")
    buf = pair.alloc(4 * 4096)
    ioas = _ioas_alloc(pair, fd)
    _map(pair, fd, ioas, buf, 4096)
    parent = pair.getpid()
    child = pair.fork_child()
    try:
        assert isinstance(child, CompareBackend)
        me = child.getpid()
        assert me != parent
        child.proc_status("VmPin", parent)  # compared: raises on a mismatch
        child.proc_status("VmPin", me)
        assert child._pids[parent] == pair.secondary.getpid()
        assert child._pids[me] == child.secondary.getpid()
    finally:
        child.shutdown()
    assert pair.divergences == 0


def test_a_pasid_attachment_only_the_secondary_made_under_fault_injection_is_detached():
    from harness.helpers.core import Iommufd
    from harness.helpers.ioas import Ioas
    from harness.helpers.pasid import pasid_attach, pasid_check_hwpt
    from harness.helpers.selftest import hwpt_alloc, mock_domain_flags, mock_domain_replace

    pair = _pair()
    fd = pair.open("/dev/iommu")
    both = Iommufd(pair, fd)
    ioas = Ioas.alloc(both)
    dom = mock_domain_flags(both, ioas.id, u.MOCK_FLAGS_DEVICE_PASID)
    hwpt = hwpt_alloc(both, dom.idev_id, ioas.id, u.IOMMU_HWPT_ALLOC_PASID)
    mock_domain_replace(both, dom.stdev_id, hwpt)  # a PASID needs a PASID-capable RID domain
    pair.fail_nth_write(1)
    pair.secondary.fail_nth_write(0)  # only the primary's call fails
    with pytest.raises(OSError):
        pasid_attach(both, dom.stdev_id, 1, hwpt)
    pair.fail_nth_write(0)
    secondary = Iommufd(pair.secondary, pair.maps.to_secondary(Kind.FD, 0, fd))
    # Nothing attached on the secondary either (else its hwpt outlives the caller's close).
    pasid_check_hwpt(secondary, pair.maps.to_secondary(Kind.ID, fd, dom.stdev_id), 1, 0)
