"""ABI facts (sizes, offsets, values) in one shape for both sides, and their comparison.

The Python side's facts come from ``uapi_headers.ffi`` (cffi's own layout computation) and
its tables; the C side's are parsed from the probe's output (see :mod:`abi_probe.probe`).
A comparison never stops at the first difference: it returns every :class:`Mismatch` and
counts what it compared, so one failing run shows the whole picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uapi_headers
from uapi_headers import layout

if TYPE_CHECKING:
    # Only for the annotation: inventory imports probe, which imports this module.
    from .inventory import HeaderInventory


@dataclass(frozen=True)
class FieldFacts:
    """One field (or dotted sub-field) of a struct."""

    offset: int
    size: int | None
    """sizeof the field; None for a flexible array member."""
    elem_size: int | None
    """For arrays (flexible ones too): sizeof one element; None otherwise."""
    signed: bool | None
    """For integers and arrays of integers: whether the integer type is signed."""


@dataclass(frozen=True)
class StructFacts:
    """A struct or union: its size, alignment and fields by C designator."""

    size: int
    align: int
    fields: dict[str, FieldFacts]


@dataclass(frozen=True)
class CommandFacts:
    """What the kernel's dispatch table says about one ioctl."""

    struct: str
    """The argument type, ``"struct iommu_ioas_map"``."""
    last_field: str
    """The field whose end is the minimum accepted size."""
    min_size: int
    size: int


@dataclass
class AbiFacts:
    """Everything one side knows; names are the kernel's."""

    structs: dict[str, StructFacts] = field(default_factory=dict)
    enums: dict[str, int] = field(default_factory=dict)
    """sizeof(enum tag), by tag (only tags that exist in C)."""
    constants: dict[str, int] = field(default_factory=dict)
    ioctls: dict[str, int] = field(default_factory=dict)
    commands: dict[str, CommandFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class Mismatch:
    """One difference between the real header (C) and uapi_headers (Python)."""

    item: str
    """What differs: ``"struct iommu_hw_info.out_capabilities"``, ``"IOMMU_DESTROY"``."""
    what: str
    """Which property: ``"offset"``, ``"value"``, ``"missing in Python"``, ..."""
    c: object
    python: object

    def __str__(self) -> str:
        return f"{self.item}: {self.what}: C={_show(self.c)} Python={_show(self.python)}"


@dataclass
class Counts:
    """How many items of each kind were compared (present on both sides)."""

    structs: int = 0
    fields: int = 0
    constants: int = 0
    ioctls: int = 0
    enums: int = 0
    commands: int = 0

    def __str__(self) -> str:
        return (f"{self.structs} structs, {self.fields} fields, {self.constants} constants, "
                f"{self.ioctls} ioctls, {self.enums} enum tags, {self.commands} commands")


def _show(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) and value > 9:
        return f"{value} ({value:#x})"
    return str(value)


def _python_field(info: layout.FieldInfo) -> FieldFacts:
    ctype: Any = uapi_headers.ffi.typeof(info.ctype) if "$" not in info.ctype else None
    elem_size: int | None = None
    if ctype is not None and ctype.kind == "array":
        elem_size = uapi_headers.ffi.sizeof(ctype.item)
    return FieldFacts(info.offset, info.size, elem_size, info.signed)


def python_struct(name: str) -> StructFacts:
    """The facts of one struct as ``uapi_headers.ffi`` lays it out."""
    ffi = uapi_headers.ffi
    return StructFacts(
        size=ffi.sizeof(name),
        align=ffi.alignof(name),
        fields={info.path: _python_field(info) for info in layout.fields(name)},
    )


def python_enum_tags() -> list[str]:
    """Enum tags of the Python side that exist in C (not the ``_anon_*`` stand-ins)."""
    return [tag for tag in uapi_headers.ENUM_TAGS
            if not tag.startswith(uapi_headers.ANON_ENUM_PREFIX)]


def python_facts() -> AbiFacts:
    """Everything uapi_headers declares, in comparable form."""
    ffi = uapi_headers.ffi
    return AbiFacts(
        structs={name: python_struct(name) for name in layout.struct_names()},
        enums={tag: ffi.sizeof(f"enum {tag}") for tag in python_enum_tags()},
        constants=dict(uapi_headers.CONSTANTS),
        ioctls=dict(uapi_headers.IOCTLS),
        commands={
            command.name: CommandFacts(command.struct, command.last_field, command.min_size,
                                       command.size)
            for command in uapi_headers.IOMMUFD_COMMANDS
        },
    )


def _compare_values(kind: str, c: dict[str, int], py: dict[str, int],
                    out: list[Mismatch]) -> int:
    compared = 0
    for name, py_value in py.items():
        if name not in c:
            continue  # reported as missing by the caller (probe drop) or not probed
        compared += 1
        if c[name] != py_value:
            out.append(Mismatch(name, kind, c[name], py_value))
    return compared


def compare(c: AbiFacts, py: AbiFacts) -> tuple[list[Mismatch], Counts]:
    """Every difference between the two sides, and how many items were compared.

    Items the Python side has and C lacks are the probe's business (a compile error names
    them); here only items both sides have are compared, plus commands, whose two tables
    are independent lists.
    """
    mismatches: list[Mismatch] = []
    counts = Counts()

    for name, py_struct in py.structs.items():
        c_struct = c.structs.get(name)
        if c_struct is None:
            continue
        counts.structs += 1
        for what in ("size", "align"):
            if getattr(c_struct, what) != getattr(py_struct, what):
                mismatches.append(Mismatch(name, what, getattr(c_struct, what),
                                           getattr(py_struct, what)))
        for path, py_field in py_struct.fields.items():
            c_field = c_struct.fields.get(path)
            if c_field is None:
                continue
            counts.fields += 1
            for what in ("offset", "size", "elem_size", "signed"):
                c_value, py_value = getattr(c_field, what), getattr(py_field, what)
                if c_value != py_value:
                    mismatches.append(Mismatch(f"{name}.{path}", what, c_value, py_value))

    counts.enums = _compare_values("sizeof enum", c.enums, py.enums, mismatches)
    counts.constants = _compare_values("value", c.constants, py.constants, mismatches)
    counts.ioctls = _compare_values("ioctl number", c.ioctls, py.ioctls, mismatches)

    for name in sorted(c.commands.keys() | py.commands.keys()):
        c_cmd, py_cmd = c.commands.get(name), py.commands.get(name)
        if c_cmd is None or py_cmd is None:
            side = "missing in Python" if py_cmd is None else "missing in the kernel table"
            mismatches.append(Mismatch(f"command {name}", side, c_cmd and c_cmd.struct,
                                       py_cmd and py_cmd.struct))
            continue
        counts.commands += 1
        for what in ("struct", "last_field", "min_size", "size"):
            if getattr(c_cmd, what) != getattr(py_cmd, what):
                mismatches.append(Mismatch(f"command {name}", what, getattr(c_cmd, what),
                                           getattr(py_cmd, what)))
    return mismatches, counts


def dropped_mismatches(dropped: dict[str, str]) -> list[Mismatch]:
    """Items the probe asked about that the real headers do not have.

    A struct that does not exist makes every one of its fields fail too; only the struct
    is reported then.
    """
    missing_structs = {item for item in dropped if "." not in item and " " in item
                       and item.split(" ", 1)[0] in ("struct", "union")}
    out: list[Mismatch] = []
    for item, error in sorted(dropped.items()):
        owner = item.split(".", 1)[0]
        if "." in item and owner in missing_structs:
            continue
        out.append(Mismatch(item, "missing in the C header", f"absent (cc: {error})",
                            "declared"))
    return out


@dataclass(frozen=True)
class InventoryScope:
    """How much of one header the Python side promises to declare."""

    header: str
    """File name, ``"iommufd.h"``."""
    complete: bool
    """True: every struct, enum, enumerator and macro of it must be in Python. False (vfio.h,
    of which only the iommufd-related part is declared): only the structs Python declares
    must have all their fields."""


def compare_inventory(inventories: dict[str, HeaderInventory], scopes: list[InventoryScope]
                      ) -> tuple[list[Mismatch], int]:
    """Declarations of the real headers that uapi_headers lacks; and how many were checked.

    ``inventories`` maps a header file name to what it declares
    (:func:`abi_probe.inventory.header_inventories`).
    """
    ffi = uapi_headers.ffi
    py_structs = set(layout.struct_names())
    py_names = set(uapi_headers.CONSTANTS) | set(uapi_headers.IOCTLS)
    py_tags = set(python_enum_tags())
    mismatches: list[Mismatch] = []
    checked = 0

    def need(present: bool, item: str, c_value: object = "declared") -> None:
        nonlocal checked
        checked += 1
        if not present:
            mismatches.append(Mismatch(item, "missing in Python", c_value, "absent"))

    for scope in scopes:
        inventory = inventories.get(scope.header)
        if inventory is None:
            mismatches.append(Mismatch(scope.header, "header not reached", None, "expected"))
            continue
        for struct, paths in inventory.structs.items():
            if struct not in py_structs:
                if scope.complete:
                    need(False, struct)
                continue
            need(True, struct)
            py_paths = {info.path for info in layout.fields(struct)}
            for path in paths:
                need(path in py_paths, f"{struct}.{path}")
        if not scope.complete:
            continue
        for tag, names in inventory.enums.items():
            need(tag in py_tags, f"enum {tag}")
            if tag not in py_tags:
                continue
            py_enumerators = dict(ffi.typeof(f"enum {tag}").relements)
            for name in names:
                need(name in py_enumerators, f"enum {tag}: {name}")
            for name in py_enumerators.keys() - set(names):
                mismatches.append(Mismatch(f"enum {tag}: {name}", "not an enumerator of it in C",
                                           None, py_enumerators[name]))
        for name in inventory.anonymous_enumerators:
            need(name in py_names, name)
        for name, body in inventory.macros.items():
            need(name in py_names, name, f"#define {name} {body}")
    return mismatches, checked
