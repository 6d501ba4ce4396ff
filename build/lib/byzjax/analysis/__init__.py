"""Analysis tools built on byzjax's differentiable, compiled rules.

* :func:`estimate_lambda`: a rule's worst-case resilience coefficient, found by
  gradient ascent over honest and Byzantine inputs (many restarts in one
  vmapped, jitted program), beside :func:`stated_bound` and :func:`lower_bound`.
"""

from byzjax.analysis._resilience import (
    STARTS,
    LambdaEstimate,
    estimate_lambda,
    lower_bound,
    random_search_lambda,
    stated_bound,
)

__all__ = [
    "STARTS",
    "LambdaEstimate",
    "estimate_lambda",
    "lower_bound",
    "random_search_lambda",
    "stated_bound",
]
