"""Lockstep comparison of two backends: ``open_backend("compare:qemu:x86_64+mock")``.

:class:`CompareBackend` runs every contract call on both and fails at the first
divergence (:class:`Divergence`) that the known-divergence list does not explain.
"""

from backends.compare.backend import CompareBackend
from backends.compare.divergence import Divergence, Reported

__all__ = ["CompareBackend", "Divergence", "Reported"]
