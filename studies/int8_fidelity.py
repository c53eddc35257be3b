"""Does the int8 backbone keep the wild model's verdicts? float32 against int8 on the validation split.

    python -m studies.int8_fidelity --images ~/.cache/fakespot/wild [--split val] [--out int8_fidelity.json]

Every image goes through the wild predictor's own preprocessing (``load_image`` at 224, as
``Predictor.predict``), then through both backbones and the shipped head; a fused model's residual logit
(float32 in both, it has no backbone) is computed once and fused into both. Reported: ROC-AUC of each, the
share of images whose verdict (P(fake) against the record's threshold) is the same, the share whose
three-way verdict (real / uncertain / fake, ``Predictor.verdict``, as the app shows it) is the same, the
change in P(fake), and the cosine similarity of the int8 embeddings (and the head's class tokens) with
float32. The gate for making int8 the default: ROC-AUC within 0.005 and >= 98% identical verdicts. The
test split is not read unless asked for. A model trained on all sources has seen these images, so its
ROC-AUC here is not a held-out figure: only the float32-vs-int8 differences mean something. About 10-20
minutes for the validation split on 2 cores (the first int8 load also builds the graph).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from detector.predict import WILD_MODEL, Predictor, load
from detector.preprocess import load_image, load_rgb, normalize
from train.wild_data import IMAGES, read_manifest


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=WILD_MODEL)
    p.add_argument("--images", default=str(IMAGES), help="folder of the wild images (<sha256>.<ext>)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=0, help="N images of the split, spread evenly over it, both classes (0: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: default)")
    p.add_argument("--out", default="", help="write the figures (and per-image P(fake)) as JSON here")
    return p


def scores(pred: Predictor, x: torch.Tensor, residual: np.ndarray | None
           ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """P(fake), embeddings and the head's class tokens of a normalised batch (WildDetector.forward, unrolled;
    fused with the residual logits as ``Predictor.fuse`` does)."""
    m = pred.model
    with torch.inference_mode():
        embed, cls = m.backbone.forward_tokens(x, m.head.layers)
        logits = m.head(m.head.features(embed, cls))
    return pred.fuse(logits.numpy(), residual), embed, torch.stack(cls, 1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()


def spread(v: np.ndarray) -> dict:
    return {"min": round(float(v.min()), 5), "p1": round(float(np.percentile(v, 1)), 5),
            "p5": round(float(np.percentile(v, 5)), 5), "median": round(float(np.median(v)), 5),
            "mean": round(float(v.mean()), 5)}


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    items = [it for it in read_manifest(images=args.images) if it.split == args.split]
    if args.limit:  # evenly spaced in each class, so a short run still has both (its AUC is defined)
        by_class = [[it for it in items if it.label == c] for c in (0, 1)]
        items = [it for c in by_class for it in c[::max(1, -(-len(c) * 2 // args.limit))]][:args.limit]
    missing = [it for it in items if not it.file.exists()]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(items)} {args.split} images are not in {args.images} "
                         f"(first: {missing[0].file}); rebuild them with train.build_wild --rebuild")
    f32, i8 = load(args.model, precision="float32"), load(args.model, precision="int8")
    if i8.precision != "int8":
        raise SystemExit("the int8 backbone could not be built (see the warning above)")
    t0 = time.time()
    p32, p8, cos_e, cos_c = [], [], [], []
    for s in tqdm(range(0, len(items), args.batch_size), desc=f"{args.split} float32 + int8", unit="batch"):
        chunk = items[s:s + args.batch_size]
        arrays = np.stack([load_image(it.file, f32.input_size) for it in chunk])
        residual = f32.residual_logits([load_rgb(it.file) for it in chunk])  # None unless the model is fused
        x = normalize(torch.from_numpy(arrays).permute(0, 3, 1, 2), f32.mean, f32.std)
        a, ea, ca = scores(f32, x, residual)
        b, eb, cb = scores(i8, x, residual)
        if s == 0:  # the unrolled forward is the predictor's own
            assert np.allclose(a, f32.predict_arrays(arrays, residual=residual), atol=1e-6)
            assert np.allclose(b, i8.predict_arrays(arrays, residual=residual), atol=1e-6)
        p32.append(a), p8.append(b), cos_e.append(cosine(ea, eb)), cos_c.append(cosine(ca, cb))
    p32, p8 = np.concatenate(p32), np.concatenate(p8)
    cos_e, cos_c = np.concatenate(cos_e), np.concatenate(cos_c)
    y = np.array([it.label for it in items])
    thr = f32.threshold
    same = float(np.mean((p32 >= thr) == (p8 >= thr)))
    three = float(np.mean([f32.verdict(a).key == f32.verdict(b).key for a, b in zip(p32, p8)]))
    auc32, auc8 = float(roc_auc_score(y, p32)), float(roc_auc_score(y, p8))
    dp = np.abs(p8 - p32)
    out = {
        "split": args.split, "images": len(items), "real": int((y == 0).sum()), "fake": int((y == 1).sum()),
        "model": f32.name, "weights_sha256": f32.record.weights_sha256, "fused": f32.residual is not None,
        "threshold": thr, "uncertain_band": list(f32.band), "roc_auc_float32": round(auc32, 4), "roc_auc_int8": round(auc8, 4),
        "roc_auc_change": round(auc8 - auc32, 4), "same_verdict": round(same, 4),
        "verdicts_changed": int(np.sum((p32 >= thr) != (p8 >= thr))), "same_three_way_verdict": round(three, 4),
        "real_called_real": {"float32": round(float(np.mean(p32[y == 0] < thr)), 4),
                             "int8": round(float(np.mean(p8[y == 0] < thr)), 4)},
        "fakes_caught": {"float32": round(float(np.mean(p32[y == 1] >= thr)), 4),
                         "int8": round(float(np.mean(p8[y == 1] >= thr)), 4)},
        "p_fake_abs_change": {"median": round(float(np.median(dp)), 4), "p99": round(float(np.percentile(dp, 99)), 4),
                              "max": round(float(dp.max()), 4)},
        "embedding_cosine": spread(cos_e),
        "class_token_cosine": {f"block {layer}": spread(cos_c[:, i]) for i, layer in enumerate(f32.model.head.layers)},
        "gate": {"roc_auc_within_0.005": abs(auc8 - auc32) <= 0.005, "same_verdict_at_least_98%": same >= 0.98},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    if args.out:
        per_image = [{"sha256": it.sha256, "label": it.label, "p_float32": round(float(a), 6), "p_int8": round(float(b), 6)}
                     for it, a, b in zip(items, p32, p8)]
        Path(args.out).write_text(json.dumps(dict(out, per_image=per_image), indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
