"""The realism study: training recipes compared at the same wall-clock budget on one machine.

Every variant trains from configs/train/cpu_small.yaml (plus its overrides) on the same data
(the bundled training scenes, 24 random scenes, a 600-frame surrogate set), with slim snapshots
every --snapshot minutes; ``eval`` scores every snapshot on the held-out scenes
(benchmarks/temporal_table.py's measures) and plots metric against minutes.

The detail study (``detail``) fine-tunes the shipped model from configs/train/cpu_detail.yaml with
each detail design of DETAIL_VARIANTS at the same budget; ``eval --start CKPT`` scores the
checkpoint they start from as minute 0 of every curve.

Usage:
  python benchmarks/realism_study.py train --out DIR [--minutes 45] [--variants a,b] [--parallel 2]
  python benchmarks/realism_study.py detail --out DIR [--minutes 25] [--parallel 2]
  python benchmarks/realism_study.py eval --out DIR --start checkpoints/cpu_small_v2.pt --plot docs/detail_study.png
  python benchmarks/realism_study.py final --out DIR --minutes 70 --parallel 3   # shipped recipe + baselines
  python benchmarks/realism_study.py eval --out DIR [--frames 48] [--size 256] [--variants a,b] [--results F]
Runs in parallel use one thread each (torch.set_num_threads(1)), so pairs share the machine
evenly; compare variants only within one invocation (same budget, same contention).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# name -> overrides of configs/train/cpu_small.yaml
VARIANTS = {
    "munit": [],
    "oneway": ["model.type=oneway"],
    "oneway_albedo": ["model.type=oneway", "texture.albedo=true", "model.residual=true", "texture.channels=4",
                      "texture.resolution=192", "texture.levels=4"],
    "oneway_albedo_camera": ["model.type=oneway", "texture.albedo=true", "model.residual=true", "model.camera=true",
                             "texture.channels=4", "texture.resolution=192", "texture.levels=4"],
}
# name -> overrides of configs/train/cpu_detail.yaml (all start from the same checkpoint)
DETAIL_VARIANTS = {
    "control": ["loss.detail=0"],                                          # the same fine-tuning, no detail design
    "swd": [],                                                             # class-by-class sliced Wasserstein
    "hfd": ["loss.detail=0", "model.dis_detail=true"],                     # high-pass patch discriminator
    "hfd_class": ["loss.detail=0", "model.dis_detail=true", "model.dis_classes=8"],   # ... class-conditional
    # the detail layer (texture.detail): real class detail drawn onto the surface, multiplying the
    # output; the shipped 96^2 feature textures kept as they are
    "layer": ["texture.detail=true", "texture.resolution=96", "texture.levels=3", "texture.texel_size=0"],
    "layer_control": ["texture.detail=true", "texture.resolution=96", "texture.levels=3", "texture.texel_size=0",
                      "loss.detail=0"],
}
COMMON = ["optim.lr_step=100000000", "steps=100000000", "log.checkpoint_every=500", "log.images_every=500"]


def shared_data(out: Path) -> tuple[list[str], list[str]]:
    """The training scenes and surrogate frames every variant uses (made once, reused)."""
    from vidsim2real.domains.surrogate_set import write_surrogate_set
    from vidsim2real.scene.random_scene import write_random_scenes
    scenes = out / "scenes"
    paths = [str(ROOT / "scenes/liver_overview.yaml"), str(ROOT / "scenes/instrument_pass.yaml")]
    for s in range(24):
        p = scenes / f"random_{s:05d}.yaml"
        if not p.exists():
            write_random_scenes(s, scenes, 1, frames=60)
        paths.append(str(p))
    real = []
    for name, seed, first in (("real_a", 0, 100000), ("real_b", 1, 100030)):
        d = out / name
        if len(list((d / "frames").glob("*.png"))) < 300:
            write_surrogate_set(d, seed=seed, views=10, random_scenes=30, scene_seed=first, frames=30,
                                size=(256, 256), scope_mask=False)
        real.append(str(d / "frames"))
    return paths, real


def _study(args, config: str, variants: dict) -> None:
    """Every variant (overrides of ``config``) for --minutes, --parallel at a time."""
    out = Path(args.out)
    names = args.variants.split(",") if args.variants else list(variants)
    jobs = {name: (ROOT / config, out / "runs" / name,
                   [f"log.snapshot_minutes={args.snapshot}", *COMMON, *variants[name]]) for name in names}
    run_all(out, jobs, args.minutes, args.parallel)


def train(args) -> None:
    """The realism study: the recipes of VARIANTS (overrides of cpu_small.yaml)."""
    _study(args, "configs/train/cpu_small.yaml", VARIANTS)


def detail(args) -> None:
    """The detail study: every design of DETAIL_VARIANTS, fine-tuned from cpu_detail.yaml's start."""
    _study(args, "configs/train/cpu_detail.yaml", DETAIL_VARIANTS)


def final(args) -> None:
    """The final runs: the shipped recipe and both baselines (their own configs), same data,
    same budget, all three at once (--parallel 3) so they share the machine evenly."""
    out = Path(args.out)
    jobs = {name: (ROOT / f"configs/train/{name}.yaml", out / "final" / name, [])
            for name in ("cpu_small", "baseline_cpu_small", "cyclegan_cpu_small")}
    run_all(out, jobs, args.minutes, args.parallel)


def run_all(out: Path, jobs: dict, minutes: float, parallel: int) -> None:
    """Train ``jobs`` {name: (config, run_dir, overrides)} on the shared data, ``parallel`` at a
    time, one thread each, for ``minutes`` each."""
    if minutes <= 0:
        raise SystemExit("--minutes must be > 0")
    scenes, real = shared_data(out)
    data = [f"data.scenes=[{','.join(scenes)}]", "data.random_scenes.count=0", f"data.real.paths=[{','.join(real)}]",
            "data.real.surrogate_scenes=0", "data.check_paths=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    queue = list(jobs)
    running: dict[str, subprocess.Popen] = {}
    while queue or running:
        while queue and len(running) < parallel:
            name = queue.pop(0)
            config, run, overrides = jobs[name]
            if (run / "model.pt").exists():
                print(f"{name}: already trained")
                continue
            cmd = [sys.executable, "-m", "vidsim2real", "train", str(config), f"run_dir={run}",
                   f"max_minutes={minutes}", "device=cpu", *data, *overrides, "--no-progress"]
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "train.log", "w")
            running[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"{name}: started ({' '.join(overrides) or Path(config).name})", flush=True)
        time.sleep(10)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{name}: finished with exit code {proc.returncode}", flush=True)
                del running[name]


def evaluate(args) -> None:
    """Score every snapshot of every variant on the held-out scenes; table + plot."""
    from temporal_table import HeldOut, score_model
    from vidsim2real.io.checkpoint import load_checkpoint
    from vidsim2real.io.atomic import atomic_write_text
    out = Path(args.out)
    held = HeldOut(out / "eval", frames=args.frames, size=args.size)
    store = out / (args.results or "study.json")
    results = json.loads(store.read_text()) if store.exists() else {}
    runs = sorted(p for p in (out / "runs").iterdir() if (p / "snapshots").exists()
                  and (not args.variants or p.name in args.variants.split(",")))
    snaps = {run: sorted((run / "snapshots").glob("model_*min.pt")) for run in runs}
    # the last snapshot of every variant first (the comparison), then the earlier ones (the curves)
    finals = [s[-1] for s in snaps.values() if s]
    order = finals + ([] if args.final_only else [p for s in snaps.values() for p in s[:-1]])
    if args.start and "start" not in results:       # minute 0 of every curve
        results["start"] = {"variant": "start", "minutes": 0.0, "step": 0,
                            **score_model(held, args.start, seeds=args.c2st_seeds)}
        atomic_write_text(store, json.dumps(results, indent=1))
    for snap in order:
        key = f"{snap.parent.parent.name}/{snap.name}"
        if key in results or key in {k for f in out.glob("study*.json") for k in json.loads(f.read_text())}:
            continue                                                 # done here or by a parallel eval
        minutes = float(snap.stem.split("_")[1][:-3])
        results[key] = {"variant": snap.parent.parent.name, "minutes": minutes,
                        "step": int(load_checkpoint(snap)["step"]),
                        **score_model(held, snap, seeds=args.c2st_seeds if snap in finals else 0)}
        atomic_write_text(store, json.dumps(results, indent=1))
        print(key, {k: round(v, 4) for k, v in results[key].items() if isinstance(v, float)}, flush=True)
    merged = {k: v for f in sorted(out.glob("study*.json")) for k, v in json.loads(f.read_text()).items()}
    if "start" in merged:      # every curve starts at the common checkpoint
        merged.update({f"{v}/start": {**merged["start"], "variant": v}
                       for v in {r["variant"] for r in merged.values()} - {"start"}})
        del merged["start"]
    plot(merged, Path(args.plot))
    print(summary(merged))


def summary(results: dict) -> str:
    """Markdown table of every variant's last snapshot."""
    from common import table
    last = {}
    for r in results.values():
        if r["variant"] not in last or r["minutes"] > last[r["variant"]]["minutes"]:
            last[r["variant"]] = r
    keys = ["step", "c2st_accuracy", "ms_ssim_lum_vs_sim", "texel_std", "warp_error", "class_delta_e",
            "class_texture_log_ratio"]
    rows = [[f"{v} ({r['minutes']:.0f} min)"] + [f"{r.get(k, float('nan')):.4g}" for k in keys]
            for v, r in sorted(last.items())]
    return table(["variant"] + keys, rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [("c2st_accuracy", "classifier accuracy vs real (0.5 = indistinguishable) ↓"),
            ("class_delta_e", "per-class colour distance ΔE ↓"),
            ("class_texture_log_ratio", "texture log ratio (detail vs real) ↓"), ("texel_std", "texel std ↓"), ("ms_ssim_lum_vs_sim", "MS-SSIM (lum) vs sim ↑"),
            ("warp_error", "warp error ↓")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.4), dpi=110)
    variants = sorted({r["variant"] for r in results.values()})
    for ax, (k, title) in zip(axes, keys):
        for v in variants:
            pts = sorted((r["minutes"], r[k]) for r in results.values() if r["variant"] == v and k in r)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=v)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "eval", "final", "detail"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--snapshot", type=float, default=15.0)
    ap.add_argument("--variants", default=None)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--final-only", action="store_true", help="eval: only each variant's last snapshot")
    ap.add_argument("--results", default=None,
                    help="eval: results file in --out (default study.json); parallel evals use one each, "
                         "the plot merges every study*.json")
    ap.add_argument("--start", default=None, help="eval: the checkpoint every variant started from (minute 0)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "realism_study.png"), help="eval: the plot's path")
    ap.add_argument("--c2st-seeds", type=int, default=3,
                    help="eval: C2ST classifier seeds for each variant's last snapshot (earlier ones: none)")
    args = ap.parse_args()
    {"train": train, "final": final, "eval": evaluate, "detail": detail}[args.what](args)


if __name__ == "__main__":
    main()
