"""The house reads in layers: ``detector/`` is what a prediction runs, and imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABOVE = {"app", "webapp", "train", "studies", "bench", "tests"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_detector_imports_nothing_from_the_layers_above_it():
    bad = {p.name: sorted(imported_roots(p) & ABOVE) for p in sorted((ROOT / "detector").glob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_webapp_package_imports_no_training_or_research_code():
    bad = {p.name: sorted(imported_roots(p) & {"app", "train", "studies", "bench", "tests"})
           for p in sorted((ROOT / "webapp").glob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_layer_check_sees_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from train.results import save_result\nimport bench.abuse\n")
    assert imported_roots(f) & ABOVE == {"train", "bench"}
