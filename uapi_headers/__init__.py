"""The iommufd uAPI (Linux 7.3.4) as this project's own C declarations, loaded with cffi.

Everything a test, helper or backend needs to speak the ioctl ABI::

    import uapi_headers as u
    cmd = u.ffi.new("struct iommu_ioas_map *")
    cmd.size = u.ffi.sizeof("struct iommu_ioas_map")
    cmd.flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_READABLE
    backend.ioctl(fd, u.IOMMU_IOAS_MAP, cmd)

- ``ffi``: one cffi FFI in ABI mode (no compiler at run time) that knows every struct
  of linux/iommufd.h, the iommufd-related parts of linux/vfio.h and the selftest ABI
  (iommufd_test.h) by its kernel name.
- Every ioctl number, macro and enumerator is a module attribute named exactly like the
  kernel's (``IOMMU_IOAS_MAP``, ``IOMMU_TEST_OP_MOCK_DOMAIN``, ``MOCK_PAGE_SIZE``,
  ``VFIO_IOMMU_MAP_DMA``, ...). ``IOCTLS`` and ``CONSTANTS`` list them by name.
- ``IOMMUFD_COMMANDS`` / ``command_by_nr`` / ``command_by_request``: the command table
  with each command's struct, ``min_size`` and ``size``.
- ``layout.fields(...)``: a struct's fields with C designators, offsets and sizes.

The declarations are checked field by field against the real headers by
tests/framework/test_abi_conformance.py.
"""

from __future__ import annotations

import re
from types import ModuleType

# Import order is declaration order into the shared FFI.
from uapi_headers import iommufd as iommufd
from uapi_headers import iommufd_test as iommufd_test
from uapi_headers import layout as layout
from uapi_headers import vfio as vfio
from uapi_headers._ffi import ANON_ENUM_PREFIX as ANON_ENUM_PREFIX
from uapi_headers._ffi import ENUM_TAGS as _ENUM_TAGS
from uapi_headers._ffi import IOCTLS as _IOCTLS
from uapi_headers._ffi import enumerators as enumerators
from uapi_headers._ffi import ffi as ffi
from uapi_headers.commands import IOMMUFD_COMMANDS as IOMMUFD_COMMANDS
from uapi_headers.commands import Command as Command
from uapi_headers.commands import command_by_name as command_by_name
from uapi_headers.commands import command_by_nr as command_by_nr
from uapi_headers.commands import command_by_request as command_by_request
from uapi_headers.commands import offsetofend as offsetofend
from uapi_headers.iommufd import *  # noqa: F403
from uapi_headers.iommufd_test import *  # noqa: F403
from uapi_headers.vfio import *  # noqa: F403

# A star import skips names with a leading underscore; this macro really has one.
from uapi_headers.vfio import (
    __VFIO_RESERVED_TYPE1_NESTING_IOMMU as __VFIO_RESERVED_TYPE1_NESTING_IOMMU,
)

HEADER_MODULES: tuple[ModuleType, ...] = (iommufd, vfio, iommufd_test)
"""The per-header modules, in declaration order."""

ENUM_TAGS: tuple[str, ...] = tuple(_ENUM_TAGS)
"""Every enum tag in the cdef text; ``_anon_*`` ones stand for the kernel's untagged enums."""

IOCTLS: dict[str, int] = dict(_IOCTLS)
"""Every ioctl request number, by kernel macro name."""

_MACRO_NAME = re.compile(r"^(__)?[A-Z][A-Za-z0-9_]*$")


def _constants() -> dict[str, int]:
    found: dict[str, int] = {}
    for module in HEADER_MODULES:
        for name, value in vars(module).items():
            if (
                _MACRO_NAME.match(name)
                and type(value) is int
                and name not in IOCTLS
                and name != "CDEF"
            ):
                found[name] = value
    return found


CONSTANTS: dict[str, int] = _constants()
"""Every macro and enumerator value (not the ioctl numbers), by kernel name."""
