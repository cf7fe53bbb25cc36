"""TensorFlow with the Keras 2 API, imported in this one place.

`tensorflow_hub.KerasLayer` is a Keras 2 layer, so the package uses `tf_keras`
and sets `TF_USE_LEGACY_KERAS=1` before TensorFlow is first imported. Every
other module takes `tf` and `keras` from here.

TensorFlow's native start-up notices (oneDNN, missing CUDA drivers, cuInit)
reach stderr before its log level applies; they are held back while it loads
and any other line is passed on, unless the user set `TF_CPP_MIN_LOG_LEVEL`
or asked for `--verbosity` (then everything is shown as TensorFlow prints it).
"""

import os
import re
import sys
import tempfile

STARTUP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
)
VERBOSITY_FLAGS = ("--verbosity", "-verbosity", "--v", "-v")
QUIET = "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not any(
    argument.split("=")[0] in VERBOSITY_FLAGS for argument in sys.argv[1:]
)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_quietly():
    """Imports the stack (and probes for GPUs, where CUDA reports itself) with stderr held
    back, then writes back every held line but the start-up notices."""
    stderr_fd = 2
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), stderr_fd)
        try:
            import tensorflow
            import tensorflow_hub  # noqa: F401
            import tensorflow_text  # noqa: F401
            import tf_keras  # noqa: F401

            tensorflow.config.list_physical_devices("GPU")  # leaves the runtime uninitialised
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not STARTUP_NOTICES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


if QUIET:
    _import_quietly()

import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["hub", "keras", "tf", "tf_text"]
