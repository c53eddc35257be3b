"""Leave-one-group-out cross-validation of the wild track: every choice is judged on origins it never saw.

    python -m train.wild_features --max-per-group 0 --max-real-per-source 0 --aug-views 0 --train-clean
    python -m train.residual_crops
    python -m train.train_residual --cv          # the residual network's out-of-fold scores
    python -m train.wild_cv                      # CLIP heads, fusion, threshold, peers: the tables
    python -m train.wild_cv --twins              # the same, each head also trained with autoencoder twins

Sources are grouped by origin (``group`` in ``train/wild_sources.json``: GAN faces, SD 1.x, SDXL and
ComfyUI, Midjourney and DALL-E, camera photo sets, web photo sets...). Each group is held out in turn;
everything is trained on the others and scores the held-out group. The pooled out-of-fold (OOF) scores
then choose the fusion weights, the threshold and the uncertain band, so no figure here was tuned on the
images it reports.

With ``--twins`` (train.tae_twins, then train.wild_features --twins), every head is also trained with the
fake twins of each fold's training photos added (and the parent regions they were made from, as reals);
a held-out photo's twin never enters its fold, and twins are never scored. The table shows each head
with and without them; the recipe (and ``--ship``) uses them only if that scores the higher LOGO mean.

A group that holds one class only (a set of camera photos) has no ROC-AUC of its own: its images are
ranked against the out-of-fold images of the other class from every other group. Peers (``sahu65``,
``prnu``, Tiny-LaDeDa, scored by ``train.peers_wild`` on a stratified subsample) are read on the same
images, beside our scores on those images.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from detector.engine import sigmoid
from detector.int8 import PRECISIONS
from detector.metrics import compact_curves, compute_metrics
from train import train_wild
from train.calibration import fit_temperature
from train.results import save_result
from train.tae_twins import complete, in_training, read_twins, twin_items
from train.wild_data import CACHE, WildItem, load_features, read_manifest

Extras = tuple[list[WildItem], np.ndarray, np.ndarray]  # derived training images (twins), their embed and cls

CV_DIR = CACHE / "cv"
PEER_SCORES = CACHE / "peer_scores"
MIN_REAL_PER_GROUP = 0.90  # the shipped threshold keeps at least this share of every group's real photos real
HEADS = [  # CLIP heads compared by cross-validation (a linear probe on the embedding alone, UnivFD's, scored
    # LOGO mean 0.724 against 0.770 and 0.777 for these two on the first 3,182 images: dropped to save time)
    {"kind": "linear", "layers": [6, 9, 12], "weight_decay": 1e-2},
    {"kind": "mlp", "layers": [6, 9, 12], "weight_decay": 1e-1},
]


def groups_of(items: list[WildItem]) -> list[str]:
    return sorted({it.group for it in items})


def sample_weights(items: list[WildItem]) -> np.ndarray:
    """Balance without discarding: an image weighs 1/sqrt(images of its (source, generator, class)), so a
    scraper with 3,000 images counts more than one with 30 but not 100 times more; then each class sums to
    half the total."""
    cell = Counter((it.source, it.generator, it.label) for it in items)
    w = np.array([1.0 / np.sqrt(cell[(it.source, it.generator, it.label)]) for it in items])
    y = np.array([it.label for it in items])
    for c in (0, 1):
        if (y == c).any():
            w[y == c] *= 0.5 * len(items) / w[y == c].sum()
    return w


def group_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray, group: str) -> float:
    """ROC-AUC of a held-out group: within the group when it holds both classes (at least 20 of each),
    else its images against every other group's images of the other class."""
    inside = g == group
    yi = y[inside]
    if min((yi == 0).sum(), (yi == 1).sum()) >= 20:
        return float(roc_auc_score(yi, s[inside]))
    other = (~inside) & (y != (yi[0] if len(yi) else 0))
    keep = inside | other
    return float(roc_auc_score(y[keep], s[keep]))


def per_group(y: np.ndarray, s: np.ndarray, g: np.ndarray, threshold: float | None = None) -> dict:
    """Per-group ROC-AUC and, at ``threshold``, the share of real photos called real and fakes caught."""
    out = {}
    for grp in sorted(set(g)):
        m = g == grp
        row = {"n_real": int((y[m] == 0).sum()), "n_fake": int((y[m] == 1).sum()), "auc": round(group_auc(y, s, g, grp), 4)}
        if threshold is not None:
            if row["n_real"]:
                row["real_called_real"] = round(float((s[m & (y == 0)] < threshold).mean()), 4)
            if row["n_fake"]:
                row["fakes_caught"] = round(float((s[m & (y == 1)] >= threshold).mean()), 4)
        out[grp] = row
    return out


def summary(rows: dict) -> dict:
    aucs = [r["auc"] for r in rows.values()]
    worst = min(rows, key=lambda k: rows[k]["auc"])
    return {"mean_auc": round(float(np.mean(aucs)), 4), "worst_auc": rows[worst]["auc"], "worst_group": worst}


def holding_threshold(y: np.ndarray, p: np.ndarray, g: np.ndarray, min_real: float = MIN_REAL_PER_GROUP) -> float:
    """The lowest threshold at which every group's real photos are at least ``min_real`` called real
    (ties at the threshold count as fake): so the threshold holds in the worst group, not just pooled."""
    t = 0.0
    for grp in set(g[y == 0]):
        r = np.sort(p[(g == grp) & (y == 0)])
        k = int(np.ceil(min_real * len(r))) - 1  # the k-th lowest real score must stay below t
        t = max(t, float(np.nextafter(r[k], 1.0)))
    return min(t, 1.0)


def fit_head(cfg: dict, e: np.ndarray, cls: np.ndarray, y: np.ndarray, w: np.ndarray, epochs: int = 30, seed: int = 0):
    """A CLIP head config of HEADS (its weight decay inside) with sample-weighted BCE: train_wild's trainer."""
    return train_wild.fit_head(cfg, cfg["weight_decay"], e, cls, y, epochs, seed, weights=w)


def with_extras(items: list[WildItem], e, cls, mask: np.ndarray, extras: Extras | None,
                weights: np.ndarray | None = None):
    """Training arrays (embed, cls, labels, weights normalised to mean 1) of ``items[mask]`` plus the extras
    derived from those items alone (in_training: never a held-out image's twin). ``weights``: sample_weights
    of items + extras computed over all of them, to slice (clip_oof's way); by default they are computed
    over the chosen images."""
    xs, xe, xcls = extras if extras is not None else ([], e[:0], cls[:0])
    keep = in_training(xs, {it.sha256 for it, k in zip(items, mask) if k})
    chosen = [it for it, k in zip(items, mask) if k] + [x for x, k in zip(xs, keep) if k]
    if weights is None:
        w = sample_weights(chosen)
    else:
        w = np.concatenate([weights[:len(items)][mask], weights[len(items):][keep]])
    return (np.concatenate([e[mask], xe[keep]]), np.concatenate([cls[mask], xcls[keep]]),
            np.array([it.label for it in chosen]), w / w.mean())


def clip_oof(items: list[WildItem], cfg: dict, e, cls, extras: Extras | None = None) -> np.ndarray:
    """Out-of-fold logits of one CLIP head config, cached per config (and set of extras) under CV_DIR."""
    name = f"clip_{cfg['kind']}_{'-'.join(map(str, cfg['layers'])) or 'embed'}_{cfg['weight_decay']:g}"
    name += "_twins" if extras is not None else ""
    path = CV_DIR / f"{name}.npz"
    shas = np.array([it.sha256 for it in items])
    xshas = np.array([x.sha256 for x in extras[0]]) if extras is not None else np.array([], str)
    if path.exists():
        with np.load(path) as z:
            if np.array_equal(z["sha256"], shas) and np.array_equal(z.get("extra_sha256", np.array([], str)), xshas):
                return z["logit"]
    y, g = np.array([it.label for it in items]), np.array([it.group for it in items])
    w = sample_weights(items + (extras[0] if extras is not None else []))  # over every image, sliced per fold
    out = np.zeros(len(items), np.float32)
    for grp in groups_of(items):
        tr, te = g != grp, g == grp
        if extras is None:
            head = fit_head(cfg, e[tr], cls[tr], y[tr], w[tr] / w[tr].mean())
        else:
            head = fit_head(cfg, *with_extras(items, e, cls, tr, extras, w))
        out[te] = train_wild.logits_of(head, e[te], cls[te])
        print(f"  {name}: held out {grp:18s} AUC {group_auc(y, np.where(te, out, 0), g, grp) if te.any() else float('nan'):.4f}")
    CV_DIR.mkdir(parents=True, exist_ok=True)
    if extras is None:
        np.savez(path, sha256=shas, logit=out)
    else:
        np.savez(path, sha256=shas, logit=out, extra_sha256=xshas)
    return out


def load_twins(items: list[WildItem], view: str) -> Extras | None:
    """The twins of ``items`` (train.tae_twins) with cached features, each with the parent region it was made
    from where it is of one: a parent's extras are kept only all together, so no twin is a lone close-up."""
    xs = twin_items(items, read_twins())
    xe, xcls, ok = load_features(xs, view)
    ok = complete(xs, ok)
    xs = [x for x, k in zip(xs, ok) if k]
    n_fake = sum(x.label for x in xs)
    print(f"twins: {n_fake} with {view} features, and {len(xs) - n_fake} parent regions they were made from")
    return (xs, xe[ok], xcls[ok]) if n_fake else None


def residual_oof(items: list[WildItem]) -> np.ndarray | None:
    """The residual network's out-of-fold logits (train.train_residual --cv), NaN where missing."""
    path = CV_DIR / "residual_oof.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        got = dict(zip(z["sha256"].tolist(), z["logit"].tolist()))
    return np.array([got.get(it.sha256, np.nan) for it in items], np.float32)


def fuse_oof(cols: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Fused out-of-fold P(fake): for each held-out group, a logistic regression on the signals' OOF logits
    of the other groups (sample-balanced), applied to the held-out group."""
    out = np.zeros(len(y))
    for grp in sorted(set(g)):
        tr = g != grp
        lr = LogisticRegression(class_weight="balanced").fit(cols[tr], y[tr])
        out[g == grp] = lr.predict_proba(cols[g == grp])[:, 1]
    return out


def read_scores(path: Path) -> dict[str, tuple[float, str]]:
    """A peer's CSV (train.peers_wild): sha256 -> (P(fake), NaN when refused; the error or reason)."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {r["sha256"]: (float(r["p_fake"]) if r["p_fake"] else np.nan, r["error"]) for r in csv.DictReader(f)}


def read_peers(items: list[WildItem]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Peer P(fake) per item from train.peers_wild's CSVs: NaN where the peer never saw the image, 0.5 (no
    answer, neutral in a ranking) where it refused it (prnu refuses images under 512 px); and the refusals."""
    peers, refused = {}, {}
    for path in sorted(PEER_SCORES.glob("*.csv")) if PEER_SCORES.is_dir() else []:
        got = read_scores(path)
        p = np.array([got[it.sha256][0] if it.sha256 in got else np.nan for it in items])
        seen = np.array([it.sha256 in got for it in items], bool)
        refused[path.stem] = int((seen & np.isnan(p)).sum())
        peers[path.stem] = np.where(seen & np.isnan(p), 0.5, p)
    return peers, refused


def report(name: str, y, s, g, threshold=None) -> dict:
    rows = per_group(y, s, g, threshold)
    out = {"signal": name, "n": len(y), "pooled_auc": round(float(roc_auc_score(y, s)), 4), **summary(rows), "groups": rows}
    if threshold is not None:
        out.update(threshold=round(float(threshold), 4),
                   real_called_real=round(float((s[y == 0] < threshold).mean()), 4),
                   fakes_caught=round(float((s[y == 1] >= threshold).mean()), 4))
    return out


def table(reports: list[dict]) -> str:
    """Markdown: one row per group, one column per signal (AUC)."""
    grps = sorted({k for r in reports for k in r["groups"]})
    lines = ["| held-out group | real | fake | " + " | ".join(r["signal"] for r in reports) + " |",
             "|---|---:|---:|" + "---:|" * len(reports)]
    for grp in grps:
        first = next(r["groups"][grp] for r in reports if grp in r["groups"])
        lines.append(f"| {grp} | {first['n_real']} | {first['n_fake']} | "
                     + " | ".join(f"{r['groups'][grp]['auc']:.3f}" if grp in r["groups"] else "" for r in reports) + " |")
    lines.append("| **mean (worst)** | | | " + " | ".join(f"**{r['mean_auc']:.3f}** ({r['worst_auc']:.3f})" for r in reports) + " |")
    return "\n".join(lines)


def uncertain_band(y: np.ndarray, p: np.ndarray, threshold: float, share: float = MIN_REAL_PER_GROUP) -> list[float]:
    """[low, high) of the uncertain verdict, from the pooled out-of-fold P(fake): from the score that ``share`` of
    all real photos stay under, up to the threshold (which holds in the worst group). Below it the evidence is
    "no sign of generation"; at the threshold and above, a fake call."""
    low = float(np.quantile(p[y == 0], share))
    return [round(min(low, threshold), 4), round(threshold, 4)]


def continuity(items: list[WildItem], cfg: dict, e, cls, temperature: float, threshold: float,
               extras: Extras | None = None) -> dict:
    """The recipe's CLIP head trained on the fixed training split and read on the fixed test split (sources
    disjoint), at the chosen temperature and threshold: the figure earlier models were reported with."""
    split = np.array([it.split for it in items])
    y = np.array([it.label for it in items])
    tr, te = split == "train", split == "test"
    head = fit_head(cfg, *with_extras(items, e, cls, tr, extras))
    p = sigmoid(train_wild.logits_of(head, e[te], cls[te]), temperature)
    return {"n": int(te.sum()), "roc_auc": round(float(roc_auc_score(y[te], p)), 4),
            "real_called_real": round(float((p[y[te] == 0] < threshold).mean()), 4),
            "fakes_caught": round(float((p[y[te] == 1] >= threshold).mean()), 4)}


def ship(out: str, items: list[WildItem], cfg: dict, e, cls, temperature: float, threshold: float, band: list[float],
         fusion: dict | None, metrics: dict, seconds: float, extras: Extras | None = None, *,
         backbone_precision: str) -> None:
    """The chosen head fitted on every image with features (and the twins, when the recipe has them), written
    as the wild checkpoint (head only; the backbone comes from its own checkpoint, the residual network from its own)."""
    from detector.checkpoint import read_record, save_checkpoint
    from detector.record import Record
    from detector.models import CLIP_MEAN, CLIP_STD, ClipViTB16

    t0 = time.perf_counter()
    y = np.array([it.label for it in items])
    head = fit_head(cfg, *with_extras(items, e, cls, np.ones(len(items), bool), extras))
    brec = read_record("checkpoints/clip_vit_b16")
    counts = {"real": int((y == 0).sum()), "fake": int(y.sum()), "sources": sorted({it.source for it in items}),
              "groups": dict(Counter(it.group for it in items))}
    record = Record(
        "wild", {"head": {"kind": cfg["kind"], "layers": cfg["layers"]}}, input_size=224,
        mean=list(CLIP_MEAN), std=list(CLIP_STD), name=Path(out).name, track="wild",
        description="CLIP ViT-B/16 (OpenAI, frozen) + a head trained on real-world photographs and AI images"
                    + (", fused with a residual network on native-resolution crops" if fusion else ""),
        backbone={"name": "clip_vit_b16", "weights_sha256": brec.weights_sha256}, backbone_precision=backbone_precision,
        threshold=round(threshold, 4), temperature=round(temperature, 4), uncertain_band=band,
        threshold_rule=f"lowest threshold keeping >= {MIN_REAL_PER_GROUP:.0%} of every group's real photos real, "
                       "on pooled leave-one-group-out predictions",
        fusion=fusion, train_args={"head": cfg, "sample_weights": "1/sqrt(images per source, generator, class)",
                                   "view": "clean", "trained_on": "every image with cached features, all sources",
                                   **({"twins": twin_summary(extras)} if extras is not None else {})},
        data_fingerprint=train_wild.fingerprint(), data={"train": counts},
        parameters=sum(p.numel() for p in head.parameters()) + sum(p.numel() for p in ClipViTB16().parameters()),
        train_seconds=round(seconds + time.perf_counter() - t0, 1), metrics=metrics)
    state = {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    save_checkpoint(out, None, record, state=state, storage="float32 (head only; backbone from its own checkpoint)")
    print(f"wrote {out}.safetensors / .json")


def twin_summary(extras: Extras) -> dict:
    xs = extras[0]
    return {"fakes": sum(x.label for x in xs), "parent_regions": sum(1 - x.label for x in xs),
            "autoencoders": dict(Counter(x.generator for x in xs if x.label)),
            "made_by": "train.tae_twins (tiny autoencoders of madebyollin/taesd, MIT)"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--view", default="clean")
    p.add_argument("--ship", metavar="OUT", help="also fit the chosen recipe on every image and write it (checkpoints/wild)")
    p.add_argument("--residual", default="residual", help="the residual network's checkpoint a fused recipe names")
    p.add_argument("--twins", action="store_true",
                   help="also train each head with the autoencoder twins of its training photos (train.tae_twins); "
                        "adopted, and shipped, only if that scores the higher LOGO mean")
    p.add_argument("--backbone-precision", default="int8", choices=PRECISIONS,
                   help="how the shipped record runs CLIP by default: int8 keeps the verdicts (studies.int8_fidelity: "
                        "99.3%% of validation verdicts the same, 2026-12-02) and needs onnxruntime (requirements.txt), "
                        "else it falls back to float32 with a warning")
    args = p.parse_args(argv)
    started = time.perf_counter()
    every = read_manifest()
    e, cls, ok = load_features(every, args.view)
    items = [it for it, k in zip(every, ok) if k]
    e, cls = e[ok], cls[ok]
    y, g = np.array([it.label for it in items]), np.array([it.group for it in items])
    print(f"{len(items)} of {len(every)} images have cached CLIP features ({int(y.sum())} fake); "
          f"groups: {dict(Counter(g.tolist()))}")

    twins = load_twins(items, args.view) if args.twins else None
    reports, signals = [], {}
    for cfg in HEADS:
        for extras in [None] + ([twins] if twins is not None else []):
            logit = clip_oof(items, cfg, e, cls, extras)
            r = report(f"CLIP {cfg['kind']} {cfg['layers'] or 'embed'}" + (" + twins" if extras is not None else ""),
                       y, logit, g)
            reports.append(r)
            signals[r["signal"]] = (cfg, logit, extras)
            print(f"{r['signal']}: LOGO mean AUC {r['mean_auc']:.4f}, worst {r['worst_auc']:.4f} ({r['worst_group']})")
    n_clip = len(reports)
    if twins is not None:
        for a, b in zip(reports[0:n_clip:2], reports[1:n_clip:2]):
            print(f"twins: {a['signal']} LOGO mean {a['mean_auc']:.4f} -> {b['mean_auc']:.4f}, "
                  f"worst {a['worst_auc']:.4f} -> {b['worst_auc']:.4f}")
    best_clip = max(reports, key=lambda r: r["mean_auc"])["signal"]
    cfg, clip_logit, extras = signals[best_clip]
    temperature = fit_temperature(clip_logit, y)
    chosen = {"signal": best_clip, "p": sigmoid(clip_logit, temperature), "mask": np.ones(len(items), bool), "fusion": None}

    res = residual_oof(items)
    have = ~np.isnan(res) if res is not None else np.zeros(len(items), bool)
    if have.any():
        yy, gg = y[have], g[have]
        rr = report("residual", yy, res[have], gg)
        reports.append(rr)
        cols = np.stack([clip_logit[have], res[have]], 1)
        fused = fuse_oof(cols, yy, gg)
        rf = report(f"fused ({best_clip} + residual)", yy, fused, gg)
        reports.append(rf)
        print(f"residual: LOGO mean AUC {rr['mean_auc']:.4f}; fused: {rf['mean_auc']:.4f}, worst {rf['worst_auc']:.4f}")
        if rf["mean_auc"] > max(r["mean_auc"] for r in reports[:n_clip]):
            lr = LogisticRegression(class_weight="balanced").fit(cols, yy)  # the shipped weights: every fold's OOF
            chosen = {"signal": rf["signal"], "p": fused, "mask": have,
                      "fusion": {"residual": args.residual, "weights": [round(float(v), 6) for v in lr.coef_[0]],
                                 "bias": round(float(lr.intercept_[0]), 6),
                                 "rule": "P(fake) = sigmoid(w0 * head logit + w1 * residual logit + bias), "
                                         "fitted on pooled leave-one-group-out logits"}}

    # The threshold from the pooled out-of-fold P(fake) of the chosen recipe, held in every group.
    m = chosen["mask"]
    yc, gc, pf = y[m], g[m], chosen["p"]
    t = holding_threshold(yc, pf, gc)
    final = report(chosen["signal"], yc, pf, gc, t)
    print(f"chosen {chosen['signal']}: threshold {t:.4f}; pooled OOF real called real {final['real_called_real']:.3f}, "
          f"fakes caught {final['fakes_caught']:.3f}")
    # The head alone is read at its own threshold: the chosen one, or (for a fused recipe, whose threshold is on
    # the fused scale) the one the same rule gives on the head's pooled out-of-fold P(fake).
    t_head = t if chosen["fusion"] is None else holding_threshold(y, sigmoid(clip_logit, temperature), g)
    cont = continuity(items, cfg, e, cls, temperature, t_head, extras)
    print(f"continuity (head alone, fixed train -> test split): {cont}")

    peers, refused = read_peers([it for it, k in zip(items, m) if k])
    if peers:
        sub = np.all([~np.isnan(v) for v in peers.values()], 0)
        same = [report(f"ours ({chosen['signal']})", yc[sub], pf[sub], gc[sub])]
        same += [report(k, yc[sub], v[sub], gc[sub]) for k, v in peers.items()]
        peer_table = table(same)
        print("\nOn the peers' subsample:\n" + peer_table)
    else:
        same, peer_table = [], ""
    print("\n" + table(reports))
    band = uncertain_band(yc, pf, t)
    print(f"uncertain band {band}: {np.mean((pf >= band[0]) & (pf < band[1])):.1%} of the images")
    oof = {**compute_metrics(yc, pf, t), "curves": compact_curves(yc, pf),
           "kind": "pooled out-of-fold predictions, leave-one-group-out over the groups below"}
    result = {"n_images": len(every), "n_with_features": int(ok.sum()), "heads": HEADS, "signals": reports,
              "chosen": final, "oof": oof, "band": band, "continuity": cont, "peers": same,
              "peer_refusals": refused if peers else {},
              "table": table(reports), "peer_table": peer_table, "min_real_per_group": MIN_REAL_PER_GROUP}
    if twins is not None:
        result["twins"] = {**twin_summary(twins), "adopted": extras is not None}
    save_result("wild_cv", result, started)
    if args.ship:
        ship(args.ship, [it for it, k in zip(items, m) if k], cfg, e[m], cls[m], temperature, t, band, chosen["fusion"],
             {"test": oof, "cv": final, "continuity_test_split": cont}, time.perf_counter() - started, extras,
             backbone_precision=args.backbone_precision)
    return result


if __name__ == "__main__":
    main()
