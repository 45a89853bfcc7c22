"""The few libc calls the kernel backend needs, through cffi in ABI mode.

ABI mode (``ffi.dlopen(None)``) needs no compiler, so the same module works on a
developer's host and inside the guest initramfs, where only Debian's
``python3-cffi-backend`` is unpacked. Every wrapper raises ``OSError`` with the
errno libc left, exactly as the kernel reported it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import cffi

ffi = cffi.FFI()
# off_t is 64-bit on every architecture this project targets (x86_64, aarch64).
# ioctl(2) is variadic in C; declaring the third argument as a pointer gives
# cffi a fixed signature (no per-call libffi set-up) and passes the same
# register on x86_64 and aarch64, where an integer argument is cast to it.
ffi.cdef("""
    int ioctl(int fd, unsigned long request, void *arg);
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset);
    int munmap(void *addr, size_t length);
    int mprotect(void *addr, size_t length, int prot);
    int madvise(void *addr, size_t length, int advice);
    int memfd_create(const char *name, unsigned int flags);
    int ftruncate(int fd, int64_t length);
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5);
    struct cap_header { uint32_t version; int pid; };
    struct cap_data { uint32_t effective; uint32_t permitted; uint32_t inheritable; };
    int capget(struct cap_header *hdrp, struct cap_data *datap);
    int capset(struct cap_header *hdrp, const struct cap_data *datap);
""")
lib: Any = ffi.dlopen(None)

MAP_FAILED = 2**64 - 1  # (void *)-1
MADV_HUGEPAGE = 14
MFD_CLOEXEC = 0x0001
PR_SET_PDEATHSIG = 1
# <linux/capability.h>: version 3 takes two cap_data, for capabilities 0-31 and 32-63.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LINUX_CAPABILITY_U32S_3 = 2


_strerror: dict[int, str] = {}


def errno_error(err: int) -> OSError:
    """The OSError for errno ``err``, as raised for a failed call."""
    # strerror(3) is slow under TCG (locale lookups); failing ioctls are common.
    message = _strerror.get(err)
    if message is None:
        message = _strerror[err] = os.strerror(err)
    return OSError(err, message)


def raise_errno() -> None:
    """Raise OSError with the errno libc left."""
    raise errno_error(ffi.errno)


def ioctl_arg(arg: Any) -> Any:
    """A contract ioctl argument as ioctl(2)'s third argument: NULL, an
    integer value in the pointer's register, or the cdata's address."""
    if arg is None:
        return ffi.NULL
    return ffi.cast("void *", arg)


#: ctype -> its buffer's length (0: a pointer passed as it is, -1: known per value);
#: the same few struct types go by on every call, and under TCG each cffi query counts
LENGTHS: dict[Any, int] = {}


def _length_of(ctype: Any) -> int:
    if ctype.kind == "pointer":
        item = ctype.item
        if item.kind == "void":
            return 0
        if item.kind == "struct" and item.fields and item.fields[-1][1].type.kind == "array" \
                and item.fields[-1][1].type.length is None:
            return -1  # a flexible array member: ffi.new sized it
        return int(ffi.sizeof(item))
    if ctype.kind == "array" and ctype.length is not None:
        return int(ffi.sizeof(ctype))
    return -1


def argument_length(arg: Any) -> int:
    """The bytes behind a cdata ioctl argument (struct pointer or array); 0 for NULL or an
    untyped pointer, which pass as they are."""
    ctype = ffi.typeof(arg)
    length = LENGTHS.get(ctype)
    if length is None:
        length = LENGTHS[ctype] = _length_of(ctype)
    if length < 0:
        return 0 if arg == ffi.NULL else len(ffi.buffer(arg))
    if length and arg == ffi.NULL:
        return 0
    return length


#: ffi.typeof of a cdata without cffi's Python-level wrapper (under TCG, a batch of
#: thousands of arguments pays for each wrapper frame)
_cdata_typeof: Any = importlib.import_module("_cffi_backend").typeof


def fast_argument_length(arg: Any) -> int:
    """:func:`argument_length` of a cdata, the common case (a non-NULL pointer to a struct
    type seen before) decided without leaving this function."""
    length = LENGTHS.get(_cdata_typeof(arg), -1)
    if length <= 0 or not arg:
        return argument_length(arg)
    return length


U32_PTR = ffi.typeof("uint32_t *")


def reads_past(arg: Any, length: int) -> bool:
    """True when the ``size`` the argument declares first (every iommufd and VFIO
    argument starts with its u32 size) is larger than its ``length`` bytes: then the
    kernel's copy_struct_from_user reads past the caller's buffer."""
    return length < 4 or ffi.cast(U32_PTR, arg)[0] > length


def ioctl(fd: int, request: int, arg: Any = None) -> int:
    """ioctl(2); ``arg`` is None, an int, or any cffi cdata (from any FFI instance)."""
    return raw_ioctl(fd, request, ioctl_arg(arg))


def raw_ioctl(fd: int, request: int, carg: Any) -> int:
    """ioctl(2) with an argument already made by :func:`ioctl_arg`.

    Split out so a caller that arms fail-nth can do every allocation (the cast)
    before arming: only this call then runs between the arm and the syscall.
    """
    ret = int(lib.ioctl(fd, request, carg))
    if ret < 0:
        raise_errno()
    return ret


def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0,
         addr: int = 0) -> int:
    """mmap(2); returns the address."""
    ptr = lib.mmap(ffi.cast("void *", addr), length, prot, flags, fd, offset)
    value = int(ffi.cast("uintptr_t", ptr))
    if value == MAP_FAILED:
        raise_errno()
    return value


def munmap(addr: int, length: int) -> None:
    """munmap(2)."""
    if lib.munmap(ffi.cast("void *", addr), length) != 0:
        raise_errno()


def mprotect(addr: int, length: int, prot: int) -> None:
    """mprotect(2)."""
    if lib.mprotect(ffi.cast("void *", addr), length, prot) != 0:
        raise_errno()


def madvise(addr: int, length: int, advice: int) -> None:
    """madvise(2)."""
    if lib.madvise(ffi.cast("void *", addr), length, advice) != 0:
        raise_errno()


def memfd_create(name: str, flags: int = MFD_CLOEXEC) -> int:
    """memfd_create(2); returns the fd."""
    fd = int(lib.memfd_create(name.encode(), flags))
    if fd < 0:
        raise_errno()
    return fd


def ftruncate(fd: int, length: int) -> None:
    """ftruncate(2)."""
    if lib.ftruncate(fd, length) != 0:
        raise_errno()


def set_pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): ``sig`` is sent to this process when the thread
    that forked it exits (used in a child's preexec, so a killed parent takes
    the child with it)."""
    if lib.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise_errno()


def _cap_header() -> Any:
    return ffi.new("struct cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3, "pid": 0})


def capget() -> tuple[int, int, int]:
    """capget(2) of the calling thread: its (effective, permitted, inheritable)
    sets as 64-bit masks."""
    data = ffi.new("struct cap_data[]", _LINUX_CAPABILITY_U32S_3)
    if lib.capget(_cap_header(), data) != 0:
        raise_errno()
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of the calling thread (64-bit masks); EPERM for a capability
    outside the permitted set."""
    data = ffi.new("struct cap_data[]", _LINUX_CAPABILITY_U32S_3)
    for i, shift in enumerate((0, 32)):
        data[i].effective = effective >> shift & 0xFFFFFFFF
        data[i].permitted = permitted >> shift & 0xFFFFFFFF
        data[i].inheritable = inheritable >> shift & 0xFFFFFFFF
    if lib.capset(_cap_header(), data) != 0:
        raise_errno()
