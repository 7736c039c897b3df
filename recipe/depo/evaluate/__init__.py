"""Avg@n evaluation of a model (HF directory, hub id or verl checkpoint) on the eval sets.

``python -m recipe.depo.evaluate --help``; see ``recipe.depo.evaluate.cli``.
"""

from recipe.depo.evaluate.data import EvalError, EvalQuery, load_set, parquet_files, prompt_hash

__all__ = ["EvalError", "EvalQuery", "load_set", "parquet_files", "prompt_hash"]
