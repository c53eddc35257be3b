"""Explanation faithfulness (ROAD) for every CAM method the app offers, and where the maps look.

    python -m studies.faithfulness --test cifake_test.zip [--model fakespot] [--n 1000]
    python -m studies.faithfulness --wild --model wild --n 30 --methods GradCAM EigenCAM

ROAD (Rong et al., 2022; pytorch-grad-cam's implementation): the pixels a map ranks most relevant
(MoRF) or least relevant (LeRF) are removed, 20/40/60/80% of them, and filled in by noisy linear
imputation, which leaves no sharp mask edge for the model to react to. The score is the change in
the explained class's logit. A faithful map makes MoRF fall steeply and LeRF barely move, so
``(LeRF - MoRF) / 2`` is higher for a more faithful method. RandomCAM (random maps) is the floor: a
method that does not beat it says nothing about the model.

Each image is explained toward the class the model predicts. The same seeded, class-balanced sample
of ``--n`` test images is used for every method. The second half measures the background share of
the GradCAM map's energy (outside the GrabCut object mask, as in the app) for real against fake
images, beside the background's share of the area. About 10 minutes on 2 cores for the default
model (ScoreCAM is most of it).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from tqdm import tqdm

from detector.data import load_image_set
from train.splits import balanced
from detector.explain import CAM_METHODS, FLOOR_METHOD, Explainer, background_share, object_mask
from detector.predict import CIFAKE_MODEL, load
from train.results import FIGURES, save_result

PERCENTILES = [20, 40, 60, 80]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ROAD faithfulness of the CAM methods and the background share")
    p.add_argument("--test", nargs="+", help="CIFAKE test data (folder or zip)")
    p.add_argument("--wild", action="store_true", help="use the wild track's test split (224 px model inputs) instead")
    p.add_argument("--model", default=CIFAKE_MODEL)
    p.add_argument("--n", type=int, default=1000, help="seeded, class-balanced test sample")
    p.add_argument("--methods", nargs="*", default=None, help="default: every method the app offers")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    return p


def wild_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-balanced sample of the wild test split as 224 px model inputs (as uploaded)."""
    from train.splits import balanced_sample
    from train.wild_data import read_manifest, view

    items = [it for it in read_manifest() if it.split == "test"]
    labels = np.array([it.label for it in items])
    idx = balanced_sample(labels, n, seed)
    return np.stack([view(items[i].file, "clean") for i in idx]), labels[idx]


def road_scores(explainer: Explainer, images: np.ndarray, labels: np.ndarray, maps: np.ndarray,
                batch: int) -> dict[str, dict[str, float]]:
    """Mean MoRF and LeRF logit change at each percentile (pytorch-grad-cam's ROAD)."""
    model, out = explainer.model, {"morf": {}, "lerf": {}}
    for pct in PERCENTILES:
        for key, metric in (("morf", ROADMostRelevantFirst(pct)), ("lerf", ROADLeastRelevantFirst(pct))):
            vals = []
            for i in range(0, len(images), batch):
                x = explainer._input(images[i:i + batch]).detach()
                targets = [BinaryClassifierOutputTarget(int(y)) for y in labels[i:i + batch]]
                vals.append(metric(x, maps[i:i + batch], targets, model))
            out[key][str(pct)] = float(np.concatenate(vals).mean())
    return out


def plot(result: dict, path) -> None:
    from detector.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in result["methods"].items():
        style = "k--" if name in FLOOR_METHOD else "-o"
        for ax, key in zip(axes, ("morf", "lerf")):
            ax.plot(PERCENTILES, [r["road"][key][str(p)] for p in PERCENTILES], style, label=name, ms=3)
    axes[0].set(title="most relevant removed first (lower = more faithful)", xlabel="% of pixels removed",
                ylabel="change in the explained class's logit")
    axes[1].set(title="least relevant removed first (higher = more faithful)", xlabel="% of pixels removed")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.axhline(0, color="k", lw=0.6)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.wild:
        images, truth = wild_sample(args.n, args.seed)
    elif args.test:
        sample = balanced(load_image_set(args.test, labelled=True), args.n, args.seed)
        images, truth = sample.images, sample.labels
    else:
        raise SystemExit("give --test CIFAKE_TEST or --wild")
    pred = load(args.model)
    explainer = Explainer(pred, max_scorecam_passes=None)  # a study waits for ScoreCAM
    p = pred.predict_arrays(images)
    predicted = (p >= pred.threshold).astype(np.int64)
    methods = args.methods or list(CAM_METHODS)
    result = {"model": pred.name, "model_sha256": pred.record.weights_sha256, "n": len(images),
              "data": "wild test split" if args.wild else "CIFAKE test", "percentiles": PERCENTILES,
              "accuracy_on_sample": float((predicted == truth).mean()), "methods": {}}
    all_maps = {}
    for name in tqdm(methods + list(FLOOR_METHOD), desc="methods"):
        t = time.perf_counter()
        torch.manual_seed(args.seed)  # RandomCAM's maps and ROAD's imputation noise
        maps = np.concatenate([explainer.maps(images[i:i + args.batch], name, predicted[i:i + args.batch])
                               for i in range(0, len(images), args.batch)])
        cam_s = time.perf_counter() - t
        road = road_scores(explainer, images, predicted, maps, args.batch)
        combined = float(np.mean([(road["lerf"][str(q)] - road["morf"][str(q)]) / 2 for q in PERCENTILES]))
        result["methods"][name] = {"road": road, "road_combined": combined, "cam_seconds": round(cam_s, 1),
                                   "seconds": round(time.perf_counter() - t, 1)}
        all_maps[name] = maps
        tqdm.write(f"{name}: combined {combined:+.3f}  MoRF {road['morf']}  LeRF {road['lerf']}")

    # Where GradCAM looks: background share of the map's energy, real against fake (true class).
    fg = np.stack([object_mask(im) for im in tqdm(images, desc="object masks")])
    area = (~fg).reshape(len(fg), -1).mean(1)
    share = np.array([background_share(m, f) for m, f in zip(all_maps.get("GradCAM", all_maps[methods[0]]), fg)])
    bg = {}
    for c, cls in enumerate(("real", "fake")):
        sel = (truth == c) & ~np.isnan(share)
        bg[cls] = {"n": int(sel.sum()), "background_share_mean": float(share[sel].mean()),
                   "background_share_median": float(np.median(share[sel])),
                   "background_area_mean": float(area[sel].mean()),
                   "share_above_area": float((share[sel] > area[sel]).mean())}
    result["background"] = {"method": "GradCAM" if "GradCAM" in all_maps else methods[0], **bg}
    name = "faithfulness_wild" if args.wild else "faithfulness"
    plot(result, FIGURES / f"{name}.png")
    path = save_result(name, result, t0)
    print(json.dumps({"background": result["background"], "result": str(path)}, indent=1))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
