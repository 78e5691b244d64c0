"""A checkpoint with each class's chroma across it fitted to the real frames (``model.grade:
real``), without training: what the grade study compares against the checkpoint it came from.

    python benchmarks/with_grade.py checkpoints/cpu_small.pt OUT.pt --run-dir runs/cpu_appearance

The run directory holds (or gets) the checkpoint's training data: its scenes and real frames
as its config makes them (a run of that config already made them: reused, nothing rendered
again). The model's translations of 96 training views are compared with the labelled real
frames (``train.loop.fit_grade``, the step ``model.grade: real`` takes at the start of a run);
the rows go into the model and the config records ``model.grade: real`` (``--mode curve``:
``model.grade: curve``; ``--level``: each class's mean colour across frames too,
``model.grade_level: true``). Bad input: one line, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vidsim2real.errors import UserError  # noqa: E402
from vidsim2real.io.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vidsim2real.strict_yaml import read_dataclass  # noqa: E402
from vidsim2real.texture import TextureConfig, TextureSet  # noqa: E402
from vidsim2real.train.checkpoint import slim_textures  # noqa: E402
from vidsim2real.train.config import resolve  # noqa: E402
from vidsim2real.train.distributed import Dist  # noqa: E402
from vidsim2real.train.loop import build, fit_grade, use_gloss  # noqa: E402
from vidsim2real.translate.model import build_translator  # noqa: E402


def with_grade(ckpt: str, out: str, run_dir: str, mode: str = "real", level: bool = False) -> dict:
    """Write ``out``: ``ckpt`` with a class grade fitted (see the module docstring; ``mode``:
    ``real``, lines, or ``curve``, curves and the brightness across each class too; ``level``:
    each class's mean colour across frames too, ``model.grade_level``); returns the rows
    {class id: (s_a, s_b, t_a, t_b, g_a, g_b)}."""
    p = load_checkpoint(ckpt)
    cfg = resolve(None, [], base=p["config"])
    if cfg.model.type != "oneway":
        raise UserError(f"a class grade needs a one-way model, this is '{cfg.model.type}'", file=ckpt,
                        field="config.model.type")
    cfg.run_dir, cfg.init_from, cfg.model.grade = str(Path(run_dir).resolve()), "", mode
    cfg.model.grade_level = level
    torch.manual_seed(cfg.seed)
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir), labels=True)
    tcfg = read_dataclass(TextureConfig, p["texture_config"], str(ckpt), "texture_config")
    net = build_translator(cfg.model, tcfg.sampled_channels, albedo=tcfg.albedo, detail=tcfg.detail)
    net.load_weights(p["model"], source=ckpt)
    net.eval()
    use_gloss(bank, net)
    textures = {a: TextureSet.from_state(tcfg, st, a) for a, st in p["textures"].items()}
    rows = fit_grade(cfg, SimpleNamespace(net=net), textures, bank, real)
    if not rows:
        raise UserError("no class is in both the training views and the real frames' label maps: nothing to grade",
                        file=run_dir)
    p["model"]["grade.table"] = net.grade.table.detach().cpu().clone()
    p["model"]["grade.curve"] = net.grade.curve.detach().cpu().clone()
    p["model"]["grade.level"] = net.grade.level.detach().cpu().clone()
    p["textures"] = slim_textures(p["textures"])     # loaded as float32: stored again as they were (int8)
    p["config"].setdefault("model", {}).update(grade=mode, grade_level=level)
    save_checkpoint(out, p)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--run-dir", required=True, help="the checkpoint's training data (made here if absent)")
    ap.add_argument("--mode", choices=("real", "curve"), default="real",
                    help="real: each class's chroma on a line of its brightness; curve: on a curve, with a tone "
                         "curve of the brightness across it (its highlights)")
    ap.add_argument("--level", action="store_true",
                    help="also each class's mean colour on its mean brightness across frames (model.grade_level)")
    a = ap.parse_args(argv)
    try:
        rows = with_grade(a.ckpt, a.out, a.run_dir, a.mode, a.level)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"graded {len(rows)} classes; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
