"""Route queries between a small and a large model by the DEPO estimator's predicted accuracy.

``core``: the pure routing math; ``offline``: Table 3 from per-query results (the default command
of ``python -m recipe.depo.router``); ``serve``: the live proxy in front of two inference servers
(``python -m recipe.depo.router serve``, see docs/router.md).
"""

from recipe.depo.router.core import DifficultyRouter, route, routed_accuracy, sweep, table3

__all__ = ["DifficultyRouter", "route", "routed_accuracy", "sweep", "table3"]
