"""Rule-based reward with per-response correctness for every data source DEPO trains or evaluates on.

Use it as verl's custom reward function::

    reward.custom_reward_function.path=<site-packages>/recipe/depo/reward.py
    reward.custom_reward_function.name=compute_score

(or ``python -c "import recipe.depo.reward as r; print(r.__file__)"`` for the path).

verl 0.9.1's reward managers call ``compute_score(data_source=, solution_str=, ground_truth=,
extra_info=)`` through ``loop.run_in_executor``, i.e. on a worker thread, and copy every key of a
returned dict into ``reward_extra_info``. So every call returns the same keys with the same
types (``score`` float, ``acc`` float, ``pred`` str): the DEPO trainer reads ``acc`` as the
response's correctness, and a key missing from some responses would misalign those lists.

Three answer conventions:

* ``answer_line`` (``math_dapo``): DAPO-Math-17k's template asks for a last line
  ``Answer: $Answer``. Extraction and the +1/-1 score follow verl's own ``math_dapo`` scorer so a
  DEPO run and a verl DAPO/GRPO baseline see the same reward; a response without an ``Answer:``
  line falls back to its last ``\\boxed{}`` as verl's scorer does. We additionally accept
  answers that math-verify proves equal (``Answer: 1/2`` for ``0.5``), which verl's string match
  would reject.
* ``boxed`` (training sets with our template, the five evaluation sets): the last ``\\boxed{}``
  compared with math-verify; score 1/0.
* ``arithmetic`` (the CPU demo's generated task): the last ``\\boxed{}`` compared as an integer,
  no sympy, so the demo's reward costs microseconds.

math-verify guards its sympy work with ``signal.alarm``, which only works on a process's main
thread; elsewhere it raises. Off the main thread we call it without its timeout and instead
refuse to hand sympy the few answer shapes that can run for minutes (power towers, huge
exponents or factorials, very long expressions); those fall back to string comparison.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

ANSWER_LINE = "answer_line"
BOXED = "boxed"
INTEGER = "arithmetic"

# data_source -> answer convention. Names our builders write, plus the verl / hub names the
# same sets are commonly published under, so parquet files made with verl's own
# examples/data_preprocess scripts score too.
DATA_SOURCE_STYLES: dict[str, str] = {
    "math_dapo": ANSWER_LINE,
    "arithmetic": INTEGER,
    "skywork_or1": BOXED,
    "nt": BOXED,
    "gsm8k": BOXED,
    "math500": BOXED,
    "amc23": BOXED,
    "olympiadbench": BOXED,
    "minerva": BOXED,
    "openai/gsm8k": BOXED,
    "HuggingFaceH4/MATH-500": BOXED,
    "lighteval/MATH": BOXED,
    "DigitalLearningGmbH/MATH-lighteval": BOXED,
    "math-ai/amc23": BOXED,
    "math-ai/minervamath": BOXED,
}

# verl's math_dapo convention: wrong answers are penalised, not just unrewarded.
_SCORES = {ANSWER_LINE: (1.0, -1.0), BOXED: (1.0, 0.0), INTEGER: (1.0, 0.0)}

# Longest answer math-verify may see. MATH-500's longest reference answer has 159 characters;
# anything much longer is a rambling non-answer and only costs parse time.
MAX_ANSWER_CHARS = 300
MAX_EXPONENT = 200  # (x+1)^{200} verifies in ~0.5 s, (x+1)^{999} runs past 5 s
MAX_FACTORIAL = 10_000  # 5000! is instant, 1000000! is not

_ANSWER_LINE_RE = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
_BOX_OPENERS = ("\\boxed", "\\fbox")
_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_INTEGER_RE = re.compile(r"^[+-]?\d+$")
_EXPONENT_RE = re.compile(r"(\^|\*\*)\s*\{?\s*\(?\s*(\d+)")
# a numeric power tower (9^{9^9}, 2^3^4): sympy tries to evaluate it; e^{x^2} stays symbolic and is fine
_NESTED_POWER_RE = re.compile(r"(\^|\*\*)\s*\{?\s*\(?\s*\d+\s*\}?\s*(\^|\*\*)")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response. Never raises on what the model wrote; raises ValueError on an unknown
    ``data_source`` because that is a data/config bug that would otherwise train on zeros.

    ``extra_info["answers"]`` (optional list) holds alternative reference answers; any match counts.
    ``**kwargs`` absorbs what verl adds (reward_router_address, reward_kwargs from the config).
    """
    style = DATA_SOURCE_STYLES.get(data_source)
    if style is None:
        raise ValueError(
            f"recipe.depo.reward.compute_score: unknown data_source {data_source!r}; "
            f"known: {sorted(DATA_SOURCE_STYLES)}"
        )
    right, wrong = _SCORES[style]
    try:
        references = _references(ground_truth, extra_info)
        text = solution_str if isinstance(solution_str, str) else str(solution_str or "")
        if style == ANSWER_LINE:
            pred = extract_answer_line(text)
            if pred is None:
                pred = extract_last_boxed(text)
        else:
            pred = extract_last_boxed(text)
        if pred is None or not references:
            correct = False
        elif style == INTEGER:
            correct = any(_integer_equal(pred, ref) for ref in references)
        else:
            correct = any(answers_match(pred, ref) for ref in references)
    except Exception:  # a reward crash would kill the whole RL step; a 0 costs one sample
        logger.exception("compute_score failed for data_source=%s; scoring the response as wrong", data_source)
        pred, correct = None, False
    return {"score": right if correct else wrong, "acc": 1.0 if correct else 0.0, "pred": pred or ""}


def _references(ground_truth: Any, extra_info: dict | None) -> list[str]:
    refs: list[str] = []
    for value in _as_list(ground_truth):
        refs.append(str(value))
    if extra_info is not None and hasattr(extra_info, "get"):
        for value in _as_list(extra_info.get("answers")):
            refs.append(str(value))
    seen: set[str] = set()
    return [r for r in refs if r.strip() and not (r in seen or seen.add(r))]


def _as_list(value: Any) -> Iterable[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    # parquet round-trips lists as numpy arrays
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


def extract_answer_line(text: str) -> str | None:
    """The text after the last ``Answer:`` (DAPO convention), or None."""
    matches = _ANSWER_LINE_RE.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip()
    return answer or None


def extract_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept), ``\\boxed 5``
    also accepted; None when there is none or its braces never close."""
    start = max(text.rfind(opener) for opener in _BOX_OPENERS)
    if start < 0:
        return None
    opener = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
    i = start + len(opener)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        if i == start + len(opener):  # e.g. \boxedx: not a box
            return None
        match = re.match(r"[^\s$]+", text[i:])
        return match.group(0).rstrip(".") if match else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                content = text[i + 1 : j].strip()
                return content or None
    return None


def normalize(answer: str) -> str:
    """Cheap, meaning-preserving cleanup used before the string fast path."""
    answer = answer.replace("\\$", "")  # currency sign, not math mode
    answer = answer.strip().strip("$").strip()
    answer = answer.rstrip(".").strip()
    boxed = extract_last_boxed(answer) if answer.startswith(_BOX_OPENERS) else None
    if boxed is not None:  # "Answer: \boxed{7}" in a DAPO-format response
        answer = boxed
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""), ("\\!", "")):
        answer = answer.replace(old, new)
    answer = re.sub(r"\s+", "", answer)
    if _THOUSANDS_RE.match(answer):
        answer = answer.replace(",", "")
    return answer


def answers_match(pred: str, reference: str) -> bool:
    """Equality of two final answers: a string/number fast path, then math-verify."""
    p, r = normalize(pred), normalize(reference)
    if not p or not r:
        return False
    if p == r:
        return True
    if _PLAIN_NUMBER_RE.match(p) and _PLAIN_NUMBER_RE.match(r):
        # two plain decimals: exact comparison, no sympy needed
        return abs(float(p) - float(r)) <= 1e-9 * max(1.0, abs(float(r)))
    if _risky(p) or _risky(r):
        return False
    return _math_verify_equal(p, r)


def _integer_equal(pred: str, reference: str) -> bool:
    p, r = normalize(pred), normalize(reference)
    return bool(_INTEGER_RE.match(p) and _INTEGER_RE.match(r)) and int(p) == int(r)


def _risky(answer: str) -> bool:
    """Shapes for which sympy can run for minutes and we have no timeout to stop it."""
    if len(answer) > MAX_ANSWER_CHARS:
        return True
    if _NESTED_POWER_RE.search(answer):
        return True
    if any(int(m.group(2)) > MAX_EXPONENT for m in _EXPONENT_RE.finditer(answer)):
        return True
    return any(int(m.group(1)) > MAX_FACTORIAL for m in _FACTORIAL_RE.finditer(answer))


def _math_verify_equal(pred: str, reference: str) -> bool:
    # signal.alarm only works on the main thread; elsewhere math-verify raises if a timeout is set
    on_main = threading.current_thread() is threading.main_thread()
    return _math_verify_equal_cached(pred, reference, on_main)


# The n responses of one prompt share its reference and often repeat the same answer, so parses
# and verdicts are cached (lru_cache is thread-safe; both inputs are short, bounded strings).
@functools.lru_cache(maxsize=65536)
def _math_verify_equal_cached(pred: str, reference: str, on_main: bool) -> bool:
    from math_verify import verify

    gold, guess = _parse(reference, on_main), _parse(pred, on_main)
    if not gold or not guess:
        return False
    return bool(verify(list(gold), list(guess), timeout_seconds=5 if on_main else None))


@functools.lru_cache(maxsize=65536)
def _parse(answer: str, on_main: bool) -> tuple:
    from math_verify import parse
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    # `$...$` rather than `\boxed{}`: with the box, math-verify does not strip `\%` units
    parsed = parse(
        f"${answer.replace('$', '')}$",
        (LatexExtractionConfig(), ExprExtractionConfig()),
        parsing_timeout=5 if on_main else None,
    )
    return tuple(parsed)


def clear_caches() -> None:
    """For benchmarks that want the cold cost of every check."""
    _math_verify_equal_cached.cache_clear()
    _parse.cache_clear()


# math-verify logs a warning whenever its timeout is disabled; that is deliberate here.
logging.getLogger("math_verify").setLevel(logging.ERROR)
