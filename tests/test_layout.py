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
    bad = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & ABOVE)
           for p in sorted((ROOT / "detector").rglob("*.py"))}  # the provenance package too
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_webapp_package_imports_no_training_or_research_code():
    bad = {p.name: sorted(imported_roots(p) & {"app", "train", "studies", "bench", "tests"})
           for p in sorted((ROOT / "webapp").glob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_layer_check_sees_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from train.results import save_result\nimport bench.abuse\n")
    assert imported_roots(f) & ABOVE == {"train", "bench"}


# What only training and research use; each now lives in train/ (its module named beside it).
TRAINING_ONLY = {
    "train_one_epoch": "train/engine.py", "resolve_amp": "train/engine.py", "autocast": "train/engine.py",
    "AugmentConfig": "train/augment.py", "augment_batch": "train/augment.py", "jpeg_recompress": "train/augment.py",
    "down_up": "train/augment.py", "random_translate": "train/augment.py",
    "train_val_split": "train/splits.py", "balanced_sample": "train/splits.py", "drop_duplicates": "train/splits.py",
    "duplicate_mask": "train/splits.py", "read_duplicate_hashes": "train/splits.py",
    "fit_temperature": "train/calibration.py", "choose_threshold": "train/calibration.py",
    "expected_calibration_error": "train/calibration.py",
    "read_manifest": "train/wild_data.py", "select_training": "train/wild_data.py", "augmented": "train/wild_data.py",
    "format_controlled": "train/wild_data.py", "save_features": "train/wild_data.py", "load_features": "train/wild_data.py",
}


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for n in tree.body:
        if isinstance(n, ast.Assign):
            names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
    return names


def test_no_training_only_name_is_left_in_the_runtime_package():
    left = {str(p.relative_to(ROOT)): sorted(defined_names(p) & set(TRAINING_ONLY))
            for p in sorted((ROOT / "detector").rglob("*.py"))}
    assert not {k: v for k, v in left.items() if v}, left
    for name, home in TRAINING_ONLY.items():  # and each one is where the table says
        assert name in defined_names(ROOT / home), (name, home)
