"""The compute dtypes the suite runs in, and tolerances derived from each dtype's precision.

Tests whose numbers depend on label attention's compute dtype take the `compute_dtype`
fixture (conftest.py) and run once per dtype in `SUITE_DTYPES`: float32, and the dtype
`compute_dtype="auto"` picks on this machine when that is bfloat16, so a CPU with native
bfloat16 runs both passes. `LONGBERT_TEST_DTYPE=float32` or `=bfloat16` forces one pass
(bfloat16 is emulated, and slower, on a CPU without AVX512_BF16 or AMX-BF16). Every other
test that trains or evaluates a model pins float32: its subject is not the arithmetic.
"""

import os

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
