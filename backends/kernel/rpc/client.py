"""The calling side: a Backend whose calls are requests to a server elsewhere.

The calls travel as bytes (see :mod:`backends.kernel.rpc.protocol`): an ioctl's
cdata is sent as its buffer, and the bytes that come back (on success and on an
errno) are written into it, so callers see exactly what an in-process ioctl would
have left there. Addresses and fds are the server's.

:class:`RemoteBackend` leaves only the transport (:meth:`RemoteBackend.request`) to
a subclass: the qemu backend's guest agent, a forked child's socketpair
(:mod:`backends.kernel.fork`), or a parent server relaying to one of its children
(:class:`RemoteChild`).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Hashable, Sequence
from typing import Any

import cffi

from backends.calls import Call, Outcome, check_call
from backends.contract import (
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Backend,
    BackendError,
    IoctlArg,
)
from backends.kernel.rpc.protocol import ERRNO, OK, reply_error

_ffi = cffi.FFI()


def wire_arg(arg: IoctlArg) -> tuple[Any, Any]:
    """An ioctl argument as it travels, and the buffer to write the reply into."""
    if arg is None or isinstance(arg, int):
        return arg, None
    buf = _ffi.buffer(arg)
    return bytes(buf), buf


def write_back(buf: Any, data: bytes | None) -> None:
    """Copy the server's bytes of an ioctl argument into the caller's cdata."""
    if buf is not None and data is not None and len(data) == len(buf):
        buf[:] = data


class RemoteBackend(Backend):
    """The contract, served by a :class:`~backends.kernel.rpc.dispatch.Dispatcher`
    that :meth:`request` reaches."""

    @abc.abstractmethod
    def request(self, op: str, args: tuple[Any, ...]) -> tuple[int, Any]:
        """One request; the reply's ``(status, payload)``. Transport failures raise
        BackendError (or a subclass)."""

    @property
    def session(self) -> Hashable:
        """Identifies the serving process while it runs (children forked through it
        belong to it); None once it is gone. A restarted server has a new one."""
        return id(self)

    def _call(self, op: str, *args: Any) -> Any:
        status, payload = self.request(op, args)
        if status == OK:
            return payload
        raise reply_error(status, payload, self.spec)

    # -- files -----------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """open(2) in the server."""
        fd: int = self._call("open", path, flags)
        return fd

    def close(self, fd: int) -> None:
        """close(2) in the server."""
        self._call("close", fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """ioctl(2) in the server; ``arg``'s buffer is updated as the kernel left it."""
        wire, buf = wire_arg(arg)
        status, payload = self.request("ioctl", (fd, request, wire))
        if status == OK:
            ret, data = payload
            write_back(buf, data)
            return int(ret)
        if status == ERRNO:
            write_back(buf, payload[2])
        raise reply_error(status, payload, self.spec)

    def read(self, fd: int, length: int) -> bytes:
        """read(2) in the server."""
        data: bytes = self._call("read", fd, length)
        return data

    def write(self, fd: int, data: bytes) -> int:
        """write(2) in the server."""
        n: int = self._call("write", fd, bytes(data))
        return n

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """pread(2) in the server."""
        data: bytes = self._call("pread", fd, length, offset)
        return data

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """pwrite(2) in the server."""
        n: int = self._call("pwrite", fd, bytes(data), offset)
        return n

    def mmap(self, fd: int, length: int, offset: int = 0,
             prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of a server fd; returns the server's address."""
        addr: int = self._call("mmap", fd, length, offset, prot, flags)
        return addr

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) in the server."""
        self._call("munmap", addr, length)

    # -- user memory -----------------------------------------------------
    def alloc(self, length: int, *, align: int = 0, shared: bool = True,
              hugetlb: bool = False) -> int:
        """Anonymous memory in the server; returns its address there."""
        addr: int = self._call("alloc", length, align, shared, hugetlb)
        return addr

    def peek(self, addr: int, length: int) -> bytes:
        """Read the server's user memory."""
        data: bytes = self._call("peek", addr, length)
        return data

    def poke(self, addr: int, data: bytes) -> None:
        """Write the server's user memory."""
        self._call("poke", addr, bytes(data))

    def memfd(self, length: int, name: str = "iommufd-harness") -> int:
        """memfd_create(2) + ftruncate(2) in the server."""
        fd: int = self._call("memfd", length, name)
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2) in the server."""
        self._call("ftruncate", fd, length)

    # -- fault injection -------------------------------------------------
    def fail_nth_write(self, n: int) -> None:
        """Set the serving thread's fail-nth count; the server arms it right before
        each following contract syscall (see backends.kernel.faultinject)."""
        self._call("fail_nth_write", n)

    def fail_nth_read(self) -> int:
        """The serving thread's remaining fail-nth count (0: the fault fired)."""
        n: int = self._call("fail_nth_read")
        return n

    # -- processes and credentials -----------------------------------------
    def fork_child(self) -> Backend:
        """fork(2) in the server: a :class:`RemoteChild` relayed through it."""
        handle: int = self._call("fork_child")
        return RemoteChild(self, handle)

    def getpid(self) -> int:
        """The serving process's pid."""
        pid: int = self._call("getpid")
        return pid

    def proc_status(self, field: str, pid: int = 0) -> int:
        """A ``/proc/<pid>/status`` value, read by the server."""
        value: int = self._call("proc_status", field, pid)
        return value

    def drop_capability(self, name: str) -> bool:
        """Clear ``name`` from the serving process's effective capabilities."""
        was: bool = self._call("drop_capability", name)
        return was

    def restore_capability(self, name: str) -> None:
        """Raise ``name`` back into the serving process's effective capabilities."""
        self._call("restore_capability", name)

    # -- beyond the contract ----------------------------------------------
    def batch(self, calls: Sequence[Call], *, stop_on_error: bool = False) -> list[Outcome]:
        """Run independent calls in one round trip; ioctl buffers are updated in
        place as by :meth:`ioctl`. Calls are ``("ioctl", fd, request, arg)``,
        ``("alloc", length, align, shared, hugetlb)``, ... (see
        :mod:`backends.calls`)."""
        wire: list[tuple[str, tuple[Any, ...]]] = []
        buffers: list[Any] = []
        for call in calls:
            check_call(call)
            op, *args = call
            buf = None
            if op == "ioctl":
                fd, request, *rest = args
                arg, buf = wire_arg(rest[0] if rest else None)
                links = tuple(tuple(link) for link in rest[1]) if len(rest) > 1 else ()
                args = [fd, request, arg, links] if links else [fd, request, arg]
            wire.append((op, tuple(args)))
            buffers.append(buf)
        replies = self._call("batch", wire, stop_on_error)
        outcomes: list[Outcome] = []
        for (op, _), buf, (status, payload) in zip(wire, buffers, replies, strict=False):
            if status == OK:
                if op == "ioctl":
                    write_back(buf, payload[1])
                    payload = payload[0]
                outcomes.append(Outcome(payload))
                continue
            if status == ERRNO and op == "ioctl":
                write_back(buf, payload[2])
            outcomes.append(Outcome(error=reply_error(status, payload, self.spec)))
        return outcomes


class RemoteChild(RemoteBackend):
    """A child the server forked (``fork_child``): its requests go to the parent's
    server as ``child_call``, which relays them to the child's own server.

    The child lives as long as the server that forked it: when that one is gone
    (a guest that crashed and was rebooted), calls raise BackendError and
    :meth:`shutdown` has nothing left to do.
    """

    def __init__(self, parent: RemoteBackend, handle: int) -> None:
        self.spec = parent.spec
        self.features = parent.features
        self.page_size = parent.page_size
        self.hugepage_size = parent.hugepage_size
        self.handle = handle
        #: the child's wait status once :meth:`shutdown` reaped it
        self.exit_status: int | None = None
        self._parent = parent
        self._session = parent.session
        self._closed = False

    def request(self, op: str, args: tuple[Any, ...]) -> tuple[int, Any]:
        """Relay ``(op, args)`` to the child through the parent's server."""
        if self._closed:
            raise BackendError(f"{self.spec}: child {self.handle} has been shut down")
        if self._parent.session != self._session:
            raise BackendError(f"{self.spec}: child {self.handle} went away with the "
                               f"server that forked it")
        return self._parent.request("child_call", (self.handle, op, args))

    @property
    def session(self) -> Hashable:
        """The parent's session while this child runs, with the child's handle."""
        if self._closed or self._parent.session != self._session:
            return None
        return (self._session, self.handle)

    def shutdown(self) -> None:
        """The child exits and its parent reaps it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._parent.session == self._session:
            status = self._parent._call("child_exit", self.handle)
            self.exit_status = None if status is None else int(status)

    def describe(self) -> str:
        """The parent's description, and which child this is."""
        return f"{self._parent.describe()}, forked child {self.handle}"

    @property
    def kernel_release(self) -> str:
        """The parent's kernel."""
        return self._parent.kernel_release
