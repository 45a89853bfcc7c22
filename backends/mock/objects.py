"""iommufd objects and the per-fd object table (the ``ictx->objects`` xarray).

IDs come from an allocating xarray (``XA_FLAGS_ALLOC1``, ``xa_limit_31b``): the lowest
free index from 1. An ID is reserved (``XA_ZERO_ENTRY``) from allocation until
finalize, so lookups and DESTROY see ENOENT for it; a tombstone is a zero entry that
stays until close.
"""

from __future__ import annotations

import heapq
from enum import IntEnum
from errno import EBUSY
from typing import ClassVar

from backends.mock.errors import kerr

XA_LIMIT_31B = (1 << 31) - 1


class ObjType(IntEnum):
    """``enum iommufd_object_type`` (include/linux/iommufd.h)."""

    ANY = 0
    DEVICE = 1
    HWPT_PAGING = 2
    HWPT_NESTED = 3
    IOAS = 4
    ACCESS = 5
    FAULT = 6
    VIOMMU = 7
    VDEVICE = 8
    VEVENTQ = 9
    HW_QUEUE = 10
    SELFTEST = 11


class IommufdObject:
    """``struct iommufd_object``: an ID and a ``users`` refcount.

    ``users`` starts at 1, the reference the object table holds; every holder (a HWPT
    holding its IOAS, an attached device holding its HWPT, an ioctl that looked the
    object up) adds one. DESTROY succeeds only when the table's is the last.
    """

    obj_type: ClassVar[ObjType] = ObjType.ANY

    def __init__(self) -> None:
        self.id = 0
        self.users = 1

    def destroy(self) -> None:
        """The type's ``destroy`` op, run once the object left the table."""

    def abort(self) -> None:
        """The type's ``abort`` op (undo a never-finalized object); defaults to destroy."""
        self.destroy()

    def pre_destroy(self) -> None:
        """The type's ``pre_destroy`` op."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} users={self.users}>"


class ObjectTable:
    """``ictx->objects``: ID -> object, or None for a zero entry (reserved/tombstone)."""

    def __init__(self) -> None:
        self.entries: dict[int, IommufdObject | None] = {}
        self._free: list[int] = []
        self._next = 1

    def __len__(self) -> int:
        return len(self.entries)

    def alloc(self) -> int:
        """xa_alloc(XA_ZERO_ENTRY): reserve the lowest free ID."""
        while self._free:
            index = heapq.heappop(self._free)
            if index not in self.entries:
                self.entries[index] = None
                return index
        if self._next > XA_LIMIT_31B:
            raise kerr(EBUSY)
        index = self._next
        self._next += 1
        self.entries[index] = None
        return index

    def store(self, index: int, obj: IommufdObject | None) -> IommufdObject | None:
        """xas_store(); returns the old entry."""
        old = self.entries.get(index)
        self.entries[index] = obj
        return old

    def erase(self, index: int) -> None:
        """xa_erase(): the ID becomes free again."""
        if self.entries.pop(index, 0) != 0:
            heapq.heappush(self._free, index)

    def load(self, index: int) -> IommufdObject | None:
        """xa_load(): the object, or None for a free or zero entry."""
        return self.entries.get(index)

    def objects(self) -> list[IommufdObject]:
        """Every published object in ID order (``xa_for_each`` skips zero entries)."""
        return [obj for _, obj in sorted(self.entries.items()) if obj is not None]
