"""What a Python reproducer script runs on: each step, its check, a kselftest-like report.

A script written by :mod:`harness.reproducer.python` is a list of ``Replay`` calls; this
keeps the scripts short and their output uniform: ``ok N - call`` when the backend gives
the expected result, ``not ok N - call: got ..., expected ...`` otherwise.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

import uapi_headers as u
from backends import Backend


def _describe(value: Any, err: int) -> str:
    if err:
        return f"errno {err} {_errno.errorcode.get(err, '?')}"
    return f"ok, returned {value!r}"


class Replay:
    """Runs the steps on ``backend`` and counts the results that are not as expected."""

    def __init__(self, backend: Backend, total: int) -> None:
        self.backend = backend
        self.failures = 0
        self.number = 0
        print("TAP version 13")
        print(f"1..{total}")

    def step(self, name: str, expect_errno: int, fn: Any, *args: Any,
             expect_value: Any = None) -> Any:
        """Run ``fn(*args)``; check its errno (and value, when given)."""
        self.number += 1
        try:
            value, err = fn(*args), 0
        except OSError as error:
            value, err = None, error.errno or -1
        ok = err == expect_errno and (expect_value is None or err or value == expect_value)
        if ok:
            print(f"ok {self.number} - {name}: {_describe(value, err)}")
        else:
            self.failures += 1
            print(f"not ok {self.number} - {name}: got {_describe(value, err)}, expected "
                  f"{_describe(expect_value, expect_errno)}")
        return value

    def check_fields(self, arg: Any, expected: dict[str, int]) -> None:
        """At a divergence: the argument's output fields against the expected values."""
        for name, want in expected.items():
            got: Any = arg
            for part in name.split("."):
                got = getattr(got, part)
            if int(got) != want:
                self.failures += 1
                print(f"# {name} is {int(got):#x}, expected {want:#x}")

    def check_bytes(self, what: str, got: bytes, want: bytes) -> None:
        """At a divergence: bytes read back against the expected bytes."""
        if got != want:
            self.failures += 1
            first = next(i for i in range(min(len(got), len(want)) + 1)
                         if i >= min(len(got), len(want)) or got[i] != want[i])
            print(f"# {what}: differs from byte {first} ({len(got)} vs {len(want)} bytes)")

    def alloc(self, length: int, align: int, shared: bool, hugetlb: bool) -> int:
        """Memory at an odd multiple of ``align``: the address alignment of the run."""
        from backends.compare.backend import alloc_exact

        return alloc_exact(self.backend, length, align, shared, hugetlb)

    def ioctl(self, fd: int, request: int, arg: Any) -> int:
        """The backend's ioctl (a step function)."""
        return self.backend.ioctl(fd, request, arg)

    @staticmethod
    def raw(data: bytes) -> Any:
        """An ioctl argument of exactly these bytes (a struct of the wrong size)."""
        arg = u.ffi.new("uint8_t[]", len(data))
        u.ffi.memmove(arg, data, len(data))
        return arg

    @staticmethod
    def put(arg: Any, offset: int, size: int, value: int) -> None:
        """Store a handle into a raw argument."""
        u.ffi.buffer(arg)[offset:offset + size] = (value % (1 << (8 * size))).to_bytes(
            size, "little")

    def done(self) -> int:
        """The exit status: 0 when every step gave the expected result."""
        print(f"# {self.number - self.failures} as expected, {self.failures} not")
        return 1 if self.failures else 0
