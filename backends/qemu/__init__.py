"""The qemu backend: the contract in a QEMU guest, served by a guest agent.

Host side: :class:`QemuBackend` (boots the guest, watches its console, talks to
the agent); guest side: :mod:`backends.qemu.agent`. The host-side names are
imported lazily, so the agent runs in a guest that has neither pexpect nor the
rest of the host's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.qemu.backend import QemuBackend
    from backends.qemu.errors import GuestCrashed, GuestError

__all__ = ["GuestCrashed", "GuestError", "QemuBackend"]


def __getattr__(name: str) -> Any:
    if name == "QemuBackend":
        from backends.qemu.backend import QemuBackend
        return QemuBackend
    if name in ("GuestCrashed", "GuestError"):
        from backends.qemu import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'backends.qemu' has no attribute {name!r}")
