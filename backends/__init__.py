"""Backends: where iommufd ioctls run. ``open_backend(spec)`` is the entry point.

=================  ===================================================
spec               where the ioctls go
=================  ===================================================
``mock``           the in-Python model of iommufd and its mock driver
``kernel``         this host's /dev/iommu (lab machines, or inside a guest)
``qemu:x86_64``    a QEMU guest with intel-iommu, via the guest agent
``qemu:aarch64``   a QEMU guest with smmuv3, via the guest agent
``compare:A+B``    A and B in lockstep, every call compared (backends.compare)
=================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable

from backends.contract import Backend, BackendError, Features, IoctlArg

__all__ = [
    "BACKEND_SPECS",
    "Backend",
    "BackendError",
    "Features",
    "IoctlArg",
    "open_backend",
    "parse_spec",
]

BACKEND_SPECS = ("mock", "kernel", "qemu:x86_64", "qemu:aarch64")
COMPARE_PREFIX = "compare:"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"qemu:x86_64"`` into ``("qemu", "x86_64")``; reject unknown specs in one line."""
    spec = spec.strip()
    if spec.startswith(COMPARE_PREFIX):
        pair = spec.removeprefix(COMPARE_PREFIX).split("+")
        if len(pair) != 2:
            raise BackendError(f"bad backend {spec!r}: write compare:A+B with two backends")
        for side in pair:
            parse_spec(side)
        return "compare", "+".join(pair)
    if spec not in BACKEND_SPECS:
        raise BackendError(
            f"unknown backend {spec!r}: valid backends are {', '.join(BACKEND_SPECS)}")
    kind, _, arch = spec.partition(":")
    return kind, arch


def _open_mock(_arch: str) -> Backend:
    from backends.mock import MockBackend
    return MockBackend()


def _open_kernel(_arch: str) -> Backend:
    from backends.kernel import KernelBackend
    return KernelBackend()


def _open_qemu(arch: str) -> Backend:
    from backends.qemu import QemuBackend
    return QemuBackend(arch)


def _open_compare(pair: str) -> Backend:
    from backends.compare import CompareBackend
    first, second = pair.split("+")
    primary = open_backend(first)
    try:
        secondary = open_backend(second)
    except BaseException:
        primary.shutdown()
        raise
    return CompareBackend(primary, secondary)


_OPENERS: dict[str, Callable[[str], Backend]] = {
    "mock": _open_mock,
    "kernel": _open_kernel,
    "qemu": _open_qemu,
    "compare": _open_compare,
}


def open_backend(spec: str = "mock") -> Backend:
    """Open a backend by spec; use it as a context manager so it is always shut down."""
    kind, arch = parse_spec(spec)
    backend = _OPENERS[kind](arch)
    backend.spec = spec
    return backend
