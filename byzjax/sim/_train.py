"""Deprecated location: the names :mod:`byzjax.sim._run` still imports from here.

The programs moved to :mod:`byzjax.sim._kit` (the round kit),
:mod:`byzjax.sim._single`, :mod:`byzjax.sim._guanyu`,
:mod:`byzjax.sim._liubei` and :mod:`byzjax.sim._program` (the dispatcher).
Remove this module once ``_run`` imports ``SimData`` and ``labels_num_classes``
from ``_kit`` and ``make_program`` from ``_program``.
"""

from byzjax.sim._kit import SimData, labels_num_classes
from byzjax.sim._program import make_program

__all__ = ["SimData", "labels_num_classes", "make_program"]
