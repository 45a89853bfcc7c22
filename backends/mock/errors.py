"""Kernel error returns as Python exceptions.

A kernel function that returns ``-E...`` raises :func:`kerr` here; the syscall boundary
hands the OSError to the caller unchanged, so the errno is the one userspace would see.
``-ENOIOCTLCMD`` is kernel-internal: the VFS turns it into ENOTTY (see ``vfs_ioctl``).
"""

from __future__ import annotations

import errno
import os

ENOIOCTLCMD = 515
"""The kernel's "no such ioctl here" return; userspace sees ENOTTY."""


def kerr(err: int) -> OSError:
    """``OSError(err)`` with the C library's message, as a failed syscall would raise."""
    if err == ENOIOCTLCMD:
        return OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
    return OSError(err, os.strerror(err))
