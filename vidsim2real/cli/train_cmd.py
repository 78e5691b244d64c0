"""``vidsim2real train CONFIG.yaml [key=value ...]`` and ``vidsim2real fit-textures CKPT SCENE``."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..io.atomic import check_writable
from .common import add_force_option, refuse_existing

TRAIN_FLAGS = {"resume": "--resume", "overrides": "key=value"}
FIT_FLAGS = {"steps": "--steps", "real": "--real", "device": "--device", "overrides": "key=value", "output": "-o"}


def register(sub) -> None:
    p = sub.add_parser("train", help="train the translator (and neural textures) from a config")
    p.add_argument("config", metavar="CONFIG.yaml", help="a training config (configs/train/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=200 model.dim=32")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoints/last.pt exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, batch jobs)")
    p.set_defaults(func=run_train, flags=TRAIN_FLAGS)

    f = sub.add_parser("fit-textures", help="fit neural textures for a new scene with the translator frozen")
    f.add_argument("checkpoint", metavar="CKPT", help="a trained model")
    f.add_argument("scene", metavar="SCENE.yaml", help="a scene with the new anatomy (or new objects)")
    f.add_argument("-o", "--output", default=None, metavar="OUT.pt",
                   help="checkpoint with the new textures; default: next to CKPT, <name>_<scene>.pt")
    f.add_argument("--steps", type=int, default=300, help="fitting steps")
    f.add_argument("--real", nargs="*", default=None, metavar="PATH",
                   help="real frames; default: the bundled real-domain set")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_force_option(f)
    f.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch=2")
    f.set_defaults(func=run_fit, flags=FIT_FLAGS)


def run_train(args) -> int:
    from ..train.config import resolve
    cfg = resolve(args.config, args.overrides)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        return 0
    from ..train.loop import train
    r = train(cfg, resume=args.resume, progress=not args.no_progress)
    if r.is_main:
        head = {"done": "done:", "signal": "interrupted: saved", "time": "time budget reached: saved"}[r.reason]
        print(f"{head} step {r.step}, checkpoint {r.last}, model {r.model}"
              + (f", {r.ranks} ranks in sync" if r.ranks > 1 else ""))
    return 0


def run_fit(args) -> int:
    from ..train.fit import fit_textures
    if args.steps < 1:
        raise UserError("must be >= 1", field="steps")
    out = Path(args.output) if args.output else \
        Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_{Path(args.scene).stem}.pt")
    refuse_existing(out, args.force)
    check_writable(out.parent)                 # before minutes of fitting
    r = fit_textures(args.checkpoint, args.scene, out, steps=args.steps, real=args.real, device=args.device,
                     overrides=args.overrides)
    print(f"wrote {r.path} (textures for anatomy '{r.anatomy}', {r.steps} steps)")
    return 0
