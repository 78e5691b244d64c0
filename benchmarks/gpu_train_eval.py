"""Train a full-size model for N minutes on one GPU, then evaluate it on the held-out scenes.

What benchmarks/gpu_train_eval.sh runs. Phases (each timed, all within MINUTES + 2):
1. data: 24 training random scenes and 24 real-domain random scenes are generated, and the
   real-domain (surrogate) set rendered (10 views each), in parallel CPU processes; plus the
   bundled real-domain set;
2. training: configs/train/default.yaml (bf16 on CUDA) on the bundled training scenes and the 24
   random ones, for exactly MINUTES (``max_minutes``), batch 8;
3. evaluation on the held-out scenes (liver_edge_breathing, random 50000 and 50001; 48 frames at
   256²): the measures of benchmarks/temporal_table.py for the trained model, the sim render
   (ceiling) and the surrogate of other patients (floor), the scenes in parallel processes;
   writes table.json, table.md and contact_sheet.png (sim | ours | surrogate) into OUT.
Usage: python benchmarks/gpu_train_eval.py --minutes 7 --out DIR [--dry-run]   (--dry-run: a tiny
CPU version of every phase, for checking the script without a GPU)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRAIN_SEEDS = range(0, 24)            # the training random scenes (as the CPU study)
REAL_SEEDS = range(100000, 100024)    # real-domain scenes (disjoint from training and held-out)


def _scene(args) -> str:
    seed, out, frames = args
    from vidsim2real.scene.random_scene import write_random_scenes
    path = Path(out) / f"random_{seed:05d}.yaml"
    if not path.exists():
        write_random_scenes(seed, out, 1, frames=frames)
    return str(path)


def _real_set(args) -> None:
    """One real-domain scene's surrogate frames, rendered on a CPU core: the 24 scenes in parallel
    processes take seconds, one after another on the GPU minutes (many small noise kernels)."""
    i, path, out, views = args
    torch.set_num_threads(1)
    from vidsim2real.domains.surrogate_set import write_surrogate_set
    write_surrogate_set(Path(out) / Path(path).stem, [path], seed=i, views=views, size=(256, 256),
                        scope_mask=False, device="cpu", progress=False, check=False)


def make_data(out: Path, dry: bool) -> tuple[list[str], list[str]]:
    """Training scene files and real-frame folders."""
    from vidsim2real.domains.real import DEFAULT_REAL
    n = 2 if dry else len(TRAIN_SEEDS)
    jobs = [(s, str(out / "scenes"), 60) for s in list(TRAIN_SEEDS)[:n]]
    jobs += [(s, str(out / "real_scenes"), 30) for s in list(REAL_SEEDS)[:n]]
    jobs += [(s, str(out / "eval" / "scenes"), 48) for s in (50000, 50001)]     # the held-out scenes
    for d in ("scenes", "real_scenes", "eval/scenes"):
        (out / d).mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(min(len(jobs), mp.cpu_count())) as pool:
        paths = pool.map(_scene, jobs)
        pool.map(_real_set, [(i, p, str(out / "real"), 2 if dry else 10) for i, p in enumerate(paths[n:2 * n])])
    train = [str(ROOT / "scenes/liver_overview.yaml"), str(ROOT / "scenes/instrument_pass.yaml")] + paths[:n]
    return train, [str(out / "real"), str(DEFAULT_REAL)]


def train(out: Path, minutes: float, scenes: list[str], real: list[str], device, dry: bool) -> Path:
    from vidsim2real.train.config import resolve
    from vidsim2real.train.loop import train as run
    over = [f"run_dir={out / 'run'}", f"max_minutes={minutes}", "steps=100000000", f"device={device.type}",
            f"data.scenes=[{','.join(scenes)}]", "data.random_scenes.count=0", f"data.real.paths=[{','.join(real)}]",
            "data.real.surrogate_scenes=0", "data.check_paths=false", "log.checkpoint_every=1000000", "log.every=50",
            "log.images_every=1000"]
    if dry:
        over += ["model.dim=8", "model.dis_dim=8", "model.n_res=1", "model.mlp_dim=16", "size=[64,64]", "batch=1",
                 "data.render_size=[]", "texture.resolution=32", "texture.texel_size=0.0", "texture.levels=2"]
    cfg = resolve(ROOT / "configs/train/default.yaml", over)
    r = run(cfg, progress=False)
    print(f"trained {r.step} steps in {minutes} min ({r.reason}), batch {cfg.batch}, {cfg.size[0]}², "
          f"{r.step / (minutes * 60):.1f} steps/s", flush=True)
    return r.model


def _evaluate_scene(args) -> dict:
    i, out, ckpt, frames, size, device = args
    torch.set_num_threads(4)
    from temporal_table import STYLES, HeldOut, realism_set, translate
    from vidsim2real.translate.inference import check_scene, load_model
    held = HeldOut(Path(out), frames, size, device=device, only=[i])
    model = load_model(ckpt, device)
    gt = held.gts[0]
    check_scene(model, held.scenes[0])
    idx = list(range(len(gt)))
    temporal = translate(model, gt, idx, STYLES[0])
    encoded = realism_set(model, gt, temporal)
    res = {"ours": held.score(0, temporal, encoded)}
    sets = {"ours": encoded}
    for ref in ("sim render", "surrogate (floor)"):
        res[ref] = held.score(0, *held.refs[0][ref])
        sets[ref] = held.refs[0][ref][1]
    u8 = lambda x: (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    picks = [0, len(idx) // 2, len(idx) - 1]
    sheet = torch.cat([torch.cat([gt.sim(t), temporal[t], held.refs[0]["surrogate (floor)"][0][t]], 1)
                       for t in picks], 0)
    return {"scene": held.scenes[0].name, "results": res, "sheet": u8(sheet),
            "sets": {k: u8(v) for k, v in sets.items()}, "real": u8(held.real[0])}


def evaluate(out: Path, ckpt: Path, device, dry: bool) -> dict:
    frames, size = (8, 64) if dry else (48, 256)
    jobs = [(i, str(out / "eval"), str(ckpt), frames, size, str(device)) for i in range(3)]
    with mp.get_context("spawn").Pool(3) as pool:
        per = pool.map(_evaluate_scene, jobs)
    from temporal_table import KEYS, auc_cell, c2st_cell, h264_available, mean_over_scenes
    from vidsim2real.metrics.c2st import c2st, describe_power, power_of
    cols = ["ours", "sim render", "surrogate (floor)"]
    mean = {c: mean_over_scenes([p["results"][c] for p in per]) for c in cols}
    f = lambda x: torch.from_numpy(x).float() / 255  # noqa: E731
    real = [f(p["real"]) for p in per]
    for c in cols:              # one two-sample test over the three scenes, on the GPU
        mean[c].update(c2st([f(p["sets"][c]) for p in per], real, device=device,
                            **({"max_steps": 20, "seeds": 1} if dry else {})))
    pw = power_of(mean["sim render"], mean["surrogate (floor)"])
    rows = [[f"`{k}` {a}"] + [c2st_cell(mean[c], pw["powered"]) if k == "c2st_accuracy" else
                              f"{mean[c].get(k, float('nan')):.4g}" for c in cols] for k, a in KEYS]
    rows.append(["C2ST as ROC AUC ↓ (same runs)"] + [auc_cell(mean[c], pw) for c in cols])
    md = (f"Held-out scenes ({', '.join(p['scene'] for p in per)}), {frames} frames at {size}²; "
          f"{describe_power(pw)} (real vs real: the floor)"
          + ("" if h264_available() else "; no H.264 round trip (imageio-ffmpeg not installed): "
             "every column and the reference uncompressed") + "\n\n" + table(["metric"] + cols, rows))
    import cv2
    cv2.imwrite(str(out / "contact_sheet.png"), np.concatenate([p["sheet"] for p in per], 0)[..., ::-1])
    return {"markdown": md, "mean": mean, "c2st_power": pw, "h264_round_trip": h264_available(),
            "per_scene": {p["scene"]: p["results"] for p in per}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU version of every phase")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU (use --dry-run to check the script on a CPU)")
    t0 = time.perf_counter()
    times = {}
    from vidsim2real.ext import load_extension
    load_extension(cuda=device.type == "cuda")
    scenes, real = make_data(out, args.dry_run)
    times["setup (kernels, data)"] = time.perf_counter() - t0
    print(f"setup: {times['setup (kernels, data)']:.0f} s", flush=True)
    t1 = time.perf_counter()
    ckpt = train(out, args.minutes, scenes, real, device, args.dry_run)
    times["training"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    res = evaluate(out, ckpt, device, args.dry_run)
    times["evaluation"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    md = res["markdown"] + "\n\n" + table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in times.items()])
    md += f"\n\n({machine()}; budget: {args.minutes} + 2 min = {(args.minutes + 2) * 60:.0f} s)\n"
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps({"machine": machine(), "minutes": args.minutes, "times": times,
                                                "checkpoint": str(ckpt), **{k: v for k, v in res.items()
                                                                           if k != "markdown"}}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
