"""Our parquet files load through verl's own RLHFDataset and score with our reward as verl calls it."""

from pathlib import Path

import pandas as pd
import pytest

from data_prep import dapo_math_17k, eval_sets, nt, or1

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    assert (
        dapo_math_17k.main(["--input", str(FIXTURES / "dapo_math_17k.jsonl"), "--output", str(out / "dapo.parquet")])
        == 0
    )
    assert or1.main(["--input", str(FIXTURES / "or1_math.parquet"), "--output", str(out / "or1.parquet")]) == 0
    assert nt.main(["--input", str(FIXTURES / "nt" / "numina_tir.jsonl"), "--output", str(out / "nt.parquet")]) == 0
    assert eval_sets.main(["--input", str(FIXTURES / "eval"), "--output", str(out / "eval")]) == 0
    # a Polaris output: the same rows plus its pass-rate columns
    polaris = pd.read_parquet(out / "dapo.parquet").assign(pass_rate=[0.5, 0.0, 0.25], n_correct=[4, 0, 2], n_samples=8)
    polaris.to_parquet(out / "polaris.parquet", index=False)
    return out


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return tokenizer


@pytest.mark.parametrize(
    "name",
    ["dapo", "or1", "nt", "polaris", "eval/gsm8k", "eval/math500", "eval/amc23", "eval/olympiadbench", "eval/minerva"],
)
def test_loads_in_verl_rlhf_dataset_and_scores(built, tmp_path, name):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from recipe.depo.reward import compute_score

    path = built / f"{name}.parquet"
    config = OmegaConf.create(
        {"max_prompt_length": 1024, "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")}
    )
    dataset = RLHFDataset(data_files=[str(path)], tokenizer=_tokenizer(), config=config, processor=None)
    assert len(dataset) == len(pd.read_parquet(path))
    for i in range(len(dataset)):
        item = dataset[i]
        truth = item["reward_model"]["ground_truth"]
        assert item["extra_info"]["question"]
        assert item["index"] == i
        answer = f"Answer: {truth}" if item["data_source"] == "math_dapo" else f"\\boxed{{{truth}}}"
        result = compute_score(
            data_source=item["data_source"],
            solution_str="reasoning... " + answer,
            ground_truth=truth,
            extra_info=item["extra_info"],
        )
        assert result["acc"] == 1.0, (name, i, truth)
