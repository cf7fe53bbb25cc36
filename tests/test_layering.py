"""The package's layers: imports run one way, read from every module's import statements."""

import ast
import importlib
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "longbert_tf"
# Lowest first; a module may import its own layer and those below it. The base modules
# (framework, files, configs, presets, hardware, distribute, quiet_start, run_folder) are
# layer 0.
LAYERS = ("data", "modeling", "evaluation", "training", "lexical", "serving", "review")
ENTRY_POINTS = ("experiments", "data_prep", "benchmarks", "tests")


def layer_of(module: str) -> int:
    """0 for a base module of `longbert_tf`, else 1 + the index of its subpackage."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) + 1 if len(parts) > 2 or parts[-1] in LAYERS else 0


def imported_modules(path: pathlib.Path, root: pathlib.Path) -> list:
    """`(line, module)` of every import in a file, at any depth; `from a import b` counts as
    `a.b` when `a.b` is a module or package under `root`, else as `a`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                relative = candidate.replace(".", "/")
                is_module = (root / f"{relative}.py").exists() or (root / relative).is_dir()
                found.append((node.lineno, candidate if is_module else node.module))
    return found


def library_files(package: pathlib.Path = PACKAGE) -> list:
    return sorted(package.rglob("*.py"))


def violations(package: pathlib.Path) -> list:
    """`file:line imports module` for every import of an entry point or of a higher layer."""
    found = []
    for path in library_files(package):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for line, imported in imported_modules(path, package.parent):
            where = f"{path.relative_to(package.parent)}:{line} imports {imported}"
            if imported.split(".")[0] in ENTRY_POINTS:
                found.append(where)
            elif imported.startswith("longbert_tf.") and layer_of(imported) > layer_of(module):
                found.append(where)
    return found


def test_every_subpackage_exists_and_its_public_names_import():
    for layer in LAYERS:
        package = importlib.import_module(f"longbert_tf.{layer}")
        assert package.__all__, layer
        modules = {path.stem for path in (PACKAGE / layer).glob("*.py")}
        for name in package.__all__:
            value = getattr(package, name)
            assert value is not None, f"longbert_tf.{layer}.{name}"
            if name in modules:  # the package attribute must stay the module it names
                assert value is importlib.import_module(f"longbert_tf.{layer}.{name}"), name


def test_no_module_imports_a_higher_layer_or_an_entry_point():
    assert not violations(PACKAGE), "\n".join(violations(PACKAGE))


def test_the_checker_finds_planted_violations(tmp_path):
    package = tmp_path / "longbert_tf"
    for layer in ("data", "training"):
        (package / layer).mkdir(parents=True)
    (package / "training" / "trainer.py").write_text("")
    (package / "data" / "bad.py").write_text(
        "def f():\n    from longbert_tf.training import trainer\n"
    )
    (package / "files.py").write_text("import longbert_tf.data.bad\nfrom experiments import run\n")
    (package / "data" / "fine.py").write_text("from longbert_tf import files\n")
    assert sorted(violations(package)) == [
        "longbert_tf/data/bad.py:2 imports longbert_tf.training.trainer",
        "longbert_tf/files.py:1 imports longbert_tf.data.bad",
        "longbert_tf/files.py:2 imports experiments",
    ]
