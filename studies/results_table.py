"""Print the README's results table (Markdown) from the shipped checkpoints' records.

    python -m studies.results_table

The figures are those train.evaluate measured and train.ship wrote into each record; published
figures are quoted beside them for comparison.
"""

from __future__ import annotations

from detector.checkpoint import read_record
from detector.predict import CHECKPOINT_DIR, shipped_models
from detector.record import Record

PUBLISHED = [
    ("CIFAKE paper CNN (Bird & Lotfi 2023)", "92.98%", "", "", "", ""),
    ("published seed-style CNN", "92.5%", "", "", "", ""),
    ("published comparison: custom CNN", "", "0.9434", "0.9542", "0.9488", ""),
    ("published comparison: ResNet50", "", "0.9885", "0.9306", "0.9587", ""),
    ("best public result known (ImageNet-pretrained ResNet-18, 128 px)", "97.67%", "", "", "", "0.9971"),
]


def _train_note(rec: Record) -> str:
    minutes = (rec.train_seconds or 0) / 60
    if rec.arch == "ensemble":
        parts = " + ".join(f"{(m.get('train_seconds') or 0) / 60:.0f}" for m in rec.train_args["members"])
        return f"{minutes:.0f} min ({parts})"
    return f"{minutes:.0f} min, {rec.epoch} epochs"


def rows() -> list[str]:
    out = ["| model | split | accuracy | precision | recall | F1 | ROC-AUC | AP | real acc. | fake acc. | training (CPU) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in shipped_models():
        rec = read_record(CHECKPOINT_DIR / name)
        for split, label in (("test", "official (20,000)"), ("test_dedup", "deduplicated (19,622)")):
            m = rec.metrics.get(split)
            if not m:
                continue
            out.append(f"| `{name}` | {label} | {m['accuracy']:.2%} | {m['precision']:.4f} | {m['recall']:.4f} | "
                       f"{m['f1']:.4f} | {m['roc_auc']:.4f} | {m['average_precision']:.4f} | "
                       f"{m['real_accuracy']:.2%} | {m['fake_accuracy']:.2%} | "
                       f"{_train_note(rec) if split == 'test' else ''} |")
    for name, acc, prec, rec_, f1, auc in PUBLISHED:
        out.append(f"| {name} | published | {acc} | {prec} | {rec_} | {f1} | {auc} | | | | |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
