"""The kernel backend's native ioctl loop (backends/kernel/native.py): a batch run through
it has exactly the outcomes, argument contents and side effects of the same batch run
call by call in Python, and it hands back every call the Python path must take.

The ioctls are FIONREAD (writes the pipe's byte count into the argument) and a request
no file knows (ENOTTY), on a pipe: no /dev/iommu needed.
"""

from __future__ import annotations

import errno
import os
import termios
from collections.abc import Iterator
from typing import Any

import cffi
import pytest

from backends.calls import Call, Link, Outcome, run_calls
from backends.kernel import KernelBackend, native

ffi = cffi.FFI()
UNKNOWN = 0x1234  # no ioctl of a pipe: ENOTTY


@pytest.fixture
def be() -> Iterator[KernelBackend]:
    backend = KernelBackend(dev_iommu=None)
    if backend._loop is None:
        backend.shutdown()
        pytest.fail(f"no native ioctl loop on this host: {native.load_reason()}")
    yield backend
    backend.shutdown()


@pytest.fixture
def pipe() -> Iterator[int]:
    r, w = os.pipe()
    os.write(w, b"hello")
    yield r
    os.close(r)
    os.close(w)


def _buffers(count: int) -> list[Any]:
    return [ffi.new("char[64]") for _ in range(count)]


def _calls(fd: int, bufs: list[Any]) -> list[Call]:
    return [
        ("ioctl", fd, termios.FIONREAD, bufs[0]),
        ("ioctl", fd, UNKNOWN, bufs[1]),
        ("ioctl", fd, UNKNOWN, None),
        # bytes 0-3 of call 0's argument (the count FIONREAD wrote) into bytes 8-11
        ("ioctl", fd, termios.FIONREAD, bufs[2], (Link(8, 0, 0, 4),)),
        ("ioctl", fd, UNKNOWN, 7),
    ]


def _summary(outcomes: list[Outcome], bufs: list[Any]) -> tuple[Any, ...]:
    return ([(o.value, o.errno) for o in outcomes], [bytes(ffi.buffer(b)) for b in bufs])


@pytest.mark.parametrize("stop_on_error", [False, True])
def test_a_batch_has_the_outcomes_of_the_python_path(be, pipe, stop_on_error, monkeypatch):
    py_bufs = _buffers(3)
    expected = _summary(run_calls(be, _calls(pipe, py_bufs), stop_on_error=stop_on_error),
                        py_bufs)
    # Through the loop, backend.ioctl (the Python path) is never called.
    monkeypatch.setattr(be, "ioctl", lambda *a: pytest.fail(f"Python path for {a}"))
    bufs = _buffers(3)
    got = _summary(be.batch(_calls(pipe, bufs), stop_on_error=stop_on_error), bufs)
    assert got == expected
    outcomes = expected[0]
    if stop_on_error:
        assert outcomes == [(0, 0), (None, errno.ENOTTY)]
    else:
        assert outcomes == [(0, 0), (None, errno.ENOTTY), (None, errno.ENOTTY), (0, 0),
                            (None, errno.ENOTTY)]
        assert expected[1][2][:12] == b"\x05\0\0\0" + bytes(4) + b"\x05\0\0\0"


def test_the_same_calls_again_reuse_the_prepared_arrays(be, pipe):
    bufs = _buffers(3)
    calls = _calls(pipe, bufs)
    be.batch(calls)
    prepared = be._loop._last
    # A new list of the same call tuples (as a loop re-sends them): prepared once.
    assert [o.errno for o in be.batch(list(calls))] == [0, 25, 25, 0, 25]
    assert be._loop._last is prepared
    # A different tuple at the same place: prepared anew.
    other = list(calls)
    other[1] = ("ioctl", pipe, UNKNOWN, bufs[1])
    be.batch(other)
    assert be._loop._last is not prepared


def test_an_argument_the_kernel_would_read_past_goes_through_the_guard(be, pipe,
                                                                       monkeypatch):
    small = ffi.new("char[8]")
    ffi.cast("uint32_t *", small)[0] = 64  # declares 64 bytes, has 8
    bufs = _buffers(2)
    calls: list[Call] = [("ioctl", pipe, termios.FIONREAD, bufs[0]),
                         ("ioctl", pipe, UNKNOWN, small),
                         ("ioctl", pipe, termios.FIONREAD, bufs[1])]
    guarded: list[int] = []
    real = be._guarded_ioctl
    monkeypatch.setattr(be, "_guarded_ioctl",
                        lambda fd, req, arg: guarded.append(req) or real(fd, req, arg))
    outcomes = be.batch(calls)
    assert [(o.value, o.errno) for o in outcomes] == [(0, 0), (None, errno.ENOTTY), (0, 0)]
    assert guarded == [UNKNOWN]
    assert bytes(ffi.buffer(bufs[1]))[:4] == b"\x05\0\0\0"


def test_a_link_to_a_call_outside_the_run_is_applied_by_python(be, pipe):
    first = _buffers(1)[0]
    bufs = _buffers(2)
    calls: list[Call] = [("ioctl", pipe, termios.FIONREAD, first),
                         ("getpid",),
                         ("ioctl", pipe, UNKNOWN, bufs[0]),
                         ("ioctl", pipe, UNKNOWN, bufs[1], (Link(16, 0, 0, 4),))]
    outcomes = be.batch(calls)
    assert [o.errno for o in outcomes] == [0, 0, errno.ENOTTY, errno.ENOTTY]
    assert bytes(ffi.buffer(bufs[1]))[16:20] == b"\x05\0\0\0"


def test_an_armed_fail_nth_count_takes_the_python_path(be, pipe, monkeypatch):
    monkeypatch.setattr(be._fail_nth, "idle", False)
    ran: list[int] = []
    monkeypatch.setattr(be._fail_nth, "call", lambda fn, *args: ran.append(1) or fn(*args))
    bufs = _buffers(3)
    outcomes = be.batch(_calls(pipe, bufs))
    assert [o.errno for o in outcomes] == [0, 25, 25, 0, 25]
    assert len(ran) == 5


def test_the_loop_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setenv(native.ENV, "0")
    assert native.load() is None
    assert native.load_reason() == f"{native.ENV}=0"
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setenv(native.ENV, "/nonexistent/ioctl_loop.so")
    assert native.load() is None
    assert native.load_reason().startswith("cannot load /nonexistent/ioctl_loop.so")


def test_a_link_past_its_buffer_fails_as_on_the_python_path(be, pipe):
    def calls(bufs: list[Any]) -> list[Call]:
        return [("ioctl", pipe, termios.FIONREAD, bufs[0]),
                ("ioctl", pipe, UNKNOWN, bufs[1], (Link(60, 0, 0, 8),))]  # 60 + 8 > 64

    with pytest.raises(ValueError) as python_path:
        run_calls(be, calls(_buffers(2)))
    with pytest.raises(ValueError) as loop:
        be.batch(calls(_buffers(2)))
    assert str(loop.value) == str(python_path.value)
