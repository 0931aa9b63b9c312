"""The shape of the code base: one import namespace, every package shipped, imports that follow the layers.

Layers, bottom to top: base (errors, config, console, io, devices, seeding) <- subsystems (sampling and slides,
then synthetic slides, the data pipeline, model and training, evaluation) <- applications (the console script,
demo and reproduction, benchmarks). A module may import its own unit and anything below it, never above it or a
peer beside it; lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]

# (unit, rank, module prefixes): a module belongs to the unit with the longest matching prefix.
UNITS = [
    ("base", 0, ["gapless", "gapless.errors", "gapless.config", "gapless.console", "gapless.io", "gapless.devices",
                 "gapless.seeding", "gapless.workers", "gapless.configs"]),
    ("sampling", 1, ["gapless.pipeline.sampling"]),
    ("slides", 1, ["gapless.pipeline.slides"]),
    ("synth", 2, ["gapless.pipeline.synth"]),
    ("pipeline", 3, ["gapless.pipeline"]),
    ("train", 4, ["gapless.train"]),
    ("eval", 5, ["gapless.eval"]),
    ("applications", 6, ["gapless.cli", "gapless.apps", "gapless.benchmarks"]),
]  # fmt: skip


def module_files() -> dict[str, Path]:
    """Every module of the namespace, by dotted name, found through pyproject's package-dir mapping."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not any(name.startswith(other + ".") for other in PACKAGE_DIRS if other != package and
                       other.startswith(package + ".") and (ROOT / PACKAGE_DIRS[other]) != (ROOT / folder)):  # fmt: skip
                modules[name] = path
    return modules


def unit_of(module: str) -> tuple[str, int]:
    best = max(
        ((unit, rank, prefix) for unit, rank, prefixes in UNITS for prefix in prefixes
         if module == prefix or module.startswith(prefix + ".")),
        key=lambda item: len(item[2]),
    )  # fmt: skip
    return best[0], best[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every gapless module an import statement in ``path`` names (module-level and lazy imports alike)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == "gapless" or n.startswith("gapless.")}


def test_every_package_folder_is_shipped() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert found == listed, f"pyproject packages: missing {sorted(found - listed)}, extra {sorted(listed - found)}"


def test_imports_follow_the_layers() -> None:
    modules = module_files()
    wrong = []
    for name, path in sorted(modules.items()):
        unit, rank = unit_of(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target in imported_modules(path, package):
            if target not in modules:  # `from gapless.x import name`: the name is not a module
                continue
            other, other_rank = unit_of(target)
            if other != unit and other_rank >= rank:
                wrong.append(f"{name} ({unit}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_a_users_scripts_do_not_shadow_gapless(tmp_path: Path) -> None:
    for shadow in ("train", "eval", "pipeline", "benchmarks", "configs"):  # a user's folder holding all of them
        (tmp_path / f"{shadow}.py").write_text("raise SystemExit('the user script was imported instead of gapless')\n")
        (tmp_path / shadow).mkdir()
        (tmp_path / shadow / "__init__.py").write_text("raise SystemExit('the user package was imported')\n")
    code = "import gapless.cli, gapless.train.loop, gapless.eval.evaluate, gapless.pipeline.loader; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    done = subprocess.run([sys.executable, "-m", "gapless.cli", "sampling", "--help"], cwd=tmp_path,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and "usage: gapless sampling" in done.stdout, done.stderr
