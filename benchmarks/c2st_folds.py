"""The held-out table's two-sample test fold by fold: each run's accuracy beside its ROC AUC.

Reads the ``--json`` files of ``temporal_table.py`` (one panel each, e.g. four and eight
reference patients) and draws, per column and fold, the runs' accuracies and AUCs (dots: the
classifier seeds; bars: their mean). Where the two part — accuracy near 0.5, AUC near 1 — the
classifier ranked the two sets apart but its threshold, learnt on other patients, called the
held-out block's frames all one class (``c2st_one_sided_runs``; docs/metrics.md). A column
pooled over several draws of its clips (``--style-offset 0 4``) has its runs as draws x seeds,
and each draw's fold means (over its seeds) drawn as open markers, one shape per draw.

    python benchmarks/c2st_folds.py docs/results/heldout_auc_p4.json docs/results/heldout_auc_p8.json \
        --png docs/c2st_folds.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


DRAW_MARKERS = ("^", "s", "D", "v")


def fold_runs(result: dict) -> tuple[np.ndarray, np.ndarray]:
    """A column's per-run accuracies and AUCs, each [seeds, folds]; a clear error for results
    scored before the test kept its runs' AUC."""
    acc, auc = (np.asarray(result.get(k, []), dtype=float) for k in ("c2st_run_accuracy", "c2st_run_auc"))
    if acc.size == 0 or acc.shape != auc.shape:
        raise ValueError("no per-run accuracy and AUC of the same shape (scored before the test kept its "
                         "runs' AUC: run temporal_table.py again)")
    return acc, auc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", help="temporal_table.py --json files")
    ap.add_argument("--png", required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = []
    for path in args.json:
        try:
            doc = json.loads(Path(path).read_text())
            cols = {name: fold_runs(r) for name, r in doc["results"].items() if "c2st_run_accuracy" in r}
        except (OSError, ValueError, KeyError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        if not cols:
            print(f"{path}: results: no column has a two-sample test", file=sys.stderr)
            return 2
        docs.append((doc, cols))
    fig, axes = plt.subplots(1, len(docs), figsize=(6.5 * len(docs), 4.8), squeeze=False)
    for ax, (doc, cols) in zip(axes[0], docs):
        n, w = len(cols), 0.8 / len(cols)
        folds = np.arange(next(iter(cols.values()))[0].shape[1])
        for j, (name, (acc, auc)) in enumerate(cols.items()):
            x = folds - 0.4 + w * (j + 0.5)
            colour = f"C{j}"
            ax.bar(x, auc.mean(0), w * 0.9, color=colour, alpha=0.35,
                   label=f"{name}: AUC {auc.mean():.3f}, accuracy {acc.mean():.3f}")
            for s in range(acc.shape[0]):
                ax.plot(x, auc[s], "o", color=colour, ms=4)
                ax.plot(x, acc[s], "x", color="k", ms=5)
            # a column pooled over draws of its clips (temporal_table.py --style-offset 0 4): each
            # draw's fold means over the seeds, so a fold that one draw alone decides shows
            for k, draw in enumerate(doc["results"][name].get("draws", [])):
                d_auc = fold_runs(draw)[1].mean(0)
                ax.plot(x, d_auc, DRAW_MARKERS[k % len(DRAW_MARKERS)], color=colour, mfc="none", ms=9, mew=1.4,
                        label=f"{name}, draw {k + 1}: AUC {d_auc.mean():.3f}")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(folds)
        ax.set_xticklabels([f"fold {i + 1}" for i in folds])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("per run: AUC (bars: mean, dots) / accuracy (x)")
        ax.set_title(f"{doc.get('patients', '?')} reference patients, {n} columns")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.tight_layout()
    out = Path(args.png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
