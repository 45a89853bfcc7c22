"""A copy of the mock with one deliberately wrong rule, to prove the comparison finds it.

:class:`WrongRuleMock` behaves as the mock, except that during its own calls IOAS_MAP and
IOAS_MAP_FILE refuse lengths above :data:`WRONG_LIMIT` with EINVAL, which no kernel does.
Only this instance is affected: the rule is swapped in around each of its ioctls.
"""

from __future__ import annotations

from errno import EINVAL
from typing import Any

from backends.contract import IoctlArg
from backends.mock import MockBackend
from backends.mock import ioas as mock_ioas
from backends.mock.errors import kerr

WRONG_LIMIT = 8 * 4096
_right_check = mock_ioas._check_map_cmd


def _wrong_check_map_cmd(cmd: Any, reserved: int) -> None:
    _right_check(cmd, reserved)
    if cmd.length > WRONG_LIMIT:
        raise kerr(EINVAL)  # the injected wrong rule


class WrongRuleMock(MockBackend):
    """The mock, with the wrong IOAS_MAP length rule above."""

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        mock_ioas._check_map_cmd = _wrong_check_map_cmd
        try:
            return super().ioctl(fd, request, arg)
        finally:
            mock_ioas._check_map_cmd = _right_check
