"""IOAS helpers: map, unmap, copy, IOVA ranges and the IOAS options, as Python calls.

The Python side of iommufd_utils.h's ``test_ioctl_ioas_*`` helpers. An :class:`Ioas` is an
IOAS ID bound to its open :class:`~harness.helpers.core.Iommufd`; every call raises
``OSError`` with the kernel's errno on failure, so ``with expect_errno(EEXIST):`` wraps any
of them::

    ioas = Ioas.alloc(fd)
    iova = ioas.map(buf, length)                    # the kernel picks the IOVA
    ioas.map(buf, length, iova=MOCK_APERTURE_START) # IOMMU_IOAS_MAP_FIXED_IOVA
    assert ioas.unmap(iova, length) == length
    ioas.unmap_all()

Pointers the kernel reads or writes (``user_va``, ``allowed_iovas``) are addresses in the
backend's user memory, so range arrays are staged there with :meth:`Backend.alloc` and
``poke``/``peek``; the cffi structs only carry the ioctl's own fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from errno import EMSGSIZE
from typing import Any, NamedTuple

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd

__all__ = [
    "MAP_RW",
    "UNMAP_ALL_LENGTH",
    "Ioas",
    "IovaRange",
    "IovaRanges",
    "change_process",
    "option_get",
    "option_set",
    "read_iova_ranges",
    "write_iova_ranges",
]

#: The flags of every map the kernel's test helpers make (test_ioctl_ioas_map and friends).
MAP_RW = u.IOMMU_IOAS_MAP_WRITEABLE | u.IOMMU_IOAS_MAP_READABLE

#: IOMMU_IOAS_UNMAP with iova 0 and this length unmaps everything (ioas.c's special case).
UNMAP_ALL_LENGTH = (1 << 64) - 1

_RANGE = "struct iommu_iova_range"
_RANGE_SIZE = u.ffi.sizeof(_RANGE)


class IovaRange(NamedTuple):
    """One ``struct iommu_iova_range``: the inclusive interval [start, last]."""

    start: int
    last: int


class IovaRanges(NamedTuple):
    """What IOMMU_IOAS_IOVA_RANGES reports: the usable ranges and the IOVA alignment."""

    ranges: list[IovaRange]
    alignment: int


# -- range arrays in the backend's memory --------------------------------------

def write_iova_ranges(fd: Iommufd, addr: int, ranges: Sequence[tuple[int, int]]) -> None:
    """Store ``ranges`` as a ``struct iommu_iova_range[]`` at backend address ``addr``."""
    array = u.ffi.new(f"{_RANGE}[]", max(len(ranges), 1))
    for slot, (start, last) in zip(array, ranges, strict=False):
        slot.start = start
        slot.last = last
    fd.backend.poke(addr, bytes(u.ffi.buffer(array, len(ranges) * _RANGE_SIZE)))


def read_iova_ranges(fd: Iommufd, addr: int, count: int) -> list[IovaRange]:
    """Load ``count`` ``struct iommu_iova_range`` entries from backend address ``addr``."""
    if count == 0:
        return []
    raw = bytearray(fd.backend.peek(addr, count * _RANGE_SIZE))
    array = u.ffi.from_buffer(f"{_RANGE}[]", raw)
    return [IovaRange(int(r.start), int(r.last)) for r in array]


@contextmanager
def _scratch(fd: Iommufd, length: int) -> Iterator[int]:
    """Backend memory for an array the kernel reads or fills, released afterwards."""
    length = max(length, 1)
    addr = fd.backend.alloc(length)
    try:
        yield addr
    finally:
        fd.backend.munmap(addr, length)


# -- IOMMU_OPTION and IOMMU_IOAS_CHANGE_PROCESS ----------------------------------

def _option(fd: Iommufd, option_id: int, op: int, object_id: int, val64: int) -> Any:
    cmd = new_cmd("iommu_option", {"option_id": option_id, "op": op,
                                   "object_id": object_id, "val64": val64})
    fd.ioctl(u.IOMMU_OPTION, cmd)
    return cmd


def option_get(fd: Iommufd, option_id: int, object_id: int = 0) -> int:
    """IOMMU_OPTION_OP_GET of ``option_id`` (``IOMMU_OPTION_*``) on ``object_id`` (0: global)."""
    return int(_option(fd, option_id, u.IOMMU_OPTION_OP_GET, object_id, 0).val64)


def option_set(fd: Iommufd, option_id: int, value: int, object_id: int = 0) -> None:
    """IOMMU_OPTION_OP_SET of ``option_id`` to ``value`` on ``object_id`` (0: global)."""
    _option(fd, option_id, u.IOMMU_OPTION_OP_SET, object_id, value)


def change_process(fd: Iommufd) -> None:
    """IOMMU_IOAS_CHANGE_PROCESS: move the pin accounting of every (file) map of ``fd`` to
    the calling process's mm and user."""
    fd.ioctl(u.IOMMU_IOAS_CHANGE_PROCESS, new_cmd("iommu_ioas_change_process"))


# -- the IOAS ----------------------------------------------------------------------

class Ioas:
    """An IOAS (``IOMMUFD_OBJ_IOAS``) of an open iommufd; ``int(ioas)`` is its ID."""

    def __init__(self, fd: Iommufd, ioas_id: int) -> None:
        self.fd = fd
        self.id = ioas_id

    @classmethod
    def alloc(cls, fd: Iommufd) -> Ioas:
        """IOMMU_IOAS_ALLOC (test_ioctl_ioas_alloc); the kernel never hands out ID 0."""
        ioas_id = fd.ioas_alloc()
        assert ioas_id != 0, "IOMMU_IOAS_ALLOC returned ID 0"
        return cls(fd, ioas_id)

    def __int__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"Ioas(id={self.id})"

    def destroy(self) -> None:
        """IOMMU_DESTROY of this IOAS (EBUSY while a HWPT or access uses it)."""
        self.fd.destroy(self.id)

    # -- map / unmap ---------------------------------------------------------
    def map(self, buf: int, length: int, iova: int | None = None, flags: int = MAP_RW) -> int:
        """IOMMU_IOAS_MAP of ``length`` bytes of user memory at ``buf``; returns the IOVA.

        ``iova=None`` lets the kernel allocate the IOVA; a value maps exactly there
        (``IOMMU_IOAS_MAP_FIXED_IOVA`` is added to ``flags``).
        """
        cmd = self.map_cmd(buf, length, iova, flags)
        self.fd.ioctl(u.IOMMU_IOAS_MAP, cmd)
        return int(cmd.iova)

    def map_cmd(self, buf: int, length: int, iova: int | None = None,
                flags: int = MAP_RW) -> Any:
        """The ``struct iommu_ioas_map`` :meth:`map` sends (for batches)."""
        cmd = new_cmd("iommu_ioas_map", {"ioas_id": self.id, "user_va": buf,
                                         "length": length})
        cmd.flags = _fixed(flags, iova)
        cmd.iova = iova or 0
        return cmd

    def map_fixed(self, buf: int, length: int, iova: int, flags: int = MAP_RW) -> int:
        """:meth:`map` at exactly ``iova`` (test_ioctl_ioas_map_fixed)."""
        return self.map(buf, length, iova=iova, flags=flags)

    def map_file(self, file_fd: int, start: int, length: int, iova: int | None = None,
                 flags: int = MAP_RW) -> int:
        """IOMMU_IOAS_MAP_FILE of [start, start+length) of a memfd (or dma-buf) ``file_fd``;
        returns the IOVA. ``iova`` as for :meth:`map`."""
        cmd = new_cmd("iommu_ioas_map_file", {"ioas_id": self.id, "fd": file_fd,
                                              "start": start, "length": length})
        cmd.flags = _fixed(flags, iova)
        cmd.iova = iova or 0
        self.fd.ioctl(u.IOMMU_IOAS_MAP_FILE, cmd)
        return int(cmd.iova)

    def unmap(self, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP of [iova, iova+length); returns the number of bytes unmapped.

        The range must cover whole areas (ENOENT if it would split one or hits nothing).
        """
        cmd = self.unmap_cmd(iova, length)
        self.fd.ioctl(u.IOMMU_IOAS_UNMAP, cmd)
        return int(cmd.length)

    def unmap_cmd(self, iova: int, length: int) -> Any:
        """The ``struct iommu_ioas_unmap`` :meth:`unmap` sends (for batches)."""
        return new_cmd("iommu_ioas_unmap", {"ioas_id": self.id, "iova": iova,
                                            "length": length})

    def unmap_all(self) -> int:
        """Unmap every area (iova 0, length U64_MAX); succeeds on an empty IOAS too."""
        return self.unmap(0, UNMAP_ALL_LENGTH)

    def copy(self, src_iova: int, length: int, *, dst: Ioas | int | None = None,
             dst_iova: int | None = None, flags: int = u.IOMMU_IOAS_MAP_WRITEABLE) -> int:
        """IOMMU_IOAS_COPY of [src_iova, src_iova+length) of this IOAS into ``dst`` (default:
        this IOAS) at ``dst_iova`` (None: kernel-chosen); returns the destination IOVA.

        The copy shares the pinned pages of the source area; nothing is re-pinned.
        """
        cmd = new_cmd("iommu_ioas_copy", {
            "dst_ioas_id": self.id if dst is None else int(dst), "src_ioas_id": self.id,
            "src_iova": src_iova, "length": length,
        })
        cmd.flags = _fixed(flags, dst_iova)
        cmd.dst_iova = dst_iova or 0
        self.fd.ioctl(u.IOMMU_IOAS_COPY, cmd)
        return int(cmd.dst_iova)

    # -- IOVA space ------------------------------------------------------------
    def iova_ranges(self) -> IovaRanges:
        """IOMMU_IOAS_IOVA_RANGES: every usable range and the required IOVA alignment.

        Asks once for the count (EMSGSIZE tells it) and then for the ranges, retrying if
        the IOAS changed in between.
        """
        cmd = new_cmd("iommu_ioas_iova_ranges", {"ioas_id": self.id, "num_iovas": 0})
        while True:
            capacity = int(cmd.num_iovas)
            with _scratch(self.fd, capacity * _RANGE_SIZE) as addr:
                cmd.num_iovas = capacity
                cmd.allowed_iovas = addr
                try:
                    self.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
                except OSError as error:
                    # EMSGSIZE: num_iovas now holds the count the kernel needs.
                    if error.errno != EMSGSIZE or int(cmd.num_iovas) <= capacity:
                        raise
                    continue
                ranges = read_iova_ranges(self.fd, addr, int(cmd.num_iovas))
                return IovaRanges(ranges, int(cmd.out_iova_alignment))

    def allow_iovas(self, ranges: Sequence[tuple[int, int]]) -> None:
        """IOMMU_IOAS_ALLOW_IOVAS: auto IOVAs come only from ``ranges`` ([start, last]
        pairs); an empty sequence lifts the restriction."""
        with _scratch(self.fd, len(ranges) * _RANGE_SIZE) as addr:
            write_iova_ranges(self.fd, addr, ranges)
            cmd = new_cmd("iommu_ioas_allow_iovas", {
                "ioas_id": self.id, "num_iovas": len(ranges), "allowed_iovas": addr,
            })
            self.fd.ioctl(u.IOMMU_IOAS_ALLOW_IOVAS, cmd)

    # -- options ---------------------------------------------------------------
    @property
    def huge_pages(self) -> bool:
        """IOMMU_OPTION_HUGE_PAGES of this IOAS: False forces PAGE_SIZE IOVA alignment and
        stops the kernel from mapping huge pages."""
        return bool(option_get(self.fd, u.IOMMU_OPTION_HUGE_PAGES, self.id))

    @huge_pages.setter
    def huge_pages(self, enabled: bool) -> None:
        option_set(self.fd, u.IOMMU_OPTION_HUGE_PAGES, int(enabled), self.id)


def _fixed(flags: int, iova: int | None) -> int:
    """``flags`` with IOMMU_IOAS_MAP_FIXED_IOVA set exactly when an IOVA was given."""
    if iova is None:
        return flags & ~u.IOMMU_IOAS_MAP_FIXED_IOVA
    return flags | u.IOMMU_IOAS_MAP_FIXED_IOVA

