"""Quiet start: an entry point holds TensorFlow's native start-up notices back and passes everything
else; importing the library redirects nothing."""

import os
import subprocess
import sys

import pytest

from longbert_tf import quiet_start

pytestmark = pytest.mark.slow  # starts processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stderr_of(code: str, *arguments: str, **environment) -> str:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        cwd=ROOT,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stderr


def notices(stderr: str) -> list:
    return [line for line in stderr.splitlines() if quiet_start.STARTUP_NOTICES.search(line)]


def test_an_entry_point_starts_without_tensorflows_notices():
    probe = "import tensorflow as tf; tf.config.list_physical_devices('GPU')"
    plain = notices(stderr_of(probe))  # what TensorFlow alone prints on this machine
    library = "import longbert_tf.framework as f; f.tf.config.list_physical_devices('GPU')"
    assert bool(notices(stderr_of(library))) == bool(plain)  # the library holds nothing back
    code = "import sys; import experiments; print('after', file=sys.stderr)"
    assert stderr_of(code).splitlines() == ["after"]
    # Asked for, with --verbosity or a log level the user set, TensorFlow prints them as ever.
    assert bool(notices(stderr_of(code, "--verbosity=1"))) == bool(plain)
    assert bool(notices(stderr_of(code, TF_CPP_MIN_LOG_LEVEL="0"))) == bool(plain)


def test_a_dry_run_prints_no_native_line():
    command = [sys.executable, "-m", "experiments.run", "--dataset=mimic3_50", "--dry_run"]
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "total" in completed.stdout
    native = [line for line in completed.stderr.splitlines() if line.startswith(("I0000", "E0000"))]
    assert not native and not notices(completed.stderr)
