"""The compute dtypes the suite runs in, and tolerances derived from each dtype's precision.

Tests whose numbers depend on label attention's compute dtype take the `compute_dtype`
fixture (conftest.py) and run once per dtype in `SUITE_DTYPES`: float32, and the dtype
`compute_dtype="auto"` picks on this machine when that is bfloat16, so a CPU with native
bfloat16 runs both passes. `LONGBERT_TEST_DTYPE=float32` or `=bfloat16` forces one pass
(bfloat16 is emulated, and slower, on a CPU without AVX512_BF16 or AMX-BF16). Every other
test that trains or evaluates a model pins float32: its subject is not the arithmetic.
"""

import os

import numpy as np

from longbert_tf import hardware

ENVIRONMENT_VARIABLE = "LONGBERT_TEST_DTYPE"
# The gap between 1 and the next number each dtype represents (one unit in the last place).
EPSILON = {"float32": 2.0**-23, "bfloat16": 2.0**-7}


def suite_dtypes(forced: str) -> tuple:
    """The dtypes of the dtype-dependent tests: `forced` alone, or float32 and the native one."""
    if forced:
        if forced not in EPSILON:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}={forced!r}: choose from {sorted(EPSILON)}")
        return (forced,)
    native, _ = hardware.compute_dtype("auto", "auto")
    return tuple(dict.fromkeys(("float32", native)))


SUITE_DTYPES = suite_dtypes(os.environ.get(ENVIRONMENT_VARIABLE, ""))


def tolerance(dtype: str, float32: float, scale: float = 1.0) -> float:
    """Absolute tolerance between two computations of one value in `dtype`.

    `float32` is the test's own float32 tolerance. A bfloat16 product rounds its inputs and
    its result to 8 significant bits, so two kernels that add in different orders (a
    SavedModel's graph and the eager model, one batch and another), or a kernel and an exact
    reference, can put a value one unit in the last place of its `scale` apart: 2**-7 for a
    probability (scale 1), or for a logit that moves a probability by at most a quarter of
    its own change.
    """
    return max(float32, EPSILON[dtype] * scale)


# A bfloat16 rounding's largest relative error (round to nearest: half a unit in the last place).
BFLOAT16_UNIT_ROUNDOFF = EPSILON["bfloat16"] / 2
# The bfloat16 roundings on the longest chain through one encoder layer (modeling/bert_layers.py):
# the query or key product, the scores, the softmax probabilities, the value product, the
# context, the attention output, residual and normalisation, the intermediate product, its GELU,
# the output product, residual and normalisation.
ROUNDINGS_PER_ENCODER_LAYER = 11


def bfloat16_logit_bound(tokens, mask, queries, classifiers, encoder_layers: int):
    """`[notes, codes]` bounds on how far a bfloat16 computation of label attention's logits
    (over an encoder of `encoder_layers` layers computing in bfloat16) lies from the exact
    ones, to first order, worked out in float64 from the float32 model's own values.

    `tokens` `[notes, positions, hidden]` and `mask` `[notes, positions]` are the encoder's
    float32 outputs; `queries` and `classifiers` `[codes, hidden]`. Each rounding adds at most
    `u` (BFLOAT16_UNIT_ROUNDOFF) relative error; layer normalisation keeps activations at their
    scale, so an encoder output carries at most `(1 + 11 L) u` relative error per component (the
    embedding's rounding and the roundings of each layer's chain, summed). Label attention then
    adds its own (queries, scores, attention weights and z_c rounded to bfloat16):
      |d s_t|   <= (token error + 2u) sum_i |e_ti q_i|,
      |d a_t|   <= 2 a_t max_t |d s_t|                  (the softmax's first-order change),
      |d z_i|   <= (token error + 2u) sum_t a_t |e_ti| + sum_t |d a_t| |e_ti|,
      |d logit| <= sum_i |w_i| |d z_i|                   (the float32 product with w_c).
    A sum of two bfloat16 computations' errors bounds how far apart they may be.
    """
    u = BFLOAT16_UNIT_ROUNDOFF
    token_error = (1 + ROUNDINGS_PER_ENCODER_LAYER * encoder_layers) * u
    tokens, queries, classifiers = (
        np.asarray(a, np.float64) for a in (tokens, queries, classifiers)
    )
    real = np.asarray(mask, bool)[:, None, :]  # [notes, 1, positions]
    attention = _attention_float64(tokens, real, queries)
    magnitude = np.abs(tokens)
    score_error = (token_error + 2 * u) * np.einsum("nth,ch->nct", magnitude, np.abs(queries))
    largest_score_error = np.where(real, score_error, 0.0).max(axis=-1, keepdims=True)
    attention_error = 2 * attention * largest_score_error
    context_error = (token_error + 2 * u) * np.einsum("nct,nth->nch", attention, magnitude)
    context_error += np.einsum("nct,nth->nch", attention_error, magnitude)
    return np.einsum("nch,ch->nc", context_error, np.abs(classifiers))


def _attention_float64(tokens, real, queries):
    """`[notes, codes, positions]` softmax weights over the real positions (none: all 0)."""
    scores = np.einsum("nth,ch->nct", tokens, np.asarray(queries, np.float64))
    scores = np.where(real, scores, -np.inf)
    attention = np.exp(scores - scores.max(axis=-1, keepdims=True, initial=-1e300))
    attention = np.where(real, attention, 0.0)
    return attention / np.maximum(attention.sum(axis=-1, keepdims=True), 1e-300)


def label_attention_float64(tokens, mask, queries, classifiers, biases):
    """`[notes, codes]` logits of label attention (Eq. 1), worked out in float64."""
    tokens = np.asarray(tokens, np.float64)
    attention = _attention_float64(tokens, np.asarray(mask, bool)[:, None, :], queries)
    context = np.einsum("nct,nth->nch", attention, tokens)
    return np.einsum("nch,ch->nc", context, np.asarray(classifiers, np.float64)) + biases
