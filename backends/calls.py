"""Contract calls as data: one table from op name to Backend method, and batches.

A server (:mod:`backends.kernel.rpc.dispatch`) runs wire requests through
:data:`CONTRACT_CALLS`; the same table runs a batch locally on any backend
(:func:`run_calls`), so scenario code can batch independent calls without caring
whether a round trip is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cffi

from backends.contract import Backend

_ffi = cffi.FFI()

#: a call as written by a caller: ``("ioctl", fd, request, arg)``, ``("close", fd)``, ...
#: An ioctl may carry a fifth item, a tuple of :class:`Link`.
Call = tuple[Any, ...]


class Link(NamedTuple):
    """Feed an earlier ioctl's output into a later one's argument, inside one batch.

    Before the linked ioctl runs, ``size`` bytes at ``dst_offset`` of its argument are
    replaced by the bytes at ``src_offset`` of call ``src``'s argument as that ioctl
    left it (on success or failure). So "map, then unmap whatever IOVA the kernel
    chose" is one round trip instead of two.
    """

    dst_offset: int
    src: int
    src_offset: int
    size: int


def apply_links(dst: Any, links: Sequence[Link], outputs: Sequence[Any]) -> None:
    """Copy each link's bytes from ``outputs[link.src]`` into the buffer ``dst``.

    ``dst`` supports slice assignment of bytes (a bytearray or a cffi buffer); an output
    is bytes or the cffi cdata the ioctl ran on. A link to a call that left no output is
    a ValueError.
    """
    for link in links:
        source = outputs[link.src] if 0 <= link.src < len(outputs) else None
        if source is None:
            raise ValueError(f"link to call {link.src}, which is not an earlier ioctl")
        if not isinstance(source, bytes | bytearray):
            source = _ffi.buffer(source)
        dst[link.dst_offset:link.dst_offset + link.size] = (
            source[link.src_offset:link.src_offset + link.size])


def _alloc(be: Backend, length: int, align: int = 0, shared: bool = True,
           hugetlb: bool = False) -> int:
    return be.alloc(length, align=align, shared=shared, hugetlb=hugetlb)


#: op name -> function(backend, *args); positional arguments in the contract's order
CONTRACT_CALLS: dict[str, Callable[..., Any]] = {
    "open": lambda be, path, flags=None: be.open(path) if flags is None else be.open(path, flags),
    "close": lambda be, fd: be.close(fd),
    "ioctl": lambda be, fd, request, arg=None, links=(): be.ioctl(fd, request, arg),
    "read": lambda be, fd, length: be.read(fd, length),
    "write": lambda be, fd, data: be.write(fd, data),
    "pread": lambda be, fd, length, offset: be.pread(fd, length, offset),
    "pwrite": lambda be, fd, data, offset: be.pwrite(fd, data, offset),
    "mmap": lambda be, fd, length, *rest: be.mmap(fd, length, *rest),
    "munmap": lambda be, addr, length: be.munmap(addr, length),
    "alloc": _alloc,
    "peek": lambda be, addr, length: be.peek(addr, length),
    "poke": lambda be, addr, data: be.poke(addr, data),
    "memfd": lambda be, length, *rest: be.memfd(length, *rest),
    "ftruncate": lambda be, fd, length: be.ftruncate(fd, length),
    "fail_nth_write": lambda be, n: be.fail_nth_write(n),
    "fail_nth_read": lambda be: be.fail_nth_read(),
    "getpid": lambda be: be.getpid(),
    "proc_status": lambda be, field, pid=0: be.proc_status(field, pid),
    "drop_capability": lambda be, name: be.drop_capability(name),
    "restore_capability": lambda be, name: be.restore_capability(name),
}


@dataclass
class Outcome:
    """The result of one call in a batch: a value, or the exception it raised."""

    value: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """The call succeeded."""
        return self.error is None

    @property
    def errno(self) -> int:
        """The OSError's errno, 0 on success (-1 for a non-errno failure)."""
        if self.error is None:
            return 0
        return getattr(self.error, "errno", None) or -1

    def unwrap(self) -> Any:
        """The value, or raise the call's exception."""
        if self.error is not None:
            raise self.error
        return self.value


def _is_contract_call(call: Call) -> bool:
    return bool(call) and call[0] in CONTRACT_CALLS


def check_call(call: Call) -> None:
    """Reject a malformed call before anything runs."""
    if not _is_contract_call(call):
        op = call[0] if call else None
        raise ValueError(f"not a contract call: {op!r} (valid: {', '.join(CONTRACT_CALLS)})")


#: ``(calls, start, end, stop_on_error) -> outcomes``: runs ``calls[start:end]``, all
#: ioctls, some faster way (a backend's native loop), and returns the outcomes of a
#: prefix of them; the call after that prefix (if not stopped by an error) then runs the
#: ordinary way. None or [] declines the first.
IoctlRun = Callable[[Sequence[Call], int, int, bool], list[Outcome] | None]


def _is_buffer_ioctl(call: Call) -> bool:
    return call[0] == "ioctl" and len(call) >= 4 and call[3] is not None \
        and not isinstance(call[3], int)


class _Outputs(Sequence[Any]):
    """Each ioctl's argument buffer after it ran, for later calls' links: the first
    ``ran`` calls' cdata (None for other calls), read only when a link asks."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.ran = 0

    def __len__(self) -> int:
        return self.ran

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int) or not 0 <= index < self.ran:
            raise IndexError(f"output {index!r} of {self.ran}")
        call = self.calls[index]
        return call[3] if _is_buffer_ioctl(call) else None


def run_calls(backend: Backend, calls: Sequence[Call], *,
              stop_on_error: bool = False, run_ioctls: IoctlRun | None = None) -> list[Outcome]:
    """Run ``calls`` in order on ``backend``; with ``stop_on_error`` the list
    ends with the first failed call. ``run_ioctls``, when given, is offered each run
    of consecutive ioctls first; the ones it declines go one by one."""
    if not all(map(_is_contract_call, calls)):  # one pass; the loop names the culprit
        for call in calls:
            check_call(call)
    outcomes: list[Outcome] = []
    outputs = _Outputs(calls)
    index = 0
    end = 0  # the end of the current run of consecutive ioctls
    while index < len(calls):
        if run_ioctls is not None and calls[index][0] == "ioctl":
            if index >= end:
                end = index + 1
                while end < len(calls) and calls[end][0] == "ioctl":
                    end += 1
            done = run_ioctls(calls, index, end, stop_on_error) if end - index > 1 else None
            if done:
                outcomes += done
                index += len(done)
                if stop_on_error and not done[-1].ok:
                    break
                if index == end:
                    continue
                # The call it declined runs the ordinary way, just below.
        outputs.ran = index + 1
        if not _run_one(backend, calls[index], outputs, outcomes) and stop_on_error:
            break
        index += 1
    return outcomes


def _run_one(backend: Backend, call: Call, outputs: Sequence[Any],
             outcomes: list[Outcome]) -> bool:
    """Run one call, appending its outcome; whether it succeeded."""
    try:
        if len(call) > 4 and call[4] and _is_buffer_ioctl(call):
            apply_links(_ffi.buffer(call[3]), call[4], outputs)
        outcomes.append(Outcome(CONTRACT_CALLS[call[0]](backend, *call[1:])))
    except (OSError, RuntimeError) as exc:
        outcomes.append(_failed(exc))
        return False
    return True


def _failed(exc: OSError | RuntimeError) -> Outcome:
    # An errno is the kernel's answer, not a Python failure: its traceback would keep
    # every frame of the call alive (and walked by the GC) for as long as the batch's
    # outcomes live; thousands of expected errnos in one batch made the mock suite spend
    # seconds in the collector.
    if isinstance(exc, OSError):
        exc = exc.with_traceback(None)
    return Outcome(error=exc)


def direct_ioctls(ioctl: Callable[..., int]) -> IoctlRun:
    """An :data:`IoctlRun` for a backend in this process: the run's ioctls called
    straight, without the per-call dispatch of :func:`run_calls` (the first one with
    links is left to it)."""
    def run(calls: Sequence[Call], start: int, end: int,
            stop_on_error: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index in range(start, end):
            call = calls[index]
            if len(call) > 4 and call[4]:
                break
            try:
                outcomes.append(Outcome(ioctl(*call[1:4])))
            except (OSError, RuntimeError) as exc:
                outcomes.append(_failed(exc))
                if stop_on_error:
                    break
        return outcomes
    return run


def batch(backend: Backend, calls: Sequence[Call], *,
          stop_on_error: bool = False) -> list[Outcome]:
    """Run ``calls`` on any backend: in one round trip where the backend can
    (a ``batch`` method, as remote backends have), else one by one."""
    method = getattr(backend, "batch", None)
    if callable(method):
        result: list[Outcome] = method(calls, stop_on_error=stop_on_error)
        return result
    return run_calls(backend, calls, stop_on_error=stop_on_error)
