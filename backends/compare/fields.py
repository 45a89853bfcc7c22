"""Which bytes of an ioctl argument are handles: object IDs, fds, user addresses.

Two backends number their objects, fds and user memory independently, so those fields
are translated between them, never compared raw; every other byte of the argument is
compared as it is. The layout of an argument comes from the iommufd command table (the
struct of the request), so a caller's plain byte buffer (a struct shorter or longer than
its type) is read the same way the kernel reads it. ``IOMMU_TEST_CMD`` is a union:
its ``op`` picks the member, and whether ``id`` names an object or an access fd.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uapi_headers as u
from uapi_headers.commands import command_by_request


class Kind(enum.Enum):
    """What a handle field holds."""

    ID = "id"        # an iommufd object ID (per iommufd context)
    FD = "fd"        # a file descriptor of the process
    ADDR = "addr"    # a user virtual address
    PAGES = "pages"  # a selftest access's pages ID (per access fd)


@dataclass(frozen=True)
class Field:
    """One handle field of an argument: its dotted name, place and kind."""

    name: str
    offset: int
    size: int
    kind: Kind

    def read(self, data: bytes | bytearray) -> int | None:
        """The field's value in ``data``, None when ``data`` ends before it."""
        if self.offset + self.size > len(data):
            return None
        return int.from_bytes(data[self.offset:self.offset + self.size], "little")

    def write(self, data: bytearray, value: int) -> None:
        """Store ``value`` (truncated to the field) into ``data``."""
        mask = (1 << (8 * self.size)) - 1
        data[self.offset:self.offset + self.size] = (value & mask).to_bytes(self.size, "little")


@dataclass(frozen=True)
class Layout:
    """How to read one ioctl argument: its struct, op name and handle fields."""

    struct: str | None     # "struct iommu_ioas_map", None for an unknown argument
    call: str              # "IOMMU_IOAS_MAP", "IOMMU_TEST_CMD/IOMMU_TEST_OP_MOCK_DOMAIN"
    fields: tuple[Field, ...]
    member: str | None = None  # the union member of IOMMU_TEST_CMD in use


# Leaf names that end in "_id" but hold a value the caller chooses, not an object.
_NOT_OBJECTS = frozenset({"option_id", "virt_id", "iotlb_id", "cache_id", "vdev_id"})
_ID = re.compile(r"^(id|\w+_id)$")
_ADDRS = frozenset({"user_va", "uptr", "vaddr", "allowed_iovas"})
# Fields whose name says nothing: (struct, dotted field) -> kind.
_SPECIAL: dict[tuple[str, str], Kind | None] = {
    ("struct iommu_hwpt_get_dirty_bitmap", "data"): Kind.ADDR,
    ("struct iommu_test_cmd", "check_iotlb.id"): None,       # an IOTLB index
    ("struct iommu_test_cmd", "check_dev_cache.id"): None,   # a cache index
    ("struct iommu_test_cmd", "access_pages.out_access_pages_id"): Kind.PAGES,
    ("struct iommu_test_cmd", "destroy_access_pages.access_pages_id"): Kind.PAGES,
}


def kind_of(struct: str, name: str) -> Kind | None:
    """The handle kind of field ``name`` (dotted) of ``struct``, None for plain data."""
    if _is_pointer(struct, name):
        return Kind.ADDR
    if (struct, name) in _SPECIAL:
        return _SPECIAL[(struct, name)]
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _NOT_OBJECTS:
        return None
    if leaf == "fd" or leaf.endswith("_fd"):
        return Kind.FD
    if leaf in _ADDRS or leaf.endswith("_uptr"):
        return Kind.ADDR
    if _ID.match(leaf):
        return Kind.ID
    return None


def _is_pointer(struct: str, name: str) -> bool:
    ctype = u.ffi.typeof(struct)
    for part in name.split("."):
        ctype = dict(ctype.fields)[part].type
    return bool(ctype.kind == "pointer")


def leaves(ctype: Any, prefix: str = "", base: int = 0) -> Iterator[tuple[str, int, int]]:
    """``(dotted name, offset, size)`` of every scalar field of a cffi struct type;
    union members are all listed (callers pick one)."""
    for name, field in ctype.fields or ():
        ftype = field.type
        offset = base + field.offset
        dotted = f"{prefix}{name}" if name else prefix.rstrip(".")
        if ftype.kind in ("struct", "union"):
            yield from leaves(ftype, f"{dotted}." if dotted else "", offset)
        elif ftype.kind in ("primitive", "pointer"):
            yield dotted, offset, u.ffi.sizeof(ftype)


# IOMMU_TEST_CMD: op -> (union member, kind of cmd.id)
_TEST_OPS: dict[int, tuple[str | None, Kind | None]] = {
    u.IOMMU_TEST_OP_ADD_RESERVED: ("add_reserved", Kind.ID),
    u.IOMMU_TEST_OP_MOCK_DOMAIN: ("mock_domain", Kind.ID),
    u.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: ("mock_domain_flags", Kind.ID),
    u.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: ("mock_domain_replace", Kind.ID),
    u.IOMMU_TEST_OP_MD_CHECK_MAP: ("check_map", Kind.ID),
    u.IOMMU_TEST_OP_MD_CHECK_REFS: ("check_refs", None),
    u.IOMMU_TEST_OP_CREATE_ACCESS: ("create_access", Kind.ID),
    u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: ("destroy_access_pages", Kind.FD),
    u.IOMMU_TEST_OP_ACCESS_PAGES: ("access_pages", Kind.FD),
    u.IOMMU_TEST_OP_ACCESS_RW: ("access_rw", Kind.FD),
    u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: ("memory_limit", None),
    u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: ("access_replace_ioas", Kind.FD),
    u.IOMMU_TEST_OP_DIRTY: ("dirty", Kind.ID),
    u.IOMMU_TEST_OP_MD_CHECK_IOTLB: ("check_iotlb", Kind.ID),
    u.IOMMU_TEST_OP_TRIGGER_IOPF: ("trigger_iopf", None),
    u.IOMMU_TEST_OP_DEV_CHECK_CACHE: ("check_dev_cache", Kind.ID),
    u.IOMMU_TEST_OP_TRIGGER_VEVENT: ("trigger_vevent", None),
    u.IOMMU_TEST_OP_PASID_ATTACH: ("pasid_attach", Kind.ID),
    u.IOMMU_TEST_OP_PASID_REPLACE: ("pasid_replace", Kind.ID),
    u.IOMMU_TEST_OP_PASID_DETACH: ("pasid_detach", Kind.ID),
    u.IOMMU_TEST_OP_PASID_CHECK_HWPT: ("pasid_check", Kind.ID),
    u.IOMMU_TEST_OP_DMABUF_GET: ("dmabuf_get", None),
    u.IOMMU_TEST_OP_DMABUF_REVOKE: ("dmabuf_revoke", None),
}
TEST_OP_NAMES: dict[int, str] = {
    value: name for name, value in vars(u).items()
    if name.startswith("IOMMU_TEST_OP_") and isinstance(value, int)}
REQUEST_NAMES: dict[int, str] = {value: name for name, value in u.IOCTLS.items()}
_TEST_CMD = "struct iommu_test_cmd"
# VFIO compat ioctls (on the iommufd fd): their structs, for callers that pass bytes.
_VFIO_STRUCTS: dict[int, str] = {
    u.VFIO_IOMMU_GET_INFO: "struct vfio_iommu_type1_info",
    u.VFIO_IOMMU_MAP_DMA: "struct vfio_iommu_type1_dma_map",
    u.VFIO_IOMMU_UNMAP_DMA: "struct vfio_iommu_type1_dma_unmap",
}


def _struct_fields(struct: str, member: str | None = None,
                   id_kind: Kind | None = None) -> tuple[Field, ...]:
    out: list[Field] = []
    for name, offset, size in leaves(u.ffi.typeof(struct)):
        head = name.split(".", 1)[0]
        if member is not None and "." in name and head != member:
            continue
        kind = id_kind if (struct == _TEST_CMD and name == "id") else kind_of(struct, name)
        if kind is not None:
            out.append(Field(name, offset, size, kind))
    return tuple(out)


_CACHE: dict[tuple[int, int | str], Layout] = {}


def _cdata_struct(arg: Any) -> str | None:
    ctype = u.ffi.typeof(arg)
    if ctype.kind == "pointer" and ctype.item.kind == "struct":
        return str(ctype.item.cname)
    return None


def layout(request: int, arg: Any, data: bytes | bytearray) -> Layout:
    """The layout of ``arg`` (cdata, int or None) for ``request``; ``data`` is its bytes."""
    command = command_by_request(request)
    if command is not None and command.name == "IOMMU_TEST_CMD":
        op = int.from_bytes(data[4:8], "little") if len(data) >= 8 else -1
        key: tuple[int, int | str] = (request, op)
        if key not in _CACHE:
            member, id_kind = _TEST_OPS.get(op, (None, None))
            call = f"IOMMU_TEST_CMD/{TEST_OP_NAMES.get(op, f'op {op}')}"
            fields = _struct_fields(_TEST_CMD, member or "-", id_kind)
            _CACHE[key] = Layout(_TEST_CMD, call, fields, member)
        return _CACHE[key]
    name = REQUEST_NAMES.get(request, f"ioctl {request:#x}")
    struct = command.struct if command is not None else None
    if struct is None and arg is not None and not isinstance(arg, int):
        struct = _cdata_struct(arg)
    struct = struct or _VFIO_STRUCTS.get(request)
    key = (request, struct or "")
    if key not in _CACHE:
        _CACHE[key] = Layout(struct, name, _struct_fields(struct) if struct else ())
    return _CACHE[key]


def call_name(request: int, data: bytes | bytearray = b"") -> str:
    """A readable name of an ioctl call (``IOMMU_TEST_CMD/IOMMU_TEST_OP_ACCESS_RW``)."""
    return layout(request, None, data).call
