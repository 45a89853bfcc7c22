"""check_access_rw must catch a kernel whose ACCESS_RW reads or writes the wrong bytes.

The helper checks writes through later reads and a final look at the window (one peek
per batch, for speed on QEMU); these tests prove that a wrong byte still fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import uapi_headers as u
from backends import open_backend
from backends.mock import access as mock_access
from harness.helpers import Ioas, Iommufd, SelftestGlobals, check_access_rw, create_access


@pytest.fixture
def setup() -> Iterator[tuple[Iommufd, SelftestGlobals, int]]:
    with open_backend("mock") as backend, Iommufd.open(backend) as fd:
        g = SelftestGlobals.create(backend)
        ioas = Ioas(fd, fd.ioas_alloc())
        ioas.map_fixed(g.buffer, g.buffer_size, u.MOCK_APERTURE_START)
        access = create_access(fd, ioas.id, 0)
        yield fd, g, access.id
        access.close()


def _corrupt(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = mock_access.iommufd_access_rw

    def wrong(access: Any, iova: int, buf: bytearray, length: int, flags: int) -> None:
        writing = bool(flags & u.MOCK_ACCESS_RW_WRITE)
        if writing and which == "write" and length == 7:
            buf[-1] ^= 0xFF  # store one wrong byte
        real(access, iova, buf, length, flags)
        if not writing and which == "read" and length == 40:
            buf[0] ^= 0xFF  # return one wrong byte

    monkeypatch.setattr(mock_access, "iommufd_access_rw", wrong)


def test_a_correct_kernel_passes(setup: tuple[Iommufd, SelftestGlobals, int]) -> None:
    check_access_rw(*setup, u.MOCK_APERTURE_START)


@pytest.mark.parametrize("which", ["read", "write"])
def test_a_wrong_byte_fails(which: str, setup: tuple[Iommufd, SelftestGlobals, int],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    _corrupt(which, monkeypatch)
    with pytest.raises(AssertionError, match=r"ACCESS_RW (read|write)"):
        check_access_rw(*setup, u.MOCK_APERTURE_START)
