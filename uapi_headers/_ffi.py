"""The single cffi FFI (ABI mode) that every header module declares into.

Each header module (``iommufd``, ``vfio``, ``iommufd_test``) hands its cdef text to
:func:`declare` when it is imported; the package ``__init__`` imports them in
dependency order, so ``uapi_headers.ffi`` knows every struct of every header.
No C compiler is involved at run time: cffi computes the layouts itself from
the declarations, and the conformance test checks them against the real headers.
"""

from __future__ import annotations

import re
from typing import Any

import cffi
from ioctl_opt import IO

ffi: Any = cffi.FFI()
"""The shared FFI; ``ffi.new("struct iommu_ioas_map *")``, ``ffi.sizeof(...)``."""

# Enum tags that stand for enums the kernel declares without a tag. cffi cannot list
# the enumerators of an anonymous enum, so the cdef text gives them a tag of ours;
# such tags do not exist in C and are never probed there.
ANON_ENUM_PREFIX = "_anon_"

ENUM_TAGS: list[str] = []
"""Every enum tag declared so far, in declaration order (including ``_anon_*`` tags)."""

IOCTLS: dict[str, int] = {}
"""Every ioctl request number defined so far, by its kernel macro name."""

_ENUM_TAG = re.compile(r"\benum\s+(\w+)\s*\{")


def declare(cdef: str) -> None:
    """Add one header's declarations to the shared FFI and note its enum tags."""
    ffi.cdef(cdef)
    ENUM_TAGS.extend(_ENUM_TAG.findall(cdef))


def enumerators(tag: str) -> dict[str, int]:
    """Name -> value of every enumerator of ``enum <tag>`` as declared in the cdef."""
    values: dict[str, int] = dict(ffi.typeof(f"enum {tag}").relements)
    return values


def enum_value(tag: str, name: str) -> int:
    """The value of enumerator ``name`` of ``enum <tag>``; KeyError if it is not there."""
    return enumerators(tag)[name]


def io_request(name: str, ioctl_type: int, nr: int) -> int:
    """``_IO(ioctl_type, nr)`` computed by ioctl_opt, recorded in :data:`IOCTLS`.

    iommufd and VFIO encode neither size nor direction in their numbers (the
    structs carry their own size), so every request of theirs is a plain ``_IO``.
    """
    request = int(IO(ioctl_type, nr))
    IOCTLS[name] = request
    return request
