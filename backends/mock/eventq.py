"""Event queues: the IOPF fault queue and the vIOMMU event queue (eventq.c).

Both are objects with an fd. The fd holds a ``users`` reference on its queue and one
on the context's file, so the queue cannot be destroyed while the fd is open (EBUSY)
and closing /dev/iommu first leaves the context alive until the fd goes.

- A FAULT queue receives IOPF groups from the IOMMU core (``iommufd_fault_iopf_handler``
  for a HWPT allocated with a ``fault_id``). read() hands each group out as
  ``struct iommu_hwpt_pgfault`` records with a cookie; write() of a
  ``struct iommu_hwpt_page_response`` with that cookie answers it.
- A vEVENTQ of one type on a vIOMMU receives vEVENTs (``iommufd_viommu_report_event``):
  each gets a sequence number; past ``depth`` unread events a lost-events header
  (``IOMMU_VEVENTQ_FLAG_LOST_EVENTS``) stands in for the dropped ones. read() returns
  ``struct iommufd_vevent_header`` + payload per event and never splits one.
"""

from __future__ import annotations

from dataclasses import dataclass
from errno import EEXIST, EINVAL, ENOMEM, EOPNOTSUPP, ESPIPE
from typing import TYPE_CHECKING, Any, cast

import uapi_headers as u
from backends.mock.errors import kerr
from backends.mock.fault import (
    EVENTQ_FILE,
    FAULT_COOKIE_ALLOC,
    IOPF_GROUP_ALLOC,
    VEVENT_ALLOC,
)
from backends.mock.files import File
from backends.mock.iommu import IOMMU_NO_PASID, DomainType
from backends.mock.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from backends.mock.device import IommufdDevice
    from backends.mock.hw_pagetable import IommufdHwPagetable
    from backends.mock.private import IommufdCtx, Ucmd
    from backends.mock.viommu import IommufdViommu

VEVENTQ_MAX_DEPTH = 1 << 19
"""The arbitrary upper bound of ``veventq_depth``."""
INT_MAX = (1 << 31) - 1
U32_MAX = (1 << 32) - 1

_PGFAULT = "struct iommu_hwpt_pgfault"
FAULT_SIZE = u.ffi.sizeof(_PGFAULT)
RESPONSE_SIZE = u.ffi.sizeof("struct iommu_hwpt_page_response")
HEADER_SIZE = u.ffi.sizeof("struct iommufd_vevent_header")

IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0
IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1
"""``iommu_fault_page_request.flags``; the uAPI's pgfault flags use the same bits."""


class EventqFile(File):
    """The anon-inode file of an event queue (``eventq->filep``)."""

    def __init__(self, eventq: IommufdEventq, name: str) -> None:
        super().__init__()
        self.name = name
        self.eventq = eventq

    def release(self) -> None:
        """iommufd_eventq_fops_release(): drop the queue's and the context's reference."""
        eventq = self.eventq
        eventq.users -= 1
        eventq.ictx.ctx_put()

    def read(self, length: int) -> bytes:
        """The queue's read fop."""
        return self.eventq.fops_read(length)

    def write(self, data: bytes) -> int:
        """The queue's write fop (EINVAL where it has none, as for a vEVENTQ)."""
        return self.eventq.fops_write(data)


class IommufdEventq(IommufdObject):
    """``struct iommufd_eventq``: the part both queue types share."""

    file_name = "[iommufd-eventq]"

    def __init__(self, ictx: IommufdCtx) -> None:
        super().__init__()
        self.ictx = ictx
        self.file: EventqFile | None = None

    def init_file(self) -> int:
        """iommufd_eventq_init(): the fd (reserved, installed by the caller once the
        ioctl succeeded); the file holds a users reference and a context reference."""
        if self.ictx.kernel.should_fail(EVENTQ_FILE):
            raise kerr(ENOMEM)
        self.file = EventqFile(self, self.file_name)
        self.ictx.ctx_get()
        self.users += 1
        return self.ictx.kernel.files.get_unused_fd()

    def put_file(self) -> None:
        """The abort path's fput of a never-installed file (file_offset objects)."""
        if self.file is not None and not self.file.released:
            self.file.put()

    def fops_read(self, length: int) -> bytes:
        """The read fop."""
        raise kerr(EINVAL)

    def fops_write(self, data: bytes) -> int:
        """The write fop."""
        raise kerr(EINVAL)


# -- IOPF: the FAULT queue ------------------------------------------------------

@dataclass
class IopfGroup:
    """``struct iopf_group`` with its one (last-page) fault: what TRIGGER_IOPF reports.

    ``handle`` names the attachment the fault came through, ``(hwpt, igroup, pasid)``:
    the kernel's attach handle, whose faults are answered INVALID once it goes away.
    """

    flags: int
    pasid: int
    grpid: int
    perm: int
    addr: int
    idev: IommufdDevice
    handle: tuple[IommufdHwPagetable, Any, int]
    cookie: int = 0


class IommufdFault(IommufdEventq):
    """``struct iommufd_fault``: IOPF groups waiting to be read (``deliver``) and the
    ones read but not yet answered (``response``, by cookie)."""

    obj_type = ObjType.FAULT
    file_name = "[iommufd-pgfault]"

    def __init__(self, ictx: IommufdCtx) -> None:
        super().__init__(ictx)
        self.deliver: list[IopfGroup] = []
        self.response: dict[int, IopfGroup] = {}

    def destroy(self) -> None:
        """iommufd_fault_destroy(): every pending group is answered INVALID."""
        self.deliver.clear()
        self.response.clear()

    def abort(self) -> None:
        """The abort of a file-backed object: fput the file, then destroy."""
        self.put_file()
        self.destroy()

    def _cookie_alloc(self) -> int:
        # The response xarray allocates from 1 (XA_FLAGS_ALLOC1), lowest free first.
        cookie = 1
        while cookie in self.response:
            cookie += 1
        if cookie > U32_MAX:
            raise kerr(ENOMEM)
        return cookie

    def fops_read(self, length: int) -> bytes:
        """iommufd_fault_fops_read(): whole groups of 40-byte records; ESPIPE for a
        count that is no multiple of the record, EINVAL if the first group won't fit."""
        if length % FAULT_SIZE:
            raise kerr(ESPIPE)
        out = bytearray()
        while self.deliver:
            group = self.deliver[0]
            # One fault per group: the mock only reports last-page requests.
            if len(out) >= length or FAULT_SIZE > length - len(out):
                if not out:
                    raise kerr(EINVAL)
                break
            if self.ictx.kernel.should_fail(FAULT_COOKIE_ALLOC):
                if not out:
                    raise kerr(ENOMEM)
                break
            self.deliver.pop(0)
            group.cookie = self._cookie_alloc()
            self.response[group.cookie] = group
            record = u.ffi.new(f"{_PGFAULT} *", {
                "flags": group.flags, "dev_id": group.idev.id, "pasid": group.pasid,
                "grpid": group.grpid, "perm": group.perm, "addr": group.addr,
                "length": 0, "cookie": group.cookie})
            out += bytes(u.ffi.buffer(record))
        return bytes(out)

    def fops_write(self, data: bytes) -> int:
        """iommufd_fault_fops_write(): answer groups by cookie; a code other than
        SUCCESS/INVALID or an unknown cookie is EINVAL (after the ones before it)."""
        if len(data) % RESPONSE_SIZE:
            raise kerr(ESPIPE)
        done = 0
        while done < len(data):
            response = u.ffi.from_buffer("struct iommu_hwpt_page_response *",
                                         bytearray(data[done:done + RESPONSE_SIZE]))
            if response.code not in (u.IOMMUFD_PAGE_RESP_SUCCESS,
                                     u.IOMMUFD_PAGE_RESP_INVALID):
                break
            if self.response.pop(int(response.cookie), None) is None:
                break
            # iopf_group_response(): the mock driver's page_response does nothing.
            done += RESPONSE_SIZE
        if done == 0 and data:
            raise kerr(EINVAL)
        return done

    def auto_response(self, handle: tuple[IommufdHwPagetable, Any, int]) -> None:
        """iommufd_auto_response_faults(): answer INVALID everything that came through
        an attachment that is going away."""
        self.deliver = [g for g in self.deliver if g.handle != handle]
        for cookie in [c for c, g in self.response.items() if g.handle == handle]:
            del self.response[cookie]


def iommufd_fault_alloc(ucmd: Ucmd) -> int:
    """IOMMU_FAULT_QUEUE_ALLOC: a FAULT object and its fd."""
    cmd = ucmd.cmd
    if cmd.flags:
        raise kerr(EOPNOTSUPP)
    fault = ucmd.object_alloc_ucmd(IommufdFault(ucmd.ictx))
    fdno = fault.init_file()
    cmd.out_fault_id = fault.id
    cmd.out_fault_fd = fdno
    files = ucmd.ictx.kernel.files
    try:
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    except OSError:
        files.put_unused_fd(fdno)
        raise
    assert fault.file is not None
    files.fd_install(fdno, fault.file)
    return 0


def iommufd_fault_iopf_handler(group: IopfGroup) -> None:
    """iommufd_fault_iopf_handler(): queue the group on the HWPT's fault queue."""
    hwpt = group.handle[0]
    fault = hwpt.fault
    assert isinstance(fault, IommufdFault)
    fault.deliver.append(group)


def iommufd_auto_response_faults(hwpt: IommufdHwPagetable,
                                 handle: tuple[IommufdHwPagetable, Any, int]) -> None:
    """iommufd_auto_response_faults(): for a HWPT with a fault queue."""
    if isinstance(hwpt.fault, IommufdFault):
        hwpt.fault.auto_response(handle)


# -- vEVENTQ ------------------------------------------------------------------------

class Vevent:
    """``struct iommufd_vevent``: a header and the event data."""

    __slots__ = ("data", "flags", "sequence")

    def __init__(self, data: bytes, flags: int = 0) -> None:
        self.flags = flags
        self.sequence = 0
        self.data = data

    @property
    def lost_events(self) -> bool:
        """vevent_for_lost_events_header()."""
        return bool(self.flags & u.IOMMU_VEVENTQ_FLAG_LOST_EVENTS)

    def header(self) -> bytes:
        """The ``struct iommufd_vevent_header`` as read() returns it."""
        return self.flags.to_bytes(4, "little") + self.sequence.to_bytes(4, "little")


class IommufdVeventq(IommufdEventq):
    """``struct iommufd_veventq``: the events of one type of a vIOMMU."""

    obj_type = ObjType.VEVENTQ
    file_name = "[iommufd-viommu-event]"

    def __init__(self, ictx: IommufdCtx, viommu: IommufdViommu, veventq_type: int,
                 depth: int) -> None:
        super().__init__(ictx)
        self.viommu = viommu
        self.type = veventq_type
        self.depth = depth
        self.num_events = 0
        self.sequence = 0
        self.deliver: list[Vevent] = []
        self.lost_events_header = Vevent(b"", u.IOMMU_VEVENTQ_FLAG_LOST_EVENTS)

    def abort(self) -> None:
        """iommufd_veventq_abort(), after the abort path's fput."""
        self.put_file()
        self.deliver.clear()
        self.viommu.users -= 1
        if self in self.viommu.veventqs:
            self.viommu.veventqs.remove(self)

    def destroy(self) -> None:
        """iommufd_veventq_destroy()."""
        self.abort()

    def handler(self, vevent: Vevent) -> None:
        """iommufd_vevent_handler(): queue ``vevent`` with the next sequence number; a
        lost-events header at the tail gives way to it (it may be that header again)."""
        if self.deliver and self.deliver[-1] is self.lost_events_header:
            self.deliver.pop()
        self.deliver.append(vevent)
        vevent.sequence = self.sequence
        self.sequence = (self.sequence + 1) & INT_MAX

    def report(self, data: bytes) -> None:
        """The queue half of iommufd_viommu_report_event(): past ``depth`` unread
        events the lost-events header stands in for the event (so it does when the
        event cannot be allocated, and that is ENOMEM)."""
        if self.ictx.kernel.should_fail(VEVENT_ALLOC):
            self.handler(self.lost_events_header)
            raise kerr(ENOMEM)
        if self.num_events == self.depth:
            self.handler(self.lost_events_header)
            return
        self.num_events += 1
        self.handler(Vevent(data))

    def fops_read(self, length: int) -> bytes:
        """iommufd_veventq_fops_read(): EINVAL below one header, or when the first
        event does not fit whole; later events that do not fit stay queued."""
        if length < HEADER_SIZE:
            raise kerr(EINVAL)
        out = bytearray()
        while self.deliver:
            cur = self.deliver[0]
            if len(out) >= length or HEADER_SIZE > length - len(out):
                break
            if not cur.lost_events and HEADER_SIZE + len(cur.data) > length - len(out):
                if not out:
                    raise kerr(EINVAL)
                break
            self.deliver.pop(0)
            out += cur.header() + cur.data
            if not cur.lost_events:
                self.num_events -= 1
        return bytes(out)


def iommufd_viommu_find_veventq(viommu: IommufdViommu, veventq_type: int) -> IommufdVeventq | None:
    """iommufd_viommu_find_veventq()."""
    for veventq in viommu.veventqs:
        if veventq.type == veventq_type:
            return veventq
    return None


def iommufd_veventq_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VEVENTQ_ALLOC: flags/type (EOPNOTSUPP), depth 1..2^19 (EINVAL), the vIOMMU
    (ENOENT), one queue per type (EEXIST)."""
    cmd = ucmd.cmd
    if cmd.flags or cmd.__reserved or cmd.type == u.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise kerr(EOPNOTSUPP)
    if not cmd.veventq_depth or cmd.veventq_depth > VEVENTQ_MAX_DEPTH:
        raise kerr(EINVAL)
    ictx = ucmd.ictx
    viommu = cast("IommufdViommu", ictx.get_object(int(cmd.viommu_id), ObjType.VIOMMU))
    try:
        if iommufd_viommu_find_veventq(viommu, int(cmd.type)) is not None:
            raise kerr(EEXIST)
        veventq = ictx.object_alloc(IommufdVeventq(ictx, viommu, int(cmd.type),
                                                   int(cmd.veventq_depth)))
        viommu.users += 1
        viommu.veventqs.append(veventq)
        files = ictx.kernel.files
        try:
            fdno = veventq.init_file()
            cmd.out_veventq_id = veventq.id
            cmd.out_veventq_fd = fdno
            try:
                ucmd.respond(u.ffi.sizeof(cmd[0]))
            except OSError:
                files.put_unused_fd(fdno)
                raise
        except OSError:
            ictx.object_abort_and_destroy(veventq)
            raise
        ictx.object_finalize(veventq)
        assert veventq.file is not None
        files.fd_install(fdno, veventq.file)
    finally:
        ictx.put_object(viommu)
    return 0


# -- the IOMMU core's IOPF path (io-pgfault.c) up to iommufd's handler ------------------

def iommu_report_device_fault(idev: IommufdDevice, flags: int, pasid: int, grpid: int,
                              perm: int, addr: int) -> None:
    """iommu_report_device_fault() of one last-page request: find the attachment the
    fault belongs to (a PASID's own, else, the mock driver keeping a user PASID table,
    a nested domain on the RID), and hand it to the domain's fault handler. Without a
    fault-capable domain the request is answered by the driver and dropped."""
    igroup = idev.igroup
    assert igroup is not None
    key = pasid if flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID else IOMMU_NO_PASID
    attach = igroup.pasid_attach.get(key)
    if attach is None and key != IOMMU_NO_PASID:
        attach = igroup.pasid_attach.get(IOMMU_NO_PASID)
        if attach is not None and (attach.hwpt is None or attach.hwpt.domain is None
                                   or attach.hwpt.domain.type != DomainType.NESTED):
            attach = None
        key = IOMMU_NO_PASID
    if attach is None or attach.hwpt is None or attach.hwpt.domain is None:
        return
    hwpt = attach.hwpt
    domain = hwpt.domain
    assert domain is not None
    if domain.iopf_handler is None:
        return
    kernel = idev.ictx.kernel
    if kernel.warn_on(idev.dev.iopf_refcount == 0, "iommu_report_device_fault: no iopf_param"):
        return
    if kernel.should_fail(IOPF_GROUP_ALLOC):
        return  # aborted: the driver answers the request itself
    # The attach handle's device: the one device of the mock's singleton group.
    handle_idev = next(iter(attach.device_array.values()))
    domain.iopf_handler(IopfGroup(flags, pasid, grpid, perm, addr, handle_idev,
                                  (hwpt, igroup, key)))
