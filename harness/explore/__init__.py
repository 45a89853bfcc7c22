"""Differential exploration: ``iommufd-harness explore --backend A --compare B``.

:func:`explore` drives random iommufd operations (:mod:`harness.explore.ops`) on a
lockstep pair and shrinks the first divergence to a minimal sequence.
"""

from harness.explore.runner import Exploration, explore

__all__ = ["Exploration", "explore"]
