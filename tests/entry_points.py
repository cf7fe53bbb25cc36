"""Entry points called in the test process: a module's `main(argv)` after its absl flags are
parsed from `argv`, as `app.run` calls it, without paying a new process (TensorFlow's import,
graph tracing) for every command.

Entry points define flags of the same name (`--dataset`, `--model_dir`, ...), so loading one
first removes the flags (and the modules) of the others. Tests that are about the
process itself (a kill and resume, several workers, `--help`, start-up output) still start one.
"""

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import runpy
import subprocess
import sys
import traceback

from absl import flags
from absl import logging as absl_logging

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_PACKAGES = ("experiments.", "data_prep.", "benchmarks.")
_current = []  # the entry module `load` imported last


def _forget_entry_flags() -> None:
    """Removes every entry module's flags, and those modules (a test module that imported
    one keeps using its functions, not its flags)."""
    by_module = FLAGS.flags_by_module_dict()
    for defining in [name for name in by_module if name.startswith(ENTRY_PACKAGES)]:
        for flag in list(by_module.get(defining, [])):
            if flag.name in FLAGS:
                delattr(FLAGS, flag.name)
        sys.modules.pop(defining, None)
    _current.clear()


def load(module_name: str):
    """The entry module `module_name` ("experiments.run", or "benchmarks.ensemble" for the
    script benchmarks/ensemble.py), imported anew with its flags and no other entry module's."""
    if _current == [module_name] and module_name in sys.modules:
        return sys.modules[module_name]
    _forget_entry_flags()
    sys.modules.pop(module_name, None)
    if module_name.startswith("benchmarks."):
        path = os.path.join(ROOT, *module_name.split(".")) + ".py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    _current[:] = [module_name]
    return module


def parsed(module_name: str, *argv: str):
    """The entry module `module_name` with its flags parsed from `argv` (the others at their
    defaults, whatever an earlier call parsed)."""
    module = load(module_name)
    _parse(module_name, argv)
    return module


def _parse(module_name: str, argv: tuple) -> list:
    """Parses `argv` into the flags, from their defaults; returns the arguments left."""
    FLAGS.unparse_flags()
    return FLAGS([module_name, *argv])


def _run(module_name: str, argv: tuple) -> None:
    """`main` after its flags are parsed; a module that defines its flags only when run as
    `__main__` (data_prep's) is run so, through `app.run`."""
    module = load(module_name)
    if FLAGS.flags_by_module_dict().get(module_name):
        remaining = _parse(module_name, argv)
        absl_logging.set_verbosity(absl_logging.INFO)  # as `app.run` logs (parsing reset it)
        module.main(remaining)
        return
    _forget_entry_flags()  # its flags are defined under its own name, sys.argv[0]
    saved_argv = sys.argv
    sys.argv = [module_name, *argv]
    try:
        runpy.run_module(module_name, run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    finally:
        sys.argv = saved_argv


def run_main(module_name: str, *argv: str, env: dict | None = None):
    """`python -m module_name *argv`, run in this process: a `subprocess.CompletedProcess`
    whose stdout is what it printed and whose stderr is its log, and, when it raised, the
    error (returncode 1, as `app.run` exits). Flags start from their defaults; `env` is set
    in `os.environ` for the call only."""
    printed, log = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    absl_logger = absl_logging.get_absl_logger()
    verbosity = absl_logging.get_verbosity()
    absl_logger.addHandler(handler)
    saved_env = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    returncode = 0
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(log):
            _run(module_name, argv)
    except (Exception, SystemExit) as error:  # what app.run reports and exits 1 for
        if isinstance(error, SystemExit) and error.code in (None, 0):
            raise
        returncode = 1
        log.write("".join(traceback.format_exception(error)))
    finally:
        absl_logger.removeHandler(handler)
        absl_logging.set_verbosity(verbosity)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(
        [module_name, *argv], returncode, printed.getvalue(), log.getvalue()
    )


class InProcessStages:
    """Stands in for the `subprocess` module of an entry module that runs its stages as
    `python -m MODULE ...` (benchmarks/codiesp_best.py): each stage runs in this process
    (`run_main`), what it prints is printed, and the entry module's own flags, with their
    values, are kept across it."""

    def __init__(self, owner: str):
        self.owner = owner

    def run(self, command: list, **unused) -> subprocess.CompletedProcess:
        if command[:2] != [sys.executable, "-m"]:
            raise ValueError(f"not a python -m stage: {command}")
        kept = list(FLAGS.flags_by_module_dict().get(self.owner, []))
        owner_module = sys.modules[self.owner]
        result = run_main(command[2], *command[3:])
        print(result.stdout, end="", flush=True)
        if result.returncode:
            print(result.stderr, end="", file=sys.stderr)
        _forget_entry_flags()
        for flag in kept:
            FLAGS[flag.name] = flag
            FLAGS.register_flag_by_module(self.owner, flag)
        sys.modules[self.owner] = owner_module
        _current[:] = [self.owner]
        return subprocess.CompletedProcess(command, result.returncode)
