"""Capabilities of the calling thread by name, through capget(2)/capset(2).

The kernel's tests drop CAP_IPC_LOCK with libcap (``cap_set_flag(CAP_EFFECTIVE,
CAP_CLEAR)``): only the effective set changes, the capability stays permitted. That
is all this module does, with the raw syscalls (libc's wrappers, through cffi), so
neither the host nor the guest initramfs needs libcap. capset acts on the calling
thread only; the guest agent and a forked child are single-threaded.
"""

from __future__ import annotations

import errno
import os

from backends.kernel import libc

#: <linux/capability.h> numbers, by name
CAPABILITIES: dict[str, int] = {name: number for number, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
))}


def number(name: str) -> int:
    """The capability's number; EINVAL for a name <linux/capability.h> lacks."""
    found = CAPABILITIES.get(name)
    if found is None:
        raise OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)}: no capability {name!r}")
    return found


def set_effective(name: str, on: bool) -> bool:
    """Put ``name`` into (or take it out of) the effective set; True when it was
    effective before. Raising it needs it permitted (else EPERM, from capset)."""
    effective, permitted, inheritable = libc.capget()
    bit = 1 << number(name)
    was = bool(effective & bit)
    wanted = effective | bit if on else effective & ~bit
    if wanted != effective:
        libc.capset(wanted, permitted, inheritable)
    return was
