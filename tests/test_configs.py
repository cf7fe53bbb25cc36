"""`configs.from_preset`: the one path from a dataset preset and given settings to a config, which
`experiments.run` and `experiments.reproduce` both take."""

import os

import pytest

from longbert_tf import configs, presets
from tests.entry_points import parsed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_given_settings_win_over_the_recipe_then_the_preset_then_the_defaults():
    recipe = presets.PRESETS["codiesp_dx"].recipe
    config = configs.from_preset("codiesp_dx", seq_len=512, warmup_steps=7, label_init="random")
    assert (config.warmup_steps, config.label_init) == (7, "random")  # given
    assert config.encoder_learning_rate == recipe["encoder_learning_rate"]  # recipe
    assert config.segments == configs.SegmentConfig(512, recipe["segment_length"])
    assert config.train_steps == presets.PRESETS["codiesp_dx"].train_steps  # preset
    assert (config.seed, config.label_attention, config.grad_accum_steps) == (0, "chunked", 1)
    assert config.model_dir == os.path.join("runs", "codiesp_dx_seq512")
    assert configs.from_preset("codiesp_dx", seed=None).seed == 0  # None is not given


def test_the_paper_recipe_and_its_batch_sizes():
    preset = presets.PRESETS["mimic4_dx"]
    config = configs.from_preset("mimic4_dx")
    assert (config.encoder, config.segments.seq_len) == (preset.encoder, preset.seq_len)
    assert (config.batch_size, config.learning_rate, config.lr_schedule) == (4, 2e-4, "constant")
    assert configs.from_preset("mimic4_dx", seq_len=8192).batch_size == 2
    assert configs.from_preset("mimic4_dx", seq_len=8192, batch_size=4).batch_size == 4


def test_caml_takes_its_own_settings_and_ignores_the_encoders():
    config = configs.from_preset("codiesp_dx", model="caml", encoder="minilm", segment_length=64)
    assert (config.encoder, config.segments, config.label_init) == (None, None, "random")
    assert (config.batch_size, config.learning_rate, config.max_words) == (16, 1e-4, 2500)
    assert config.model_dir == os.path.join("runs", "codiesp_dx_caml2500")
    assert configs.from_preset("synthetic", model="caml", learning_rate=1e-3).learning_rate == 1e-3


def test_unknown_datasets_and_settings_are_refused():
    with pytest.raises(ValueError, match="unknown dataset 'mimic5'"):
        configs.from_preset("mimic5")
    with pytest.raises(ValueError, match="learnig_rate"):
        configs.from_preset("synthetic", learnig_rate=1e-3)
    with pytest.raises(ValueError, match="segments"):
        configs.from_preset("synthetic", segments=configs.SegmentConfig(512))


def test_run_and_reproduce_build_the_same_row(tmp_path):
    """run and reproduce define the same flags: each is loaded in turn (tests/entry_points.py)."""
    flags = ["--dataset=codiesp_dx", "--train_steps=900", "--seed=3", f"--data_dir={tmp_path}"]
    model_dir = str(tmp_path / "table" / "1024")
    run = parsed("experiments.run", *flags, "--seq_len=1024", f"--model_dir={model_dir}")
    expected = run.resolve_config()
    reproduce = parsed("experiments.reproduce", *flags, f"--out_dir={tmp_path / 'table'}")
    row = reproduce.row_config("1024", str(tmp_path / "table"))
    assert row == expected and row.label_init == "descriptions"  # the preset's recipe
