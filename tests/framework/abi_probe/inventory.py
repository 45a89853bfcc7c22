"""What the real headers declare, read from their preprocessed text.

The probe answers questions the Python side asks; this module finds what it did not ask
about: a struct, field, enumerator or macro the header has and uapi_headers lacks. The
headers are preprocessed by the C compiler (``-dD`` keeps each ``#define`` where it was
made, with line markers naming the file) and parsed with pycparser, which cffi itself uses
to read its cdefs. Declarations are attributed to the header whose text made them.

Also here: the kernel's ioctl dispatch table (``IOCTL_OP`` entries of main.c).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycparser import c_ast, c_parser  # type: ignore[import-untyped]

from .probe import KernelIoctlOp, ProbeError

# pycparser reads ISO C; the uapi headers use a few GNU spellings, which are harmless to
# drop for a names-only inventory (the probe checks the layout, alignment included).
_GNU_AWAY = (
    "-D__attribute__(x)=",
    "-D__extension__=",
    "-D__signed__=signed",
    "-D__inline__=inline",
    "-D__inline=inline",
    "-D__asm__(x)=",
    "-D__volatile__=volatile",
)

_LINE_MARKER = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')
_DEFINE = re.compile(r"^#define\s+(\w+)(\(?)\s*(.*)$")


@dataclass
class HeaderInventory:
    """The file-scope declarations one header makes."""

    structs: dict[str, list[str]] = field(default_factory=dict)
    """``"struct x"`` / ``"union x"`` -> member designators (dotted into untagged members)."""
    enums: dict[str, list[str]] = field(default_factory=dict)
    """Enum tag -> enumerator names, for tagged enums."""
    anonymous_enumerators: list[str] = field(default_factory=list)
    """Enumerators of the header's untagged enums."""
    macros: dict[str, str] = field(default_factory=dict)
    """Object-like macros with a body -> the body (include guards have none)."""


def _preprocess(compiler: str, include_dirs: Iterable[Path], includes: Iterable[str],
                extra_dirs: Iterable[Path]) -> str:
    source = "".join(f"#include {inc}\n" for inc in includes)
    # -nostdinc: the uapi headers need nothing from the host, and must not pick up the
    # host's own (older) linux/ headers by accident.
    argv = [compiler, "-E", "-dD", "-nostdinc", *_GNU_AWAY,
            *(f"-I{d}" for d in include_dirs), *(f"-iquote{d}" for d in extra_dirs),
            "-x", "c", "-"]
    proc = subprocess.run(argv, input=source, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProbeError(f"preprocessing the headers failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _member_paths(node: Any, prefix: str = "") -> list[str]:
    """Member designators of a struct/union AST node, the way C (and layout.fields) name them."""
    paths: list[str] = []
    for decl in node.decls or ():
        inner = decl.type
        while isinstance(inner, c_ast.TypeDecl):
            inner = inner.type
        nested = isinstance(inner, c_ast.Struct | c_ast.Union) and inner.name is None
        if decl.name is None:
            # An anonymous struct/union member: its members belong to the outer struct.
            if nested:
                paths.extend(_member_paths(inner, prefix))
            continue
        path = f"{prefix}{decl.name}"
        paths.append(path)
        if nested:
            paths.extend(_member_paths(inner, f"{path}."))
    return paths


def header_inventories(include_dirs: Iterable[Path], includes: Iterable[str],
                       *, extra_dirs: Iterable[Path] = (),
                       compiler: str = "cc") -> dict[str, HeaderInventory]:
    """File name (``"iommufd.h"``) -> what that header declares, for every header reached.

    ``includes`` are ``#include`` operands; ``extra_dirs`` are searched for the quoted ones
    only (the selftest header's directory holds kernel-internal headers too).
    """
    text = _preprocess(compiler, include_dirs, includes, extra_dirs)
    found: dict[str, HeaderInventory] = {}
    current = ""
    c_lines: list[str] = []
    for line in text.splitlines():
        marker = _LINE_MARKER.match(line)
        if marker:
            current = Path(marker.group(2)).name
            c_lines.append(line)
            continue
        define = _DEFINE.match(line)
        if define:
            name, function_like, body = define.groups()
            if not function_like and body.strip():
                found.setdefault(current, HeaderInventory()).macros[name] = body.strip()
            c_lines.append("")  # keep the line count for the markers that follow
            continue
        if line.startswith("#"):
            c_lines.append("")  # #undef and the like
            continue
        c_lines.append(line)

    ast = c_parser.CParser().parse("\n".join(c_lines), "probe-headers")
    for ext in ast.ext:
        if not isinstance(ext, c_ast.Decl) or ext.coord is None:
            continue
        inventory = found.setdefault(Path(ext.coord.file).name, HeaderInventory())
        node = ext.type
        if isinstance(node, c_ast.Struct | c_ast.Union) and node.name and node.decls:
            kind = "struct" if isinstance(node, c_ast.Struct) else "union"
            inventory.structs[f"{kind} {node.name}"] = _member_paths(node)
        elif isinstance(node, c_ast.Enum) and node.values is not None:
            names = [value.name for value in node.values.enumerators]
            if node.name:
                inventory.enums[node.name] = names
            else:
                inventory.anonymous_enumerators.extend(names)
    return found


_IOCTL_OP = re.compile(r"IOCTL_OP\(\s*(\w+)\s*,\s*\w+\s*,\s*(struct\s+\w+)\s*,\s*(\w+)\s*\)")


def kernel_ioctl_table(main_c: Path) -> list[KernelIoctlOp]:
    """The ``IOCTL_OP(ioctl, handler, struct x, last)`` entries of iommufd's main.c.

    The macro's own definition does not match (its struct parameter is not ``struct x``);
    entries under ``#ifdef CONFIG_IOMMUFD_TEST`` (IOMMU_TEST_CMD) do, as they should.
    """
    text = main_c.read_text(errors="replace")
    ops = [KernelIoctlOp(m.group(1), " ".join(m.group(2).split()), m.group(3))
           for m in _IOCTL_OP.finditer(text)]
    if not ops:
        raise ProbeError(f"{main_c}: no IOCTL_OP entries found")
    return ops
