"""compute_dtype=auto: bfloat16 where the hardware multiplies it natively, float16 on GPUs that
only have float16 tensor cores, else float32."""

import json
import os

import pytest

from longbert_tf import configs, hardware
from longbert_tf.training import loop, runs
from tests.conftest import tiny_config


@pytest.mark.parametrize(
    "extra, expected",
    [("", "float32"), ("avx512_bf16", "bfloat16"), ("amx_tile amx_bf16", "bfloat16")],
)
def test_auto_takes_bfloat16_only_with_native_instructions(cpu, extra, expected):
    cpu(extra)
    dtype, reason = hardware.compute_dtype("auto", "auto")
    assert dtype == expected
    assert ("Test CPU 9000" in reason) == (expected == "float32")
    assert hardware.compute_dtype("bfloat16", "auto")[0] == "bfloat16"  # asked for, given
    assert hardware.compute_dtype("auto", "tpu")[0] == "bfloat16"
    assert hardware.compute_dtype("float16", "auto")[0] == "float16"
    with pytest.raises(ValueError, match="compute_dtype='float64'"):
        hardware.compute_dtype("float64", "auto")


def test_the_cpu_summary_names_the_model_and_its_bfloat16_instructions(cpu):
    cpu("avx512_bf16 amx_bf16")
    cores = os.cpu_count()
    expected = f"Test CPU 9000, {cores} cores; bfloat16 instructions: AVX512_BF16, AMX_BF16"
    assert hardware.cpu_summary() == expected
    cpu("")
    assert hardware.cpu_summary().endswith("bfloat16 instructions: none (emulated)")


def test_gpus_decide_by_their_compute_capability(cpu, monkeypatch):
    cpu("avx512_bf16")  # the CPU does not matter once there are GPUs
    cases = [((6, 1), "float32"), ((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16")]
    for capability, expected in cases:
        monkeypatch.setattr(hardware.tf.config, "list_physical_devices", lambda kind=None: ["gpu"])
        details = {"compute_capability": capability}
        monkeypatch.setattr(
            hardware.tf.config.experimental, "get_device_details", lambda gpu, d=details: d
        )
        assert hardware.compute_dtype("auto", "auto")[0] == expected


@pytest.mark.slow
def test_a_run_saves_the_chosen_dtype_and_keeps_it_on_resume(cpu, tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, str(tmp_path / "run"), max_notes=8, compute_dtype="auto")
    assert config.compute_dtype == "auto"
    cpu("avx512_bf16")
    loop.train_and_evaluate(config)
    with open(tmp_path / "run" / "config.json") as config_file:
        assert json.load(config_file)["compute_dtype"] == "bfloat16"
    cpu("")  # the same run on a machine without bfloat16 keeps the dtype it started with
    assert runs.resolve_compute_dtype(config).compute_dtype == "bfloat16"
    other = configs.ExperimentConfig(**{**config.__dict__, "model_dir": str(tmp_path / "new")})
    assert runs.resolve_compute_dtype(other).compute_dtype == "float32"


def test_the_matmul_peak_is_a_rate_of_real_products():
    """A small peak in both dtypes: positive, finite, and below one PFLOP/s of 2 CPU cores."""
    for dtype in ("float32", "bfloat16"):
        peak = hardware.matmul_peak(dtype, sizes=(128, 256), trials=2)
        assert 0 < peak < 1e6, (dtype, peak)
