"""A corrupt DEPO checkpoint file is refused with its path, not with a bare JSONDecodeError."""

import json
import types

import pytest

from recipe.depo.checkpoint import STATE_DIR, restore
from recipe.depo.fsutil import read_json


@pytest.mark.parametrize(
    "content,error",
    [
        ('{"format_version": 1, "filter": {', "JSONDecodeError"),
        ("", "JSONDecodeError"),
        (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
        ("[1, 2]", "is a JSON list, expected an object"),
    ],
)
def test_filter_state_json_errors_name_the_file(tmp_path, content, error):
    state_dir = tmp_path / "global_step_3" / STATE_DIR
    state_dir.mkdir(parents=True)
    path = state_dir / "state.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    # the loader the trainer calls at resume; it reads the file before touching the intake, so a
    # bare namespace stands in for it
    with pytest.raises(ValueError) as caught:
        restore(str(state_dir), types.SimpleNamespace())
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "DEPO filter state" in message and error in message


def test_missing_state_file_names_it(tmp_path):
    with pytest.raises(ValueError, match=rf"^{tmp_path}/state\.json: cannot read the estimator state \(FileNotFound"):
        read_json(str(tmp_path / "state.json"), "estimator state")


def test_good_state_file_reads(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"format_version": 1}))
    assert read_json(str(tmp_path / "state.json"), "x") == {"format_version": 1}


def test_corrupt_estimator_checkpoint_names_the_file(tmp_path):
    from recipe.depo.estimator.online import OnlineEstimator

    (tmp_path / "config.json").write_text('{"backbone": ')
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config\.json: cannot read the estimator config"):
        OnlineEstimator.load(str(tmp_path))
