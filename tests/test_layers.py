"""The layers of docs/design.md, checked on the source of every module: what each package may import (every
import counts, a function-level one too, relative ones resolved) and that only the CLI prints."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cbamlab"

# package -> the packages it must never import
FORBIDDEN = {
    "models": {"config", "runs", "engine", "inference", "experiments", "explain", "report", "cli"},
    "data": {"config", "runs", "engine", "inference", "experiments", "explain", "report", "cli"},
    "config": {"runs", "engine", "inference", "experiments", "explain", "report", "cli"},
    "runs": {"engine", "inference", "experiments", "explain", "report", "cli"},
    "engine": {"inference", "experiments", "explain", "report", "cli"},  # training only
    "inference": {"experiments", "explain", "report", "cli"},  # eval, predict, export: on the engine
    "report": {"inference", "experiments", "explain", "cli"},  # report/explain.py reads explain's output files only
    "experiments": {"inference", "explain", "report", "cli"},
    "explain": {"experiments", "report", "cli"},  # it loads models through inference; the CLI asks for its report
}
# modules a package may import from a layer it must not (package -> dotted names): none today
EXCEPT: dict[str, tuple[str, ...]] = {}
PRINTS_ALLOWED = {"cli"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every module `source` imports, anywhere in it: `import a.b`, `from a import b`
    (as a and a.b), relative imports resolved against `module`, and `importlib.import_module("a.b")`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return out


def prints(source: str) -> list[int]:
    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def layer(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE.name else None


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    source = path.read_text(encoding="utf-8")
    module = module_name(path, root)
    own = layer(module)
    where = path.relative_to(root.parent)
    out = [f"{where}:{line} imports {name} ({own} must not import {layer(name)})"
           for line, name in imported(source, module, path.name == "__init__.py")
           if layer(name) in FORBIDDEN.get(own, ())
           and not any(name == e or name.startswith(e + ".") for e in EXCEPT.get(own, ()))]
    if own not in PRINTS_ALLOWED:
        out += [f"{where}:{line} calls print (only cbamlab/cli prints; library code logs)" for line in prints(source)]
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_is_covered():
    packages = {p.relative_to(PACKAGE).parts[0] for p in MODULES if len(p.relative_to(PACKAGE).parts) > 1}
    assert set(FORBIDDEN) <= packages


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    assert violations(path) == []


def test_the_checker_sees_hidden_and_relative_imports(tmp_path):
    root = tmp_path / "cbamlab"
    (root / "report").mkdir(parents=True)
    bad = root / "report" / "plots.py"
    bad.write_text("import json\n\ndef f():\n    from ..experiments import compare\n    print('x')\n"
                   "    import cbamlab.cli\n    from . import tables\n")
    assert violations(bad, root) == [
        "cbamlab/report/plots.py:4 imports cbamlab.experiments (report must not import experiments)",
        "cbamlab/report/plots.py:4 imports cbamlab.experiments.compare (report must not import experiments)",
        "cbamlab/report/plots.py:6 imports cbamlab.cli (report must not import cli)",
        "cbamlab/report/plots.py:5 calls print (only cbamlab/cli prints; library code logs)"]
    init = root / "engine" / "__init__.py"
    init.parent.mkdir()
    init.write_text("from .fit import fit\nfrom ..report import write_report\n"
                    "import importlib\nimportlib.import_module('cbamlab.cli.train')\n")
    assert [v.split(" (")[0] for v in violations(init, root)] == [
        "cbamlab/engine/__init__.py:2 imports cbamlab.report",
        "cbamlab/engine/__init__.py:2 imports cbamlab.report.write_report",
        "cbamlab/engine/__init__.py:4 imports cbamlab.cli.train"]
