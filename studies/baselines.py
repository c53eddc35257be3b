"""Classical baselines (scikit-learn) on flattened pixels, and a PCA sweep, as in the CIFAKE studies.

    python -m studies.baselines --data cifake_train.zip --test cifake_test.zip [--train-n 20000] [--svm-n 5000]

Every method sees the 32x32x3 images as 3,072 pixel values on the 0-1 scale. Validation is the same
5% carved from the training split as the CNNs' (split seed 0); the test figures are on the official
split and on the deduplicated one. Nothing is tuned on the test split: each method runs with one
fixed, conventional setting.

scikit-learn's classical methods cannot train on 95,000 images x 3,072 features in reasonable time on
2 CPU cores, so each trains on a seeded, class-balanced subsample of the training part: ``--train-n``
images (20,000 by default), and ``--svm-n`` (5,000) for the RBF SVM, whose training cost grows with
the square of the sample. The PCA sweep fits PCA once (1,000 components, randomized SVD) on the same
subsample and trains a random forest on the first 10, 50, 100, 500 and 1,000 components and on the raw
pixels; the published PCA table does not say which classifier it used. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from tqdm import tqdm

from detector.data import load_image_set
from detector.metrics import compute_metrics
from train.results import save_result
from train.splits import balanced_sample, drop_duplicates, read_duplicate_hashes, train_val_split

# Published test accuracies (CIFAKE studies) and the published PCA table.
PUBLISHED = {"logistic_regression": 0.677, "naive_bayes": 0.593, "decision_tree": 0.698, "random_forest": 0.831,
             "svm": 0.811, "mlp": 0.750, "knn": None}
PUBLISHED_PCA = {"10": 0.714, "50": 0.795, "100": 0.812, "500": 0.811, "1000": 0.813, "none": 0.814}
PCA_COMPONENTS = [10, 50, 100, 500, 1000]
METRICS = ["accuracy", "precision", "recall", "f1", "specificity", "fpr", "roc_auc"]


def classifiers(seed: int) -> dict:
    """One fixed, conventional setting per method (no search; nothing is tuned on the test split)."""
    return {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500)),
        "naive_bayes": GaussianNB(),
        "decision_tree": DecisionTreeClassifier(min_samples_leaf=5, random_state=seed),
        "random_forest": RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=-1, random_state=seed),
        "svm": make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale")),
        "mlp": make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True,
                                                             max_iter=60, random_state=seed)),
        "knn": KNeighborsClassifier(n_neighbors=7, n_jobs=-1),
    }


def p_fake(clf, x: np.ndarray) -> np.ndarray:
    """P(fake) where the method has probabilities; an SVM's decision value through a logistic otherwise."""
    if hasattr(clf, "predict_proba"):  # False for an SVC without probability=True, in a pipeline or not
        return clf.predict_proba(x)[:, 1]
    return 1.0 / (1.0 + np.exp(-clf.decision_function(x)))


def flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def evaluate(clf, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    out = {}
    for name, (x, y) in splits.items():
        m = compute_metrics(y, p_fake(clf, x))
        out[name] = {k: m[k] for k in METRICS}
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Classical scikit-learn baselines and a PCA sweep")
    p.add_argument("--data", nargs="+", required=True, help="training split (zip or folder)")
    p.add_argument("--test", nargs="+", required=True, help="test split (zip or folder)")
    p.add_argument("--duplicates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                               "cifake_duplicates.tsv"),
                   help="cifake_duplicates.tsv; without it, duplicates are found by hashing the training split")
    p.add_argument("--train-n", type=int, default=20000, help="class-balanced training subsample (0 = all)")
    p.add_argument("--svm-n", type=int, default=5000, help="training subsample for the RBF SVM")
    p.add_argument("--methods", nargs="*", default=None, help="default: all")
    p.add_argument("--no-pca", action="store_true", help="skip the PCA sweep")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    data = load_image_set(args.data)
    tr_idx, va_idx = train_val_split(data, args.val_fraction, args.seed)
    test = load_image_set(args.test)
    dups = read_duplicate_hashes(args.duplicates) if Path(args.duplicates).exists() else data
    dedup, n_dup = drop_duplicates(test, dups)
    splits = {"validation": (flat(data.images[va_idx]), data.labels[va_idx]),
              "test": (flat(test.images), test.labels), "test_dedup": (flat(dedup.images), dedup.labels)}
    sub = tr_idx[balanced_sample(data.labels[tr_idx], args.train_n, args.seed)]
    x_tr, y_tr = flat(data.images[sub]), data.labels[sub]
    result = {"train_n": len(sub), "svm_n": int(min(args.svm_n, len(sub))), "validation_n": len(va_idx),
              "test_n": len(test), "test_dedup_n": len(dedup), "duplicates_dropped": n_dup,
              "published": PUBLISHED, "published_pca": PUBLISHED_PCA, "methods": {}, "pca": {}}
    todo = {k: v for k, v in classifiers(args.seed).items() if not args.methods or k in args.methods}
    for name, clf in tqdm(todo.items(), desc="methods"):
        t = time.perf_counter()
        n = result["svm_n"] if name == "svm" else len(sub)
        clf.fit(x_tr[:n], y_tr[:n])
        fit_s = time.perf_counter() - t
        r = evaluate(clf, splits)
        r.update(train_n=int(n), fit_seconds=round(fit_s, 1), seconds=round(time.perf_counter() - t, 1))
        result["methods"][name] = r
        tqdm.write(f"{name}: val {r['validation']['accuracy']:.4f} test {r['test']['accuracy']:.4f} "
                   f"auc {r['test']['roc_auc']:.4f} ({r['seconds']:.0f}s)")
    if not args.no_pca:
        t = time.perf_counter()
        pca = PCA(n_components=max(PCA_COMPONENTS), svd_solver="randomized", random_state=args.seed).fit(x_tr)
        result["pca_fit_seconds"] = round(time.perf_counter() - t, 1)
        result["pca_explained_variance"] = {str(k): float(pca.explained_variance_ratio_[:k].sum()) for k in PCA_COMPONENTS}
        z_tr = pca.transform(x_tr)
        z = {s: (pca.transform(x), y) for s, (x, y) in splits.items()}
        for k in tqdm(PCA_COMPONENTS, desc="PCA sweep"):
            clf = classifiers(args.seed)["random_forest"].fit(z_tr[:, :k], y_tr)
            result["pca"][str(k)] = evaluate(clf, {s: (x[:, :k], y) for s, (x, y) in z.items()})
            tqdm.write(f"PCA {k}: test {result['pca'][str(k)]['test']['accuracy']:.4f}")
        if "random_forest" in result["methods"]:
            result["pca"]["none"] = {s: result["methods"]["random_forest"][s] for s in splits}
    path = save_result("baselines", result, t0)
    print(json.dumps({"result": str(path)}))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
