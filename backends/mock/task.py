"""The one simulated task ("current"): credentials, rlimits and pinned-memory counters.

The mock runs as the kernel selftests do, as root: CAP_SYS_RESOURCE (RLIMIT_MODE may
be set), CAP_IPC_LOCK (new iopt_pages skip accounting) and CAP_SYS_RAWIO. Tests of the
accounting modes can drop capabilities here. The counters are what /proc/<pid>/status
reports as VmPin (mm->pinned_vm) and VmLck (mm->locked_vm), in pages.
"""

from __future__ import annotations

from dataclasses import dataclass

RLIM_INFINITY = (1 << 64) - 1
#: the capabilities the model checks, by <linux/capability.h> name
_CAPABILITY_FIELDS = {
    "CAP_SYS_RESOURCE": "cap_sys_resource",
    "CAP_IPC_LOCK": "cap_ipc_lock",
    "CAP_SYS_RAWIO": "cap_sys_rawio",
}


@dataclass
class Task:
    """``current`` with its ``mm`` counters and its user's ``locked_vm``."""

    cap_sys_resource: bool = True
    cap_ipc_lock: bool = True
    cap_sys_rawio: bool = True
    rlimit_memlock: int = 8 * 1024 * 1024
    """RLIMIT_MEMLOCK in bytes (the usual 8 MiB default)."""
    pinned_vm: int = 0
    """mm->pinned_vm, in pages (VmPin)."""
    locked_vm: int = 0
    """mm->locked_vm, in pages (VmLck)."""
    user_locked_vm: int = 0
    """current_user()->locked_vm, in pages (the USER accounting mode)."""

    def set_capability(self, name: str, on: bool) -> bool | None:
        """Grant or drop a modelled capability; whether it was held before, or None
        for a capability the model does not check."""
        attr = _CAPABILITY_FIELDS.get(name)
        if attr is None:
            return None
        was: bool = getattr(self, attr)
        setattr(self, attr, on)
        return was

    def memlock_limit_pages(self, page_shift: int) -> int:
        """task_rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT."""
        if self.rlimit_memlock >= RLIM_INFINITY:
            return RLIM_INFINITY
        return self.rlimit_memlock >> page_shift
