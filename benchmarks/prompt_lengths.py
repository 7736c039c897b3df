"""Problem texts of realistic token length for the estimator's cost benchmarks.

The estimator reads the bare problem (``extra_info.question``: DAPO's instruction template removed).
What this project has measured about DAPO-Math-17K's prompts is one figure: the synthetic
DAPO-template prompts of ``benchmarks/estimator_throughput.py`` average ~93 all-MiniLM-L6-v2
tokens (README). The real set is not shipped and cannot be downloaded here, so its length
distribution is *assumed*: log-normal with a median of 93 tokens and sigma 0.5 (p10 ~49, p90 ~176
tokens, mean ~105), clipped to [16, 512]. Competition problems have a long tail of multi-sentence
set-ups, which a log-normal models; 93 tokens for the bare problem errs long rather than short,
the side that does not understate a cost. ``lengths_from_parquet`` draws lengths from a built
train.parquet instead (the estimator's own text per row, tokens estimated as characters / 4) for
anyone who has the data.

Texts are built from the tiny test tokenizer's whole words (``recipe.depo.estimator.tiny``), one
token each under it and under BERT's uncased WordPiece, so a text's token count is its length.
"""

from __future__ import annotations

import numpy as np

MEDIAN_TOKENS = 93
SIGMA = 0.5
MIN_TOKENS, MAX_TOKENS = 16, 512
ASSUMED = (
    f"assumed DAPO-Math-17K problem lengths: log-normal, median {MEDIAN_TOKENS} tokens, sigma {SIGMA}, "
    f"clipped to [{MIN_TOKENS}, {MAX_TOKENS}] (the real set is not available offline; --lengths-from a "
    "built train.parquet draws them from the data)"
)


def sample_lengths(n: int, rng: np.random.Generator, median: float = MEDIAN_TOKENS, sigma: float = SIGMA) -> np.ndarray:
    """``n`` token counts (special tokens included) from the assumed distribution."""
    lengths = np.exp(np.log(median) + sigma * rng.standard_normal(n))
    return np.clip(np.rint(lengths), MIN_TOKENS, MAX_TOKENS).astype(int)


def lengths_from_parquet(path: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` token counts drawn (with replacement) from the estimator texts of a train.parquet
    written by data_prep, at ~4 characters per token."""
    import pyarrow.parquet as pq

    from recipe.depo.prompt_text import prompt_text

    table = pq.read_table(path, columns=["prompt", "extra_info"]).to_pylist()
    if not table:
        raise ValueError(f"{path}: no rows")
    chars = np.array([len(prompt_text(row["prompt"], row["extra_info"])) for row in table])
    tokens = np.clip(np.rint(chars / 4) + 2, MIN_TOKENS, MAX_TOKENS).astype(int)
    return rng.choice(tokens, size=n, replace=True)


def texts_of_lengths(lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One text per length, of exactly that many tokens once [CLS] and [SEP] are added."""
    from recipe.depo.estimator.tiny import _WORDS

    words = np.array(sorted(set(_WORDS)))
    return [" ".join(rng.choice(words, size=max(1, int(n) - 2))) for n in lengths]


def describe(lengths: np.ndarray) -> str:
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
    return f"mean {lengths.mean():.0f}, p10 {p10:.0f}, median {p50:.0f}, p90 {p90:.0f}, max {lengths.max()} tokens"
