"""Walk the declared structs field by field, as C would name them.

Used by the ABI conformance test (which prints the same facts from C) and handy for
anyone who needs to list or dump a struct generically. Members of anonymous unions and
structs appear under their own names (as in C); members of the named-but-untagged
structs inside a union (``iommu_test_cmd.mock_domain``) appear as dotted paths
(``"mock_domain.out_hwpt_id"``), which C's offsetof accepts too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from uapi_headers._ffi import ffi


@dataclass(frozen=True)
class FieldInfo:
    """One (possibly nested) field of a struct."""

    path: str
    """Member designator relative to the outer struct, e.g. ``"mock_domain.out_hwpt_id"``."""
    offset: int
    """Byte offset from the start of the outer struct."""
    size: int | None
    """sizeof the field; None for a flexible array member (it has no size)."""
    ctype: str
    """cffi's spelling of the field type, e.g. ``"uint8_t[3]"``."""
    signed: bool | None
    """For integers and arrays of integers: whether the integer type is signed."""


def struct_names() -> list[str]:
    """Every named struct and union the FFI knows, as ``"struct x"`` / ``"union x"``."""
    _typedefs, structs, unions = ffi.list_types()
    return [f"struct {name}" for name in structs] + [f"union {name}" for name in unions]


def _is_untagged(ctype: Any) -> bool:
    # cffi names the types of untagged struct/union members "struct $N".
    return ctype.kind in ("struct", "union") and "$" in ctype.cname


def _signedness(ctype: Any) -> bool | None:
    scalar = ctype.item if ctype.kind == "array" else ctype
    if scalar.kind != "primitive" or scalar.cname in ("float", "double", "_Bool"):
        return None
    return bool(int(ffi.cast(scalar, -1)) < 0)


def _walk(ctype: Any, prefix: str, base: int) -> Iterator[FieldInfo]:
    for name, field in ctype.fields:
        ftype = field.type
        path = f"{prefix}{name}"
        offset = base + field.offset
        if _is_untagged(ftype):
            yield FieldInfo(path, offset, ffi.sizeof(ftype), ftype.cname, None)
            yield from _walk(ftype, f"{path}.", offset)
            continue
        flexible = ftype.kind == "array" and ftype.length is None
        size = None if flexible else ffi.sizeof(ftype)
        yield FieldInfo(path, offset, size, ftype.cname, _signedness(ftype))


def fields(struct: str) -> list[FieldInfo]:
    """The fields of ``struct`` (e.g. ``"struct iommu_test_cmd"``) in declaration order."""
    return list(_walk(ffi.typeof(struct), "", 0))
