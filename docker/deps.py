"""The image's dependency list, read from pyproject.toml so that pyproject stays the one source of truth.

Used by docker/Dockerfile at build time (standard library only, except ``check``, which runs after the install)::

    python docker/deps.py requirements --extra gpu     # pyproject's dependencies + the gpu extra, one per line
    python docker/deps.py pin-installed torch          # "torch==<the base image's build>", a pip constraint
    python docker/deps.py check --extra gpu            # every declared requirement is installed and satisfied

``pin-installed`` exists because the base image ships its own CUDA build of PyTorch: pinning it as a constraint
makes pip choose versions of everything else (xFormers above all, which pins one exact torch release) that fit the
torch already there, instead of silently replacing it with another build from PyPI.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

DEFAULT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    with path.open("rb") as handle:
        return tomllib.load(handle)


def declared_requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` followed by each requested optional-dependency group, in pyproject's order."""
    project = load_toml(pyproject).get("project", {})
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise SystemExit(f"{pyproject}: no optional-dependencies group '{extra}' (known: {known})")
        requirements.extend(optional[extra])
    return requirements


def pinned_installed(names: list[str]) -> list[str]:
    """``name==version`` for each installed distribution (exact, local build tag included)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise SystemExit(f"pin-installed: '{name}' is not installed in this image") from exc
    return pins


def unsatisfied(requirements: list[str]) -> list[str]:
    """The requirements that are missing or installed at a version outside their specifier."""
    from packaging.requirements import Requirement  # present once the dependencies are installed

    problems = []
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{line}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{line}: installed {version}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deps.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=DEFAULT_PYPROJECT)
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("requirements", "check"):
        sub_parser = sub.add_parser(action)
        sub_parser.add_argument("--extra", action="append", default=[], help="optional-dependency group")
    sub.add_parser("pin-installed").add_argument("names", nargs="+")
    args = parser.parse_args(argv)

    if args.action == "pin-installed":
        print("\n".join(pinned_installed(args.names)))
        return 0
    requirements = declared_requirements(args.pyproject, args.extra)
    if args.action == "requirements":
        print("\n".join(requirements))
        return 0
    problems = unsatisfied(requirements)
    for problem in problems:
        print(f"unsatisfied requirement: {problem}", file=sys.stderr)
    if not problems:
        print(f"all {len(requirements)} declared requirements are installed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
