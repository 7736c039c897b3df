"""Rule-based reward with per-response correctness for every data source DEPO trains or evaluates on.

Use it as verl's custom reward function::

    reward.custom_reward_function.path=<site-packages>/recipe/depo/reward.py
    reward.custom_reward_function.name=compute_score

(or ``python -c "import recipe.depo.reward as r; print(r.__file__)"`` for the path).

verl 0.9.1's reward managers call ``compute_score(data_source=, solution_str=, ground_truth=,
extra_info=)`` through ``loop.run_in_executor``, i.e. on a worker thread, and copy every key of a
returned dict into ``reward_extra_info``. So every call returns the same keys with the same
types (``score`` float, ``acc`` float, ``pred`` str, ``verdict`` str): the DEPO trainer reads
``acc`` as the response's correctness, and a key missing from some responses would misalign
those lists. ``verdict`` is one of ``VERDICTS`` (why a response scored what it did).

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

Bounds. Plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``) are compared exactly in
process, digit strings and all, so integers of any length cost microseconds and a wrong integer
never matches through a float tolerance. Everything else goes to math-verify in a child process
(``recipe.depo.verify_pool``) with a deadline (1 s by default, shared by all of a row's reference
answers, waiting for a free checker included) and an address-space cap, killed and replaced when
it runs over: no answer a model writes can hold a scoring thread for longer, on the main thread
or a worker thread. A response that runs out of time or memory scores as wrong, and ``verdict``
says why.

A reference answer that is missing, empty, NaN or not a string is a data bug, not a wrong
answer: ``compute_score`` raises ``BadReferenceError`` naming the data source and row instead of
training on a silent zero (data_prep and the DEPO start-up check refuse such rows earlier).
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from fractions import Fraction
from typing import Any

from recipe.depo.verify_pool import DEFAULT_TIMEOUT_S, VerifierUnavailable, shared_pool

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

# Why a response scored what it did (the ``verdict`` key). The last four score as wrong too; they
# say that math-verify could not decide within its bounds, which a run should be able to count.
VERDICTS = ("correct", "wrong", "no_answer", "too_long", "timeout", "memory", "crashed")

# Longest answer math-verify may see. MATH-500's longest reference answer has 159 characters;
# anything much longer is a rambling non-answer and only costs parse time. (A cost cap, not the
# safety bound: the child process's deadline is.) Plain numbers of any length skip math-verify.
MAX_ANSWER_CHARS = 300
# Longest numerator/denominator turned into Python ints; longer plain numbers compare as digit
# strings (int() of more than 4,300 digits raises, and is quadratic before that).
_MAX_INT_DIGITS = 1000
# ``pred`` in the result is for logs; a 100k-character box would otherwise ride along in the batch.
MAX_PRED_CHARS = 1000

_ANSWER_LINE_RE = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")
_BOX_OPENERS = ("\\boxed", "\\fbox")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_INTEGER_RE = re.compile(r"([+-]?)(\d+)")
_DECIMAL_RE = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_FRACTION_RES = (
    re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}"),
    re.compile(r"([+-]?)\\frac(\d)(\d)"),
    re.compile(r"([+-]?)(\d+)/(\d+)"),
)


class BadReferenceError(ValueError):
    """A reference answer no response could match: a data bug, reported with its data source and row."""


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    verify_timeout_s: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response. Never raises on what the model wrote. Raises ValueError on an unknown
    ``data_source`` and ``BadReferenceError`` on an unusable reference: those are data/config
    bugs that would otherwise train on zeros.

    ``extra_info["answers"]`` (optional list) holds alternative reference answers; any match counts.
    ``verify_timeout_s`` bounds math-verify per response, all references together (verl passes
    ``reward.custom_reward_function.reward_kwargs`` as keywords). ``**kwargs`` absorbs what else
    verl adds (reward_router_address, ...).
    """
    style = DATA_SOURCE_STYLES.get(data_source)
    if style is None:
        raise ValueError(
            f"recipe.depo.reward.compute_score: unknown data_source {data_source!r}; "
            f"known: {sorted(DATA_SOURCE_STYLES)}"
        )
    try:
        references = reference_answers(ground_truth, extra_info)
    except ValueError as exc:
        raise BadReferenceError(f"recipe.depo.reward: {row_label(data_source, extra_info)}: {exc}") from None
    timeout_s = DEFAULT_TIMEOUT_S if verify_timeout_s is None else float(verify_timeout_s)
    right, wrong = _SCORES[style]
    pred = None
    try:
        text = solution_str if isinstance(solution_str, str) else ("" if solution_str is None else str(solution_str))
        if style == ANSWER_LINE:
            pred = extract_answer_line(text)
            if pred is None:
                pred = extract_last_boxed(text)
        else:
            pred = extract_last_boxed(text)
        if pred is None:
            verdict = "no_answer"
        elif style == INTEGER:
            verdict = "correct" if any(_integer_equal(pred, ref) for ref in references) else "wrong"
        else:
            verdict = _best_verdict(pred, references, timeout_s)
    except VerifierUnavailable:
        raise  # the environment, not the answer: fail loudly rather than score everything 0
    except Exception:  # a reward crash would kill the whole RL step; a 0 costs one sample
        logger.exception("compute_score failed for data_source=%s; scoring the response as wrong", data_source)
        verdict = "crashed"
    correct = verdict == "correct"
    return {
        "score": right if correct else wrong,
        "acc": 1.0 if correct else 0.0,
        "pred": (pred or "")[:MAX_PRED_CHARS],
        "verdict": verdict,
    }


# ---------------------------------------------------------------- references


def reference_problem(value: Any) -> str | None:
    """What makes ``value`` unusable as a ground truth, or None when it is a non-empty answer
    string (or a non-empty list of them, as parquet stores alternatives)."""
    if isinstance(value, str):
        if not value.strip():
            return "is an empty string"
        if value.strip().lower() == "nan":
            return "is 'nan' (a missing value written out as text)"
        return None
    if value is None:
        return "is missing (None)"
    if isinstance(value, float) and math.isnan(value):
        return "is NaN (a missing value)"
    if hasattr(value, "tolist") and not isinstance(value, bytes):  # numpy arrays and scalars from parquet
        value = value.tolist()
        if not isinstance(value, list):
            return reference_problem(value)
    if isinstance(value, (list, tuple)):
        if not value:
            return "is an empty list"
        for position, item in enumerate(value):
            problem = reference_problem(item)
            if problem is None and not isinstance(item, str):
                problem = f"is a {type(item).__name__}"
            if problem is not None:
                return f"has an item (position {position}) that {problem}"
        return None
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"is a {type(value).__name__} ({shown}), not an answer string"


def reference_answers(ground_truth: Any, extra_info: Any = None) -> list[str]:
    """The reference answers of a row: ``ground_truth`` plus any ``extra_info["answers"]``.
    ValueError (saying which field and what is wrong with it) when one is unusable."""
    problem = reference_problem(ground_truth)
    if problem is not None:
        raise ValueError(f"reward_model.ground_truth {problem}")
    refs = _as_strings(ground_truth)
    alternatives = extra_info.get("answers") if isinstance(extra_info, dict) else None
    if alternatives is not None:
        problem = reference_problem(alternatives)
        if problem is not None:
            raise ValueError(f"extra_info.answers {problem}")
        refs += _as_strings(alternatives)
    return list(dict.fromkeys(refs))


def _as_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


def row_label(data_source: Any, extra_info: Any) -> str:
    """ "data_source 'x', row extra_info.index=17 (split train)": as much as a reward call knows
    about where its row came from (data_prep writes index and split into every row)."""
    label = f"data_source {data_source!r}"
    if isinstance(extra_info, dict) and extra_info.get("index") is not None:
        label += f", row extra_info.index={extra_info['index']}"
        if extra_info.get("split") is not None:
            label += f" (split {extra_info['split']})"
    else:
        label += " (row unknown: it has no extra_info.index)"
    return label


# ---------------------------------------------------------------- extraction


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


# ---------------------------------------------------------------- comparison


def _best_verdict(pred: str, references: list[str], timeout_s: float) -> str:
    """Any reference matching wins. The in-process checks run on every reference first; math-verify
    then shares one ``timeout_s`` across the references left, so that a response costs one deadline
    however many alternative answers its row has."""
    verdicts, pending = [], []
    for reference in references:
        verdict = _quick_verdict(pred, reference)
        if verdict == "correct":
            return verdict
        if verdict is None:
            pending.append(reference)
        else:
            verdicts.append(verdict)
    if pending:
        shared_pool().start()  # the children's one-time start is not the response's time
    spent = 0.0
    for reference in pending:
        if spent >= timeout_s:
            verdicts.append("timeout")
            break
        # the first check gets the whole deadline, so its verdict is cached under it
        start = time.monotonic()
        verdict = _verify(normalize(pred), normalize(reference), timeout_s - spent)
        spent += time.monotonic() - start
        if verdict == "correct":
            return verdict
        verdicts.append(verdict)
    # a bound that was hit is worth reporting over a plain "wrong"
    return max(verdicts, key=VERDICTS.index, default="wrong")


def _match(pred: str, reference: str, timeout_s: float) -> str:
    verdict = _quick_verdict(pred, reference)
    return _verify(normalize(pred), normalize(reference), timeout_s) if verdict is None else verdict


def _quick_verdict(pred: str, reference: str) -> str | None:
    """The verdict decided in process (equal strings, plain numbers, too long), or None when it
    takes math-verify."""
    p, r = normalize(pred), normalize(reference)
    if not p or not r:
        return "wrong"
    if p == r:
        return "correct"
    p_number, r_number = _plain_number(p), _plain_number(r)
    if p_number is not None and r_number is not None:
        equal = _numbers_equal(p_number, r_number)
        if equal is not None:
            return "correct" if equal else "wrong"
    if len(p) > MAX_ANSWER_CHARS or len(r) > MAX_ANSWER_CHARS:
        return "too_long"
    return None


def _plain_number(text: str) -> tuple[str, Any] | None:
    """("decimal", (negative, whole digits, fraction digits)) with leading/trailing zeros stripped,
    so equal decimals have equal tuples at any length; ("fraction", Fraction) for a/b forms;
    None for anything else."""
    match = _DECIMAL_RE.fullmatch(text)
    if match and (match.group(2) or match.group(3)):
        sign, whole, fraction = match.group(1), match.group(2).lstrip("0"), (match.group(3) or "").rstrip("0")
        return "decimal", (sign == "-" and bool(whole or fraction), whole, fraction)
    for pattern in _FRACTION_RES:
        match = pattern.fullmatch(text)
        if match:
            sign, numerator, denominator = match.groups()
            if max(len(numerator), len(denominator)) > _MAX_INT_DIGITS or int(denominator) == 0:
                return None
            value = Fraction(int(numerator), int(denominator))
            return "fraction", (-value if sign == "-" else value)
    return None


def _as_fraction(kind: str, value: Any) -> Fraction | None:
    if kind == "fraction":
        return value
    negative, whole, fraction = value
    if len(whole) + len(fraction) > _MAX_INT_DIGITS:
        return None
    exact = Fraction(int(whole or "0") * 10 ** len(fraction) + int(fraction or "0"), 10 ** len(fraction))
    return -exact if negative else exact


def _is_integer(kind: str, value: Any) -> bool:
    return value.denominator == 1 if kind == "fraction" else value[2] == ""


def _numbers_equal(p: tuple[str, Any], r: tuple[str, Any]) -> bool | None:
    """Exact verdict on two plain numbers; None leaves two unequal non-integers to math-verify,
    whose float tolerance (6 decimals) accepts 0.333333 for 1/3. An integer on either side is
    never compared with a tolerance, so a wrong integer answer cannot match."""
    if p[0] == r[0] == "decimal":
        equal = p[1] == r[1]
    else:
        p_value, r_value = _as_fraction(*p), _as_fraction(*r)
        equal = p_value is not None and p_value == r_value
    if equal:
        return True
    if _is_integer(*p) or _is_integer(*r):
        return False
    return None


def _integer_equal(pred: str, reference: str) -> bool:
    """Both plain integers with the same value, compared as digit strings (no int() length limit)."""
    p, r = _INTEGER_RE.fullmatch(normalize(pred)), _INTEGER_RE.fullmatch(normalize(reference))
    if p is None or r is None:
        return False
    p_digits, r_digits = p.group(2).lstrip("0"), r.group(2).lstrip("0")
    if p_digits != r_digits:
        return False
    return p_digits == "" or (p.group(1) == "-") == (r.group(1) == "-")  # -0 is 0


# The n responses of one prompt share its reference and often repeat the same answer, so
# math-verify verdicts are cached per process (both strings are at most MAX_ANSWER_CHARS long),
# with the deadline they were decided under: "timeout" only answers a request with no longer one.
_CACHE_SIZE = 65536
_cache: collections.OrderedDict[tuple[str, str], tuple[str, float]] = collections.OrderedDict()
_cache_lock = threading.Lock()


def _verify(pred: str, reference: str, timeout_s: float) -> str:
    key = (pred, reference)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and (cached[0] != "timeout" or cached[1] >= timeout_s):
            _cache.move_to_end(key)
            return cached[0]
    result = shared_pool().verify(pred, reference, timeout_s)
    if result.reason == "busy":
        # the deadline passed while every checker was taken: the response's time is up, but the
        # answer was never tried, so nothing is cached about it
        return "timeout"
    if result.reason in ("timeout", "memory", "crashed"):
        verdict = result.reason
    else:
        verdict = "correct" if result.equal else "wrong"
    if verdict != "crashed":  # a crash may be the machine's (OOM killer), not the answer's
        with _cache_lock:
            _cache[key] = (verdict, timeout_s)
            _cache.move_to_end(key)
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return verdict


def clear_caches() -> None:
    """For benchmarks that want the cold cost of every check."""
    with _cache_lock:
        _cache.clear()
