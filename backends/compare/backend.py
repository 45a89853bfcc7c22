"""CompareBackend: every contract call on two backends in lockstep, compared as it returns.

The caller sees the primary (its fds, IDs, addresses and results); each call is
translated into the secondary's handles (:mod:`backends.compare.handles`) and run there
too. Compared, call by call: the errno, the return value, the argument bytes the call
left (handle fields through the maps, every other byte raw), the user memory the call
wrote (:mod:`backends.compare.writeback`), and the data read from event and fault fds.
The first difference raises :class:`~backends.compare.divergence.Divergence`, unless the
known-divergence list explains it for the kernel at hand: then it is counted and the
primary's result is returned. Only the contract is used, so any two backends pair up,
on the host or inside a guest.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uapi_headers as u
from backends.compare import known as known_mod
from backends.compare.divergence import Attempt, Divergence, Reported
from backends.compare.fields import Field, Kind, Layout, layout, leaves
from backends.compare.handles import HandleMaps
from backends.compare.log import CallLog, Record, Ref
from backends.compare.writeback import written
from backends.contract import MAP_SHARED, PROT_READ, PROT_WRITE, Backend, IoctlArg

ffi = u.ffi
# Calls that return a new fd (mapped, not compared raw, when both sides return one).
_FD_RETURNS = frozenset({"IOMMU_TEST_CMD/IOMMU_TEST_OP_DMABUF_GET"})
_PGFAULT = "struct iommu_hwpt_pgfault"


EXACT_ALIGN = 2 * 1024 * 1024


def alloc_exact(be: Backend, length: int, align: int, shared: bool, hugetlb: bool) -> int:
    """``length`` bytes at an odd multiple of ``align`` in ``be`` (the slack is unmapped)."""
    base = be.alloc(length + 2 * align, align=align, shared=shared, hugetlb=hugetlb)
    addr = base if (base // align) % 2 else base + align
    span = -(-length // be.page_size) * be.page_size
    if addr > base:
        be.munmap(base, addr - base)
    end = base + length + 2 * align
    if addr + span < end:
        be.munmap(addr + span, end - addr - span)
    return addr


def _attempt(fn: Callable[..., Any], *args: Any) -> Attempt:
    try:
        return Attempt(fn(*args))
    except OSError as error:
        return Attempt(error=error)


class CompareBackend(Backend):
    """``primary`` and ``secondary`` in lockstep; see the module docstring.

    ``stats``: calls made and divergences reported; ``log``: the calls of the current
    case (for reproducers); :meth:`begin_case` starts a new case's log.
    """

    def __init__(self, primary: Backend, secondary: Backend, *,
                 known: list[known_mod.KnownDivergence] | None = None) -> None:
        self.primary = primary
        self.secondary = secondary
        self.spec = f"compare:{primary.spec}+{secondary.spec}"
        self.features = primary.features & secondary.features
        self.page_size = primary.page_size
        self.hugepage_size = primary.hugepage_size
        self.known = known_mod.load() if known is None else known
        self.maps = HandleMaps()
        self.log = CallLog()
        self._calls = [0]  # one count for a pair and the children forked from it
        #: primary pid -> secondary pid, of this pair and its forked children (shared)
        self._pids: dict[int, int] = {}
        self.reported: list[Reported] = []
        #: fds of fault queues -> the iommufd fd whose device IDs their records carry
        self._fault_fds: dict[int, int] = {}
        self._armed = False
        #: the last fail-nth read-back of each side (sweeps report both)
        self.fail_nth_seen: tuple[int, int] = (0, 0)

    # -- lifecycle -------------------------------------------------------
    def shutdown(self) -> None:
        """Shut both sides down (the secondary even if the primary fails)."""
        try:
            self.primary.shutdown()
        finally:
            self.secondary.shutdown()

    def describe(self) -> str:
        """Both sides' descriptions."""
        return f"{self.primary.describe()} vs {self.secondary.describe()}"

    @property
    def kernel_release(self) -> str:
        """The primary's release (known issues are keyed on it)."""
        return self.primary.kernel_release

    @property
    def sides(self) -> tuple[str, str]:
        """The two specs, for messages."""
        return (self.primary.spec, self.secondary.spec)

    def begin_case(self) -> None:
        """A new case: its own call log (memory set-up is kept)."""
        self.log.restart()

    @property
    def divergences(self) -> int:
        """Divergences seen so far (known ones included)."""
        return len(self.reported)

    @property
    def known_count(self) -> int:
        """Known divergences seen so far."""
        return sum(1 for r in self.reported if r.reason is not None)

    @contextmanager
    def tolerant(self) -> Iterator[None]:
        """Calls inside run on both sides without comparing results (cleanup after a
        divergence, when the sides no longer agree on what exists)."""
        was, self._armed = self._armed, True
        try:
            yield
        finally:
            self._armed = was

    # -- the comparison core ------------------------------------------------
    @property
    def calls(self) -> int:
        """Calls compared so far (a forked child's included)."""
        return self._calls[0]

    def _record(self, op: str, args: tuple[Any, ...], call: str) -> Record:
        self._calls[0] += 1
        return self.log.add(Record(self._calls[0], op, args, call))

    def _diverge(self, record: Record, what: str, detail: str) -> None:
        record.diverged = what
        releases = (self.primary.kernel_release, self.secondary.kernel_release)
        reason = known_mod.lookup(self.known, releases, record.call, what) \
            or self._after_known()
        self.reported.append(Reported(record.index, record.call, what, detail, reason))
        if reason is None:
            raise Divergence(record.index, record.call, what, detail, self.sides,
                             record.results)

    def _after_known(self) -> str | None:
        """The reason for a divergence that follows a known one in the same case: from
        there on the sides hold different state (7.3's DMABUF_GET returns 0 for the fd,
        the case then maps fd 0), so what differs later is its consequence."""
        if not self.log.records:
            return None
        first = self.log.records[0].index
        earlier = next((r for r in self.reported if r.index >= first and r.reason), None)
        if earlier is None:
            return None
        return f"follows the known divergence at call #{earlier.index} {earlier.call} in this case"

    def _settle(self, record: Record) -> Any:
        """Return the primary's result of a compared call (or raise its error)."""
        p = record.results[0]
        if p.error is not None:
            raise p.error
        return p.value

    def _same_errno(self, record: Record) -> bool:
        p, s = record.results
        if self._armed:
            return False  # under fault injection the sides may fail differently
        if p.errno != s.errno:
            self._diverge(record, "errno", "")
            return False
        return True

    def _both(self, record: Record, fn: Callable[[Backend], Any],
              fn2: Callable[[Backend], Any] | None = None) -> tuple[Attempt, Attempt]:
        p = _attempt(fn, self.primary)
        s = _attempt(fn2 or fn, self.secondary)
        record.results = (p, s)
        return p, s

    def _plain(self, record: Record, fn: Callable[[Backend], Any],
               fn2: Callable[[Backend], Any]) -> Any:
        """Run a call whose only result is its errno (close, munmap, poke, ...)."""
        self._both(record, fn, fn2)
        self._same_errno(record)
        return self._settle(record)

    def _ref(self, record: Record, name: str, kind: Kind, ns: int, value: int) -> None:
        if kind is Kind.ADDR:
            region = self.maps.region_of(value)
            if region is not None:
                record.refs[name] = Ref(region.origin, "return", value - region.primary)
            return
        origin = self.maps.origin(kind, ns, value)
        if origin is not None:
            record.refs[name] = Ref(origin[0], origin[1])

    def _fd(self, record: Record, fd: int, name: str = "fd") -> int:
        self._ref(record, name, Kind.FD, 0, fd)
        return self.maps.to_secondary(Kind.FD, 0, fd)

    def _addr(self, record: Record, addr: int, name: str = "addr") -> int:
        self._ref(record, name, Kind.ADDR, 0, addr)
        return self.maps.to_secondary(Kind.ADDR, 0, addr)

    def _new_fd(self, record: Record) -> None:
        p, s = record.results
        if p.error is None and s.error is None:
            self.maps.bind(Kind.FD, 0, p.value, s.value, (record.index, "return"))

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open(2) on both; the fds are paired."""
        record = self._record("open", (path, flags), f"open {path}")
        self._both(record, lambda be: be.open(path, flags))
        self._same_errno(record)
        self._new_fd(record)
        fd: int = self._settle(record)
        return fd

    def close(self, fd: int) -> None:
        """close(2) on both."""
        record = self._record("close", (fd,), "close")
        sfd = self._fd(record, fd)
        self._plain(record, lambda be: be.close(fd), lambda be: be.close(sfd))

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2) on both, the argument translated for the secondary; see the module."""
        if arg is None or isinstance(arg, int) or (ffi.typeof(arg).kind == "pointer" and (
                arg == ffi.NULL or ffi.typeof(arg).item.kind == "void")):
            return self._value_ioctl(fd, request, arg)
        before = bytes(ffi.buffer(arg))
        lay = layout(request, arg, before)
        record = self._record("ioctl", (fd, request), lay.call)
        record.data, record.ctype, record.layout = before, ffi.typeof(arg).cname, lay
        sfd = self._fd(record, fd)
        ns = self._namespaces(lay, before, fd)
        sdata = bytearray(before)
        for f in lay.fields:
            value = f.read(before)
            if value is not None:
                self._ref(record, f.name, f.kind, ns[f.kind], value)
                f.write(sdata, self.maps.to_secondary(f.kind, ns[f.kind], value))
        # The secondary gets an argument of the caller's own type (a struct pointer or a
        # byte array), holding the translated bytes.
        ctype = ffi.typeof(arg)
        sarg = ffi.new(ctype) if ctype.kind == "pointer" else ffi.new("uint8_t[]", len(sdata))
        ffi.memmove(sarg, bytes(sdata), len(sdata))
        p, _ = self._both(record, lambda be: be.ioctl(fd, request, arg),
                          lambda be: be.ioctl(sfd, request, sarg))
        after = bytes(ffi.buffer(arg))
        safter = bytes(ffi.buffer(sarg, len(sdata)))
        record.after = after
        if self._same_errno(record):
            if p.error is None:
                self._compare_return(record)
            self._compare_fields(record, lay, ns, before, bytes(sdata), after, safter)
            self._compare_written(record, lay, ns, before, after, safter)
        elif self._armed:
            self._bind_outputs(record, lay, ns, before, bytes(sdata), after, safter)
            if p.error is not None and record.results[1].error is None:
                self._undo_secondary(lay, bytes(sdata), safter, sfd)
        ret: int = self._settle(record)
        return ret

    def _undo_secondary(self, lay: Layout, sbefore: bytes, safter: bytes, sfd: int) -> None:
        """Fault injection failed the primary's call and the secondary's succeeded (the
        two count their fault points differently): the caller saw the failure, so what
        the secondary made (fds, objects, a PASID attachment) would be orphans that keep
        its context and pins alive. Undo them, so both sides hold the same state.
        Best effort: an undo the secondary refuses shows up as a later divergence."""
        if lay.call == "IOMMU_TEST_CMD/IOMMU_TEST_OP_PASID_ATTACH":
            # An attachment, not an object: its undo is the detach (else the attached
            # domain outlives the caller's close on this side only).
            detach = ffi.new("struct iommu_test_cmd *")
            ffi.memmove(detach, sbefore, min(len(sbefore), ffi.sizeof(detach[0])))
            pasid = detach.pasid_attach.pasid
            detach.op = u.IOMMU_TEST_OP_PASID_DETACH
            detach.pasid_detach.pasid = pasid
            with contextlib.suppress(OSError):
                self.secondary.ioctl(sfd, u.IOMMU_TEST_CMD, detach)
            return
        made = [(f.kind, value) for f in lay.fields
                if f.kind in (Kind.FD, Kind.ID)
                and (value := f.read(safter)) is not None and value != f.read(sbefore)]
        # fds first: an event queue's file holds a users reference on its object.
        for kind, value in sorted(made, key=lambda item: item[0] is not Kind.FD):
            with contextlib.suppress(OSError):
                if kind is Kind.FD:
                    self.secondary.close(value)
                else:
                    destroy = ffi.new("struct iommu_destroy *",
                                      {"size": ffi.sizeof("struct iommu_destroy"), "id": value})
                    self.secondary.ioctl(sfd, u.IOMMU_DESTROY, destroy)

    def _value_ioctl(self, fd: int, request: int, arg: IoctlArg) -> int:
        # ioctls with no argument, a plain value, or a bare pointer (an address).
        name = layout(request, None, b"").call
        record = self._record("ioctl", (fd, request, arg), name)
        sfd = self._fd(record, fd)
        sarg = arg
        if arg is not None and not isinstance(arg, int):
            addr = int(ffi.cast("uintptr_t", arg))
            sarg = ffi.cast("void *", self._addr(record, addr, "arg"))
        self._both(record, lambda be: be.ioctl(fd, request, arg),
                   lambda be: be.ioctl(sfd, request, sarg))
        if self._same_errno(record) and record.results[0].error is None:
            self._compare_return(record)
        ret: int = self._settle(record)
        return ret

    def _namespaces(self, lay: Layout, data: bytes, fd: int) -> dict[Kind, int]:
        ns = {Kind.ID: fd, Kind.FD: 0, Kind.ADDR: 0, Kind.PAGES: 0}
        for f in lay.fields:
            if f.kind is Kind.FD and f.name == "id":
                ns[Kind.PAGES] = f.read(data) or 0
        return ns

    def _compare_return(self, record: Record) -> None:
        p, s = record.results
        if p.value == s.value:
            return
        if record.call in _FD_RETURNS and p.value > 0 and s.value > 0:
            self.maps.bind(Kind.FD, 0, p.value, s.value, (record.index, "return"))
            return
        self._diverge(record, "return", f"returned {p.value!r} vs {s.value!r}")

    def _bind_outputs(self, record: Record, lay: Layout, ns: dict[Kind, int], before: bytes,
                      sbefore: bytes, after: bytes, safter: bytes) -> None:
        """Pair the handles both sides wrote (no comparison: fault injection is armed)."""
        if record.results[0].error is None and record.results[1].error is None:
            for f in lay.fields:
                pv, sv = f.read(after), f.read(safter)
                if pv is not None and sv is not None and pv != f.read(before):
                    self.maps.bind(f.kind, ns[f.kind], pv, sv, (record.index, f.name))
            self._remember_fault_fds(lay, after, record)

    def _compare_fields(self, record: Record, lay: Layout, ns: dict[Kind, int], before: bytes,
                        sbefore: bytes, after: bytes, safter: bytes) -> None:
        if len(after) != len(safter):
            self._diverge(record, "output", f"argument length {len(after)} vs {len(safter)}")
            return
        for f in lay.fields:
            pin, sin, pv, sv = f.read(before), f.read(sbefore), f.read(after), f.read(safter)
            if pv is None or sv is None:
                continue
            if pv != pin and sv != sin and f.kind is not Kind.ADDR:
                # A handle both sides wrote: paired (whatever the numbers), with its origin.
                self.maps.bind(f.kind, ns[f.kind], pv, sv, (record.index, f.name))
                continue
            if self.maps.to_secondary(f.kind, ns[f.kind], pv) != sv:
                self._diverge(record, "output",
                              f"{f.name}: {pv:#x} vs {sv:#x} (input {pin:#x} vs {sin:#x})")
                return
        self._remember_fault_fds(lay, after, record)
        differing = _differing_fields(lay, after, safter)
        if differing:
            record.field_diffs = [d for d in differing if isinstance(d, tuple)]
            self._diverge(record, "output", "; ".join(_describe_diff(d) for d in differing))

    def _remember_fault_fds(self, lay: Layout, after: bytes, record: Record) -> None:
        if lay.struct in ("struct iommu_fault_alloc",):
            for f in lay.fields:
                if f.kind is Kind.FD:
                    value = f.read(after)
                    if value is not None:
                        self._fault_fds[value] = record.args[0]

    def _compare_written(self, record: Record, lay: Layout, ns: dict[Kind, int],
                         before: bytes, after: bytes, safter: bytes) -> None:
        if lay.struct is None:
            return
        struct = lay.struct

        def read(name: str) -> int:
            if name.startswith("in:"):
                return _read_named(struct, before, name[3:])
            return _read_named(struct, after, name)

        for pointer, length in written(record.call, read):
            paddr = _read_named(struct, after, pointer)
            if length == 0 or paddr == 0:
                continue
            saddr = self.maps.to_secondary(Kind.ADDR, 0, paddr)
            pmem = _attempt(self.primary.peek, paddr, length)
            smem = _attempt(self.secondary.peek, saddr, length)
            if pmem.errno != smem.errno or pmem.value != smem.value:
                record.expected, record.expected_at = smem.value, pointer
                self._diverge(record, "memory",
                              f"{length} bytes at {pointer}: {_first_difference(pmem, smem)}")
                return

    # -- event and fault queues --------------------------------------------
    def read(self, fd: int, length: int) -> bytes:
        """read(2) on both; the records are compared (device IDs through the maps)."""
        record = self._record("read", (fd, length), "read")
        sfd = self._fd(record, fd)
        p, s = self._both(record, lambda be: be.read(fd, length),
                          lambda be: be.read(sfd, length))
        if self._same_errno(record) and p.error is None:
            sdata = self._fault_records_to_primary(fd, s.value)
            if p.value != sdata:
                record.expected = sdata
                self._diverge(record, "read", _first_difference(p, Attempt(sdata)))
        data: bytes = self._settle(record)
        return data

    def _fault_records_to_primary(self, fd: int, data: bytes) -> bytes:
        ns = self._fault_fds.get(fd)
        size = ffi.sizeof(_PGFAULT)
        if ns is None or not data or len(data) % size:
            return data
        dev = Field("dev_id", ffi.offsetof(_PGFAULT, "dev_id"), 4, Kind.ID)
        out = bytearray(data)
        for start in range(0, len(out), size):
            chunk = bytearray(out[start:start + size])
            dev.write(chunk, self.maps.to_primary(Kind.ID, ns, dev.read(chunk) or 0))
            out[start:start + size] = chunk
        return bytes(out)

    def write(self, fd: int, data: bytes) -> int:
        """write(2) on both (page responses)."""
        record = self._record("write", (fd, data), "write")
        sfd = self._fd(record, fd)
        self._both(record, lambda be: be.write(fd, data), lambda be: be.write(sfd, data))
        if self._same_errno(record) and record.results[0].error is None:
            self._compare_return(record)
        n: int = self._settle(record)
        return n

    # -- memory ----------------------------------------------------------
    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) on both; the two mappings are paired."""
        record = self._record("mmap", (fd, length, offset, prot, flags), "mmap")
        sfd = self._fd(record, fd)
        self._both(record, lambda be: be.mmap(fd, length, offset, prot, flags),
                   lambda be: be.mmap(sfd, length, offset, prot, flags))
        self._same_errno(record)
        self._new_region(record, length)
        addr: int = self._settle(record)
        return addr

    def _new_region(self, record: Record, length: int) -> None:
        p, s = record.results
        if p.error is None and s.error is None:
            self.maps.add_region(p.value, s.value, length, record.index)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) on both (the pairing stays: later uses fault on both)."""
        record = self._record("munmap", (addr, length), "munmap")
        saddr = self._addr(record, addr)
        self._plain(record, lambda be: be.munmap(addr, length),
                    lambda be: be.munmap(saddr, length))
        self.maps.unmapped(addr, length)

    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        """Anonymous memory on both, paired, at addresses with the same low bits.

        The kernel derives IOVA alignment from the user address (an automatic IOVA
        keeps the buffer's alignment), so both sides' buffers start at an odd multiple
        of the same power of two ``A`` (at least 2 MiB and ``align``): the alignment of
        every address inside is then the same on both.
        """
        exact = max(align, self.hugepage_size, EXACT_ALIGN)
        record = self._record("alloc", (length, exact, shared, hugetlb), "alloc")
        self._both(record, lambda be: alloc_exact(be, length, exact, shared, hugetlb))
        self._same_errno(record)
        self._new_region(record, length)
        addr: int = self._settle(record)
        return addr

    def peek(self, addr: int, length: int) -> bytes:
        """Read both sides' memory; different bytes are a divergence."""
        record = self._record("peek", (addr, length), "peek")
        saddr = self._addr(record, addr)
        p, s = self._both(record, lambda be: be.peek(addr, length),
                          lambda be: be.peek(saddr, length))
        if self._same_errno(record) and p.error is None and p.value != s.value:
            record.expected = s.value
            self._diverge(record, "memory", _first_difference(p, s))
        data: bytes = self._settle(record)
        return data

    def poke(self, addr: int, data: bytes) -> None:
        """Write both sides' memory."""
        record = self._record("poke", (addr, bytes(data)), "poke")
        saddr = self._addr(record, addr)
        self._plain(record, lambda be: be.poke(addr, data), lambda be: be.poke(saddr, data))

    def memfd_create(self, name: str) -> int:
        """memfd_create(2) on both, paired."""
        record = self._record("memfd", (name, None), "memfd_create")
        self._both(record, lambda be: be.memfd_create(name))
        self._same_errno(record)
        self._new_fd(record)
        fd: int = self._settle(record)
        return fd

    def memfd(self, length: int, name: str = "iommufd-harness") -> int:
        """A sized memfd on both (each side's own way), paired."""
        record = self._record("memfd", (name, length), "memfd")
        self._both(record, lambda be: be.memfd(length, name))
        self._same_errno(record)
        self._new_fd(record)
        fd: int = self._settle(record)
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) on both."""
        record = self._record("ftruncate", (fd, length), "ftruncate")
        sfd = self._fd(record, fd)
        self._plain(record, lambda be: be.ftruncate(fd, length),
                    lambda be: be.ftruncate(sfd, length))

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Arm both sides; until the read-back, errnos are not compared (each side's
        fault points are its own) but handles both sides produce are still paired."""
        self._record("fail_nth_write", (n,), f"fail-nth {n}")
        self.primary.fail_nth_write(n)
        self.secondary.fail_nth_write(n)
        self._armed = n > 0

    def fail_nth_read(self) -> int:
        """The primary's read-back (both are kept in ``fail_nth_seen``); disarms the
        comparison's tolerance."""
        self._record("fail_nth_read", (), "fail-nth read-back")
        seen = (self.primary.fail_nth_read(), self.secondary.fail_nth_read())
        self.fail_nth_seen = seen
        self._armed = False
        return seen[0]

    # -- processes -------------------------------------------------------
    def getpid(self) -> int:
        """The primary's pid (paired with the secondary's, for :meth:`proc_status`)."""
        pid = self.primary.getpid()
        self._pids[pid] = self.secondary.getpid()
        return pid

    def proc_status(self, field: str, pid: int = 0) -> int:
        """Both sides' ``/proc`` value (pinned and locked memory must agree)."""
        record = self._record("proc_status", (field, pid), f"proc_status {field}")
        if pid and pid not in self._pids:
            self.getpid()  # this process's own pair, the common case
        spid = self._pids.get(pid, pid) if pid else 0
        self._both(record, lambda be: be.proc_status(field, pid),
                   lambda be: be.proc_status(field, spid))
        if self._same_errno(record) and record.results[0].error is None:
            self._compare_return(record)
        value: int = self._settle(record)
        return value

    def drop_capability(self, name: str) -> bool:
        """Drop it on both; the primary's answer."""
        held = self.primary.drop_capability(name)
        self.secondary.drop_capability(name)
        return held

    def restore_capability(self, name: str) -> None:
        """Restore it on both."""
        self.primary.restore_capability(name)
        self.secondary.restore_capability(name)

    def fork_child(self) -> Backend:
        """fork(2) on both sides; the two children run in lockstep too.

        A child inherits its parent's fds and memory, so the pair's handle maps hold for
        it as they are: the child pair shares them with this one, and its call log,
        numbering and report (the kernel's fork_gone / fork_present, change_process).
        """
        self._record("fork_child", (), "fork")
        primary = self.primary.fork_child()
        try:
            secondary = self.secondary.fork_child()
        except BaseException:
            primary.shutdown()  # no child left behind on the side that forked
            raise
        child = copy.copy(self)  # shares maps, log, counts and the report
        child.primary, child.secondary = primary, secondary
        return child


@functools.cache
def _place(struct: str, name: str) -> tuple[int, int]:
    """``(offset, size)`` of field ``name`` (dotted) of ``struct``."""
    offset = 0
    ctype = ffi.typeof(struct)
    for part in name.split("."):
        field = dict(ctype.fields)[part]
        offset += field.offset
        ctype = field.type
    return offset, ffi.sizeof(ctype)


def _read_named(struct: str, data: bytes, name: str) -> int:
    """The value of field ``name`` (dotted) of ``struct`` in ``data``; 0 past its end."""
    offset, size = _place(struct, name)
    if offset + size > len(data):
        return 0
    return int.from_bytes(data[offset:offset + size], "little")


def _differing_fields(lay: Layout, after: bytes, safter: bytes
                      ) -> list[tuple[str, int, int] | str]:
    """The non-handle fields that differ, ``(dotted name, primary, secondary)``, and a
    note for differing bytes no field covers."""
    if after == safter:
        return []
    handle_bytes = {i for f in lay.fields for i in range(f.offset, f.offset + f.size)}
    covered: set[int] = set(handle_bytes)
    out: list[tuple[str, int, int] | str] = []
    if lay.struct is not None:
        for name, offset, size in leaves(ffi.typeof(lay.struct)):
            head = name.split(".", 1)[0]
            in_other_member = lay.member is not None and "." in name and head != lay.member
            if in_other_member or offset + size > len(after) or offset in handle_bytes:
                continue
            covered.update(range(offset, offset + size))
            pv, sv = after[offset:offset + size], safter[offset:offset + size]
            if pv != sv:
                out.append((name, int.from_bytes(pv, "little"), int.from_bytes(sv, "little")))
    for i in range(len(after)):
        if i not in covered and after[i] != safter[i]:
            out.append(f"byte {i}: {after[i]:#x} vs {safter[i]:#x}")
            break
    return out


def _describe_diff(diff: tuple[str, int, int] | str) -> str:
    if isinstance(diff, str):
        return diff
    name, pv, sv = diff
    return f"{name}: {pv:#x} vs {sv:#x}"


def _first_difference(p: Attempt, s: Attempt) -> str:
    if p.error is not None or s.error is not None:
        return f"{p.describe()} vs {s.describe()}"
    a, b = p.value, s.value
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} bytes"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return f"first difference at byte {i}: {x:#04x} vs {y:#04x}"
    return "equal"
