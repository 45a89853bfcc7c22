"""Batches of ioctls run by a small C loop (ioctl_loop.c) instead of the interpreter.

Under TCG, and to a lesser degree on any host, the Python work around each ioctl of a
scenario's tight loop costs several times the syscall. :meth:`KernelBackend.batch`
hands every run of consecutive plain ioctls in a batch to :class:`IoctlLoop`: the same
ioctls with the same arguments, in the same order, and the same outcomes, from C.

Where the library comes from, first found wins:

* ``$IOMMUFD_NATIVE_IOCTLS``: ``0`` turns the loop off; any other value is the path
  of a built library;
* ``native-build/ioctl_loop.so`` beside this module: the guest images carry one,
  cross-built for their architecture (vm_images.initramfs);
* a build with the host's ``cc`` in the cache (``$XDG_CACHE_HOME/iommufd-harness/native/KEY``,
  see :func:`vm_images.cache.cache_root`), keyed by the source, the compiler and the
  machine.

Without any of them (no compiler on a lab host), batches run call by call in Python,
as they did before; :func:`load_reason` says why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cffi

from backends.calls import Call, Outcome
from backends.kernel import libc

SOURCE = Path(__file__).resolve().with_name("ioctl_loop.c")
#: Where a guest image puts the library: a directory that is no Python package, so
#: nothing takes the shared object for an extension module.
PREBUILT = SOURCE.parent / "native-build" / "ioctl_loop.so"
ENV = "IOMMUFD_NATIVE_IOCTLS"
#: How the library is built, here and for the guests (no fortified memcpy: the guest's
#: glibc may predate the host's).
CFLAGS = ("-O2", "-shared", "-fPIC", "-U_FORTIFY_SOURCE")

_CDEF = """
    struct ih_link { long call; long dst_offset; long src; long src_offset; long size; };
    long ih_run_ioctls(long count, const long *fds, const unsigned long *requests,
                       void *const *args, const unsigned long *lengths, long nlinks,
                       const struct ih_link *links, long *rets, long *errs,
                       int stop_on_error);
"""


class _Prepared:
    """The arrays for one run of calls. Kept while the same call tuples come again (a
    scenario's loop re-sends one list of calls with only their buffers' contents
    changed); holding the tuples keeps their buffers, whose addresses are in here.

    The arrays may cover only a prefix of ``calls``: up to the first call with a link
    from outside the run, which the Python path then runs (the loop checks the rest of
    each link, and each size field, as it goes).
    """

    def __init__(self, ffi: Any, calls: list[Call], start: int) -> None:
        self.calls = calls
        self.ids = list(map(id, calls))
        args: list[Any] = []
        lengths: list[int] = []
        links: list[tuple[int, int, int, int, int]] = []
        length_of = libc.fast_argument_length
        ioctl_arg = libc.ioctl_arg
        for index, call in enumerate(calls):
            arg = call[3] if len(call) > 3 else None
            if len(call) > 4 and call[4]:
                if not all(start <= link.src < start + index for link in call[4]):
                    break
                links += [(index, link.dst_offset, link.src - start, link.src_offset,
                           link.size) for link in call[4]]
            if arg is None or isinstance(arg, int):
                args.append(ioctl_arg(arg))
                lengths.append(0)
            else:
                args.append(arg)
                lengths.append(length_of(arg))
        count = len(args)
        self.count = count
        self.fds = ffi.new("long[]", [call[1] for call in calls[:count]])
        self.requests = ffi.new("unsigned long[]", [call[2] for call in calls[:count]])
        self.args = ffi.new("void *[]", args)
        self.lengths = ffi.new("unsigned long[]", lengths)
        self.nlinks = len(links)
        self.links = ffi.new("struct ih_link[]", links) if links else ffi.NULL
        self.rets = ffi.new("long[]", count)
        self.errs = ffi.new("long[]", count)


class IoctlLoop:
    """The loaded library: runs a slice of a batch's ioctls in one call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ffi = cffi.FFI()
        self.ffi.cdef(_CDEF)
        self._lib: Any = self.ffi.dlopen(str(path))
        self._last: _Prepared | None = None

    def run(self, calls: Sequence[Call], start: int, end: int,
            stop_on_error: bool) -> list[Outcome]:
        """Run ``calls[start:end]`` (all ioctls) and return the outcomes of those run:
        all of them, or up to the first failure with ``stop_on_error``, or up to (not
        including) the first one the Python path must take (an argument the kernel would
        read past, or a link that does not fit or comes from outside the run)."""
        segment = list(calls[start:end])
        prepared = self._last
        if prepared is None or prepared.ids != list(map(id, segment)):
            prepared = self._last = _Prepared(self.ffi, segment, start)
        done = self._lib.ih_run_ioctls(
            prepared.count, prepared.fds, prepared.requests, prepared.args,
            prepared.lengths, prepared.nlinks, prepared.links, prepared.rets,
            prepared.errs, stop_on_error)
        if not done:
            return []
        rets = self.ffi.unpack(prepared.rets, done)
        errs = self.ffi.unpack(prepared.errs, done)
        if not any(errs):
            return list(map(Outcome, rets))
        return [Outcome(ret) if ret >= 0 else Outcome(error=libc.errno_error(err))
                for ret, err in zip(rets, errs, strict=True)]


_loaded: tuple[IoctlLoop | None, str] | None = None


def load() -> IoctlLoop | None:
    """The loop, loaded once per process (None when unavailable; see :func:`load_reason`)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded[0]


def load_reason() -> str:
    """Where the loop came from, or why there is none."""
    load()
    assert _loaded is not None
    return _loaded[1]


def _load() -> tuple[IoctlLoop | None, str]:
    explicit = os.environ.get(ENV)
    if explicit == "0":
        return None, f"{ENV}=0"
    if explicit:
        path = Path(explicit)
    elif PREBUILT.is_file():
        path = PREBUILT
    else:
        try:
            path = _host_build()
        except (OSError, ImportError, subprocess.SubprocessError) as exc:
            return None, f"no prebuilt {PREBUILT.name} and no host build: {exc}"
    try:
        return IoctlLoop(path), str(path)
    except OSError as exc:
        return None, f"cannot load {path}: {exc}"


def _host_build() -> Path:
    """Build the library with the host's ``cc`` into the cache (once per key)."""
    cc = os.environ.get("CC", "cc")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True,
                             timeout=30).stdout.splitlines()[0]
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), platform.machine().encode(),
                 " ".join(CFLAGS).encode()):
        digest.update(part + b"\0")
    from vm_images.cache import cache_root  # host only: a guest carries the prebuilt

    entry = cache_root() / "native" / digest.hexdigest()[:16]
    target = entry / PREBUILT.name
    if target.is_file():
        return target
    entry.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed in: a concurrent run never loads half a file.
    with tempfile.TemporaryDirectory(dir=entry) as tmp:
        built = Path(tmp) / PREBUILT.name
        compile_loop(cc, built)
        os.replace(built, target)
    return target


def compile_argv(cc: str, out: Path) -> list[str]:
    """The command that compiles ioctl_loop.c with ``cc`` (a cross compiler for a
    guest) into ``out``."""
    return [cc, *CFLAGS, str(SOURCE), "-o", str(out)]


def compile_loop(cc: str, out: Path) -> None:
    """Compile ioctl_loop.c with ``cc`` into ``out``; OSError with the compiler's last
    line if it fails."""
    done = subprocess.run(compile_argv(cc, out), capture_output=True, text=True,
                          check=False, timeout=120)
    if done.returncode != 0:
        raise OSError(f"{cc} failed on {SOURCE.name}: "
                      f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
