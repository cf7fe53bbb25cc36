"""Starting an entry point without TensorFlow's native start-up notices.

TensorFlow's notices (oneDNN, missing CUDA drivers, cuInit) reach stderr
before its log level applies. `import_framework()`, called by the entry-point
packages (`experiments`, `data_prep`) before anything else loads TensorFlow,
imports `framework` with stderr held back and passes on every line but those
notices, unless the user set `TF_CPP_MIN_LOG_LEVEL` or asked for `--verbosity`
(then everything is shown as TensorFlow prints it). Importing the library
itself never redirects a file descriptor.
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


def wanted_quiet() -> bool:
    """Whether the user left TensorFlow's logging to us (no log level, no `--verbosity`)."""
    return "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not any(
        argument.split("=")[0] in VERBOSITY_FLAGS for argument in sys.argv[1:]
    )


def import_framework() -> None:
    """Imports `longbert_tf.framework` (and probes for GPUs, where CUDA reports itself), with
    stderr held back when `wanted_quiet()`; then writes back every held line but the notices."""
    if "longbert_tf.framework" in sys.modules or not wanted_quiet():
        from longbert_tf import framework  # noqa: F401

        return
    stderr_fd = 2
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), stderr_fd)
        try:
            from longbert_tf.framework import tf

            tf.config.list_physical_devices("GPU")  # leaves the runtime uninitialised
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not STARTUP_NOTICES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
