"""CPU proxy for GPU kernel launches: top-level torch ops per training step and per translated frame.

An op is "top-level" when no other aten op encloses it (what the dispatcher launches; on a
GPU each such op is roughly one kernel launch). Views and metadata ops (view, reshape, select,
slice, expand, permute, ...) launch no kernel, so they are counted separately: "launching ops"
is the proxy for launches. Measured on what the commands run:

* training: ``train.loop.build`` + ``build_trainer`` (as ``vidsim2real train`` does) of
  configs/train/default.yaml at batch 8, 64² (the bundled scenes and a small real set), after
  two warm-up steps: one data step (the view pairs) + one training step;
* translate: ``Renderer.render`` + ``translate_buffers`` (as ``vidsim2real translate`` does, batch 4)
  with the shipped checkpoint at 64², per frame.

Aims (issue 13): <= 3,000 per training step and <= 60 per translated frame.
Usage: python benchmarks/bm_op_count.py [--config CONFIG] [--checkpoint CKPT] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bm_train_step import fake_real  # noqa: E402
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIEW_OPS = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::select", "aten::slice", "aten::expand",
            "aten::expand_as", "aten::permute", "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze",
            "aten::as_strided", "aten::alias", "aten::detach", "aten::lift_fresh", "aten::numpy_T", "aten::unflatten",
            "aten::flatten", "aten::unbind", "aten::split", "aten::chunk", "aten::narrow", "aten::view_as",
            "aten::_unsafe_view", "aten::contiguous", "aten::result_type", "aten::is_nonzero", "aten::empty",
            "aten::empty_like", "aten::empty_strided", "aten::_has_compatible_shallow_copy_type", "aten::item",
            "aten::_local_scalar_dense", "aten::size", "aten::stride", "aten::dim", "aten::is_floating_point",
            "aten::movedim", "aten::swapaxes", "aten::matrix_H", "aten::resolve_conj", "aten::resolve_neg",
            "aten::to", "aten::_to_copy"}


def _copies(e) -> bool:
    """Whether an aten::to really copied (a dtype or device change runs aten::copy_ inside)."""
    return any(c.name == "aten::copy_" or _copies(c) for c in e.cpu_children)


def count(fn) -> tuple[int, int]:
    """(top-level aten ops, of which launching ops) of one call of ``fn`` (run once before)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    top, launching = 0, 0
    for e in p.events():
        if not e.name.startswith("aten::"):
            continue
        par = e.cpu_parent
        while par is not None and not par.name.startswith("aten::"):
            par = par.cpu_parent
        if par is None:
            top += 1
            # a copy between devices or dtypes launches work even if called through aten::to
            launching += e.name not in VIEW_OPS or (e.name in ("aten::to", "aten::_to_copy") and _copies(e))
    return top, launching


def training(config: Path, batch: int, size: int) -> dict:
    from vidsim2real.train.config import resolve
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, build_trainer
    with tempfile.TemporaryDirectory() as tmp:
        real = fake_real(Path(tmp))
        cfg = resolve(config, [f"run_dir={tmp}", "device=cpu", f"batch={batch}", f"size=[{size},{size}]",
                               f"data.real.paths=[{real}]", "data.real.surrogate_scenes=0",
                               "data.random_scenes.count=0", "loss.view_warmup=0", "data.render_size=[]",
                               f"data.scenes=[{ROOT / 'scenes/liver_overview.yaml'},{ROOT / 'scenes/instrument_pass.yaml'}]"])
        bank, frames, sampler = build(cfg, Dist(), torch.device("cpu"), Path(tmp), progress=False)
        trainer = build_trainer(cfg, bank, torch.device("cpu"))[0]
        b = sampler.batch(cfg.batch, frames)
        trainer.training_step(b)
        data = count(lambda: sampler.batch(cfg.batch, frames))
        step = count(lambda: trainer.training_step(b))
    return {"data": data, "step": step, "total": (data[0] + step[0], data[1] + step[1]), "model": cfg.model.type}


def translating(ckpt: Path, size: int, batch: int = 4) -> dict:
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    model = load_model(ckpt)
    scene = load_scene(ROOT / "scenes/instrument_pass.yaml")
    r = Renderer(scene, size=(size, size))
    style = make_style(model, "0", "cpu")
    frames = iter(range(0, scene.frames, batch))

    def one():
        with torch.no_grad():
            f = next(frames)
            translate_buffers(model, r, r.render(list(range(f, f + batch))), style)
    top, launching = count(one)
    return {"per_frame": (top / batch, launching / batch)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/train/default.yaml"))
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints/cpu_small.pt"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t = training(Path(args.config), args.batch, args.size)
    tr = translating(Path(args.checkpoint), args.size)
    for v in (*t["total"], *tr["per_frame"]):
        if not v > 0:
            raise SystemExit(f"sanity check failed: an op count of {v} is nonsense")
    rows = [[f"training step ({Path(args.config).name}: {t['model']}, batch {args.batch}, {args.size}²)",
             f"{t['data'][0]:,} + {t['step'][0]:,} = {t['total'][0]:,}",
             f"{t['data'][1]:,} + {t['step'][1]:,} = {t['total'][1]:,}", "≤ 3,000"],
            [f"translated frame ({Path(args.checkpoint).name}, {args.size}², batch 4)", f"{tr['per_frame'][0]:.0f}",
             f"{tr['per_frame'][1]:.0f}", "≤ 60"]]
    print(f"# Top-level torch ops (CPU proxy for GPU kernel launches; {machine()})\n")
    print(table(["what", "top-level ops (data + step)", "launching ops (data + step)", "aim"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"training": t, "translate": tr}, indent=1))


if __name__ == "__main__":
    main()
