"""The suite's compute dtypes: forced by LONGBERT_TEST_DTYPE, else float32 and the native one;
a test that leaves the dtype to the machine fails."""

import ml_dtypes  # TensorFlow's own bfloat16 type
import numpy as np
import pytest

from longbert_tf import configs
from longbert_tf.modeling.label_attention import LabelAttention
from longbert_tf.training import runs
from tests.conftest import tiny_config
from tests.dtypes import (
    ENVIRONMENT_VARIABLE,
    EPSILON,
    bfloat16_logit_bound,
    label_attention_float64,
    suite_dtypes,
    tolerance,
)

DTYPES = ("float32", "bfloat16")


def test_a_forced_dtype_is_the_only_pass_and_a_bad_one_is_named():
    assert suite_dtypes("float32") == ("float32",)
    assert suite_dtypes("bfloat16") == ("bfloat16",)
    with pytest.raises(ValueError, match=f"{ENVIRONMENT_VARIABLE}='float16': choose from"):
        suite_dtypes("float16")


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("", ("float32",)),
        ("avx512_bf16", ("float32", "bfloat16")),
        ("amx_bf16", ("float32", "bfloat16")),
    ],
)
def test_unforced_the_suite_runs_float32_and_the_machines_native_dtype(cpu, flags, expected):
    cpu(flags)
    assert suite_dtypes("") == expected


def test_a_test_that_leaves_the_dtype_to_the_machine_fails(tmp_path):
    config = tiny_config(str(tmp_path), str(tmp_path / "run"), compute_dtype="auto")
    with pytest.raises(AssertionError, match="left compute_dtype='auto'"):
        runs.resolve_compute_dtype(config)
    stated = configs.ExperimentConfig(**{**config.__dict__, "compute_dtype": "float32"})
    assert runs.resolve_compute_dtype(stated) == stated


def test_bfloat16_tolerances_are_its_units_in_the_last_place():
    assert EPSILON == {
        "float32": np.finfo(np.float32).eps,
        "bfloat16": ml_dtypes.finfo(ml_dtypes.bfloat16).eps,
    }
    assert tolerance("float32", 1e-5) == 1e-5
    assert tolerance("bfloat16", 1e-5) == 2.0**-7
    assert tolerance("bfloat16", 0.0, scale=0.25) == 2.0**-9


def test_the_bfloat16_logit_bound_holds_against_a_float64_re_derivation(token_batch):
    """Label attention in bfloat16 on tokens an encoder rounded to bfloat16 (0 layers: one
    rounding) lies within the bound of the exact float64 logits; a worst case, the bound is
    within a factor of 100 of the largest error (measured: 33)."""
    tokens, mask = token_batch
    rng = np.random.default_rng(4)
    rounded = tokens.astype(ml_dtypes.bfloat16).astype(np.float32)
    layers = [LabelAttention(num_labels=9, matmul_dtype=dtype) for dtype in DTYPES]
    for layer in layers:
        layer(tokens, mask)
    layers[0].set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layers[0].weights])
    layers[1].set_weights(layers[0].get_weights())
    queries, classifiers, biases = (p.numpy() for p in layers[0].code_parameters())
    exact = label_attention_float64(tokens, mask, queries, classifiers, biases)
    np.testing.assert_allclose(layers[0](tokens, mask).numpy(), exact, atol=1e-5)
    error = np.abs(layers[1](rounded, mask).numpy() - exact)
    bound = bfloat16_logit_bound(tokens, mask, queries, classifiers, encoder_layers=0)
    assert (error <= bound).all(), (error / bound).max()
    assert (error / bound).max() > 0.01, (error / bound).max()
