import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import recipe.depo.reward as reward
from recipe.depo.reward import VERDICTS, BadReferenceError, compute_score, extract_last_boxed

# (data_source, response, ground_truth, expected acc)
CASES = [
    # DAPO convention: the last "Answer:" line, +1/-1 score
    ("math_dapo", "Reasoning...\nAnswer: 42", "42", 1.0),
    ("math_dapo", "Answer: 41\nwait, redo\nAnswer: 42", "42", 1.0),
    ("math_dapo", "Answer: 42\nhmm no\nAnswer: 41", "42", 0.0),
    ("math_dapo", "answer:   $42$.", "42", 1.0),
    ("math_dapo", "Answer: \\boxed{42}", "42", 1.0),
    ("math_dapo", "no answer line but \\boxed{42}", "42", 1.0),  # verl's fallback
    ("math_dapo", "Answer: 1,234", "1234", 1.0),
    ("math_dapo", "Answer: 43", "42", 0.0),
    ("math_dapo", "I give up.", "42", 0.0),
    ("math_dapo", "", "42", 0.0),
    # boxed sources: last \boxed{} with math-verify
    ("math500", "so \\boxed{\\frac{1}{2}}", "\\frac12", 1.0),
    ("math500", "so \\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("math500", "so \\boxed{\\dfrac{3}{4}}", "0.75", 1.0),
    ("math500", "first \\boxed{3} then \\boxed{4}", "4", 1.0),
    ("math500", "first \\boxed{4} then \\boxed{3}", "4", 0.0),
    ("math500", "\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", 1.0),  # nested braces
    ("math500", "\\boxed{x^{2}+\\frac{1}{2}}", "\\frac12 + x^2", 1.0),
    ("math500", "\\boxed{\\{2, 1\\}}", "\\{1,2\\}", 1.0),  # sets
    ("math500", "\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("math500", "\\boxed{[1,2)}", "[1,2)", 1.0),
    ("math500", "\\boxed{50\\%}", "50", 1.0),  # percentages
    ("math500", "\\boxed{2\\pi}", "2 \\pi", 1.0),
    ("math500", "\\boxed{x = 3}", "3", 1.0),
    ("math500", "\\boxed{90^\\circ}", "90", 1.0),
    ("math500", "\\boxed{\\text{(C)}}", "\\text{(C)}", 1.0),
    ("math500", "\\boxed{\\frac{1}{3}}", "\\frac12", 0.0),
    ("math500", "\\boxed{x^2 y^2}", "x^{2}y^{2}", 1.0),  # not mistaken for a power tower
    ("math500", "\\boxed{e^{x^2}}", "e^{x^{2}}", 1.0),
    ("math500", "\\boxed{2^{10}}", "1024", 1.0),
    ("math500", "\\boxed{\\frac{1}{2}", "\\frac12", 0.0),  # braces never close
    ("math500", "The answer is 1/2.", "\\frac12", 0.0),  # no box at all
    ("math500", "\\boxed{}", "1", 0.0),
    ("math500", "\\boxed 5", "5", 1.0),
    ("math500", "\\fbox{5}", "5", 1.0),
    # GSM8K numeric answers
    ("gsm8k", "She pays \\boxed{1,000} dollars.", "1000", 1.0),
    ("gsm8k", "\\boxed{\\$18}", "18", 1.0),
    ("gsm8k", "\\boxed{18.00}", "18", 1.0),
    ("gsm8k", "\\boxed{-3}", "-3", 1.0),
    ("gsm8k", "\\boxed{17}", "18", 0.0),
    ("openai/gsm8k", "\\boxed{18}", "18", 1.0),
    # CPU demo task: exact integers only
    ("arithmetic", "7 * 6 = \\boxed{42}", "42", 1.0),
    ("arithmetic", "\\boxed{ -12 }", "-12", 1.0),
    ("arithmetic", "\\boxed{42.0}", "42", 0.0),
    ("arithmetic", "\\boxed{41}", "42", 0.0),
    ("arithmetic", "42", "42", 0.0),
    ("arithmetic", "\\boxed{007}", "7", 1.0),
    ("arithmetic", "\\boxed{-0}", "0", 1.0),
    ("arithmetic", "\\boxed{-7}", "7", 0.0),
    # integers are compared exactly, however large; no float tolerance can make a wrong one right
    ("math500", "\\boxed{1000000008}", "1000000007", 0.0),
    ("math500", "\\boxed{1000000007}", "1000000007", 1.0),
    ("math_dapo", "Answer: 123456789013", "123456789012", 0.0),
    ("math_dapo", "Answer: 123456789012", "123456789012", 1.0),
    ("gsm8k", "\\boxed{18.0000001}", "18", 0.0),
    ("gsm8k", "\\boxed{17.9999999}", "18", 0.0),
    ("gsm8k", "\\boxed{18}", "17.9999999", 0.0),
    ("math500", "\\boxed{\\frac{2000000015}{2}}", "1000000007", 0.0),
    ("math500", "\\boxed{\\frac{2000000014}{2}}", "1000000007", 1.0),
    ("math500", "\\boxed{10^{20}}", "100000000000000000001", 0.0),
    # non-integers: exact first, then math-verify's 6-decimal tolerance
    ("math500", "\\boxed{-\\frac{1}{2}}", "-0.5", 1.0),
    ("math500", "\\boxed{\\frac{-1}{2}}", "-0.5", 1.0),
    ("math500", "\\boxed{3/4}", "0.75", 1.0),
    ("math500", "\\boxed{0.333333}", "\\frac{1}{3}", 1.0),
    ("math500", "\\boxed{0.33}", "\\frac{1}{3}", 0.0),
    ("math500", "\\boxed{1234568.5}", "1234567.5", 0.0),
    ("math500", "\\boxed{nan}", "7", 0.0),
]


@pytest.mark.parametrize("data_source,response,truth,acc", CASES)
def test_answer_forms(data_source, response, truth, acc):
    result = compute_score(data_source, response, truth)
    assert result["acc"] == acc, result
    right, wrong = (1.0, -1.0) if data_source == "math_dapo" else (1.0, 0.0)
    assert result["score"] == (right if acc else wrong)
    assert set(result) == {"score", "acc", "pred", "verdict"}
    assert isinstance(result["pred"], str)
    assert result["verdict"] in VERDICTS and (result["verdict"] == "correct") == bool(acc)


def test_unknown_data_source_names_it():
    with pytest.raises(ValueError, match="no_such_set"):
        compute_score("no_such_set", "\\boxed{1}", "1")


@pytest.mark.parametrize(
    "response", [None, 12345, "\\boxed{" * 50, "}" * 10, "Answer:", "\\boxed{\\frac{}{}}", "x" * 200_000]
)
def test_malformed_output_never_raises(response):
    for source in ("math_dapo", "math500", "arithmetic"):
        result = compute_score(source, response, "3")
        assert result["acc"] == 0.0


def test_alternative_answers_from_extra_info():
    extra = {"answers": np.array(["4", "-4"], dtype=object)}  # as parquet hands lists back
    assert compute_score("skywork_or1", "\\boxed{-4}", "4", extra_info=extra)["acc"] == 1.0
    assert compute_score("skywork_or1", "\\boxed{5}", "4", extra_info=extra)["acc"] == 0.0


def test_verl_style_call_with_extra_kwargs():
    # verl passes keywords and may add reward_kwargs / router fields
    result = compute_score(
        data_source="gsm8k",
        solution_str="\\boxed{7}",
        ground_truth="7",
        extra_info={"num_turns": None, "rollout_reward_scores": {}},
        reward_router_address=None,
    )
    assert result["acc"] == 1.0


def test_extract_last_boxed_nested():
    assert extract_last_boxed("a \\boxed{\\frac{a}{b^{2}}} b") == "\\frac{a}{b^{2}}"
    assert extract_last_boxed("nothing") is None


def _score_batch(items):
    return [compute_score(*item)["acc"] for item in items]


def test_thread_pool_matches_main_thread():
    items = [(c[0], c[1], c[2]) for c in CASES]
    expected = [c[3] for c in CASES]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda item: compute_score(*item)["acc"], items))
    assert got == expected


def test_process_pool_matches():
    items = [(c[0], c[1], c[2]) for c in CASES[:20]]
    expected = [c[3] for c in CASES[:20]]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        got = pool.submit(_score_batch, items).result(timeout=120)
    assert got == expected


def test_identical_pathological_answer_still_matches_by_string():
    assert compute_score("math500", "\\boxed{9^{9^{9}}}", "9^{9^{9}}")["acc"] == 1.0


# ---------------------------------------------------------------- long integers


def test_integers_longer_than_pythons_int_string_limit():
    # int("1" * 5000) raises ValueError (sys.get_int_max_str_digits() is 4300)
    big = "9" * 4999 + "7"
    assert compute_score("arithmetic", f"\\boxed{{{big}}}", big)["acc"] == 1.0
    assert compute_score("arithmetic", f"\\boxed{{{big[:-1]}8}}", big)["acc"] == 0.0
    assert compute_score("arithmetic", f"\\boxed{{-{big}}}", big)["acc"] == 0.0
    assert compute_score("arithmetic", f"\\boxed{{000{big}}}", big)["acc"] == 1.0
    for source in ("math500", "math_dapo"):
        assert compute_score(source, f"Answer: \\boxed{{{big}}}", big)["acc"] == 1.0
        assert compute_score(source, f"Answer: \\boxed{{{big}.000}}", big)["acc"] == 1.0
        assert compute_score(source, f"Answer: \\boxed{{{big[:-1]}8}}", big)["acc"] == 0.0
    result = compute_score("math500", f"\\boxed{{{big}}}", big)
    assert len(result["pred"]) == reward.MAX_PRED_CHARS  # the log copy is cut, the comparison was not


# ---------------------------------------------------------------- references


BAD_REFERENCES = [
    (None, "is missing"),
    ("", "empty string"),
    ("   ", "empty string"),
    (float("nan"), "NaN"),
    (np.float64("nan"), "NaN"),
    ("nan", "'nan'"),
    ({"a": 1}, "is a dict"),
    (b"5", "is a bytes"),
    (42, "is a int"),
    ([], "empty list"),
    (["1", None], "position 1"),
    (np.array(["1", ""], dtype=object), "position 1"),
]


@pytest.mark.parametrize("truth,problem", BAD_REFERENCES)
def test_bad_reference_is_an_error_naming_source_and_row(truth, problem):
    extra = {"index": 17, "split": "train"}
    for response in ("\\boxed{nan}", "\\boxed{5}", "no answer at all"):
        with pytest.raises(BadReferenceError) as caught:
            compute_score("math500", response, truth, extra_info=extra)
        message = str(caught.value)
        assert "'math500'" in message and "index=17" in message and "train" in message
        assert "reward_model.ground_truth" in message and problem in message


def test_bad_alternative_answers_are_an_error():
    with pytest.raises(BadReferenceError, match=r"extra_info\.answers has an item \(position 0\) that is a dict"):
        compute_score("skywork_or1", "\\boxed{4}", "4", extra_info={"answers": [{"x": 1}], "index": 3})
    with pytest.raises(BadReferenceError, match="row unknown"):
        compute_score("skywork_or1", "\\boxed{4}", None)


def test_good_reference_shapes():
    assert compute_score("math500", "\\boxed{2}", np.array(["1", "2"], dtype=object))["acc"] == 1.0
    assert compute_score("math500", "\\boxed{2}", ("2",))["acc"] == 1.0
    assert compute_score("math500", "\\boxed{2}", np.str_("2"))["acc"] == 1.0


def test_loads_through_verl_custom_reward_function():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": reward.__file__, "name": "compute_score", "reward_kwargs": {}}}}
    )
    fn = get_custom_reward_fn(config)
    result = fn(data_source="math_dapo", solution_str="Answer: 5", ground_truth="5", extra_info={})
    assert result == {"score": 1.0, "acc": 1.0, "pred": "5", "verdict": "correct"}
    assert math.isclose(fn(data_source="math_dapo", solution_str="Answer: 6", ground_truth="5")["score"], -1.0)
