"""A checkpoint's detail layers of some classes made a relief too (``texture.detail_relief``),
without training: what the relief study compares against the checkpoint it came from.

    python benchmarks/with_relief.py checkpoints/cpu_small.pt OUT.pt --classes stomach \
        --relief 0.005 --blur 2 --paint 0.5

Each class's layer (every anatomy of the checkpoint) becomes a height field of the given std
(metres) prefiltered ``--blur`` levels coarser than drawn, its painted contrast scaled by
``--paint`` (``TextureSet.add_relief``); the config records the three settings, so the
checkpoint says how it was made. Translations relight with it (``translate_buffers``). Bad
input: one line, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidsim2real.errors import UserError  # noqa: E402
from vidsim2real.io.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.strict_yaml import read_dataclass  # noqa: E402
from vidsim2real.texture import TextureConfig, TextureSet  # noqa: E402
from vidsim2real.train.checkpoint import slim_textures  # noqa: E402


def with_relief(ckpt: str, out: str, classes: list[str], relief: float, blur: float, paint: float,
                scenes: list[str]) -> dict:
    """Write ``out``: ``ckpt`` with the relief added (see the module docstring); returns
    {anatomy: {class name: metres per unit of grey}}."""
    if not 0 < relief <= 0.02 or not 0 < paint <= 1 or not 0 <= blur <= 8:
        raise UserError(f"--relief {relief} must be in (0, 0.02] m, --paint {paint} in (0, 1], --blur {blur} in [0, 8]")
    p = load_checkpoint(ckpt)
    tcfg = read_dataclass(TextureConfig, p["texture_config"], str(ckpt), "texture_config")
    if not tcfg.detail:
        raise UserError("has no detail layers (texture.detail: false), so nothing can become a relief",
                        file=ckpt, field="texture_config.detail")
    loaded = [load_scene(s) for s in scenes]
    got = {}
    for anatomy, state in p["textures"].items():
        tset = TextureSet.from_state(tcfg, state, anatomy)
        mine = [sc for sc in loaded if sc.anatomy == anatomy]
        if not mine:
            raise UserError(f"no --scene of anatomy '{anatomy}' names its classes", file=ckpt, field="textures")
        known = {o.class_name for sc in mine for o in sc.objects}
        missing = [c for c in classes if c not in known]
        if missing:
            raise UserError(f"class '{missing[0]}' is not in the scenes of anatomy '{anatomy}' "
                            f"(classes: {', '.join(sorted(known))})", field="--classes")
        got[anatomy] = tset.add_relief(mine, classes, relief, blur, paint)
        p["textures"][anatomy] = slim_textures({anatomy: tset.state_dict()})[anatomy]
    if not any(got.values()):
        raise UserError(f"has no detail layer of class(es) {', '.join(classes)} to make a relief of",
                        file=ckpt, field="--classes")
    for where in (p["texture_config"], p["config"].setdefault("texture", {})):
        where.update(detail_relief=relief, detail_relief_classes=list(classes), detail_relief_blur=blur,
                     detail_relief_paint=paint)
    save_checkpoint(out, p)
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--classes", default="stomach", help="comma-separated class names")
    ap.add_argument("--relief", type=float, default=0.005, help="relief std, metres")
    ap.add_argument("--blur", type=float, default=2.0, help="levels coarser than the layer is drawn")
    ap.add_argument("--paint", type=float, default=0.5, help="the painted layer's contrast kept")
    ap.add_argument("--scene", action="append", default=None,
                    help="scene file(s) naming the checkpoint's classes (default: scenes/liver_overview.yaml)")
    a = ap.parse_args(argv)
    try:
        got = with_relief(a.ckpt, a.out, [c for c in a.classes.split(",") if c], a.relief, a.blur, a.paint,
                          a.scene or [str(ROOT / "scenes/liver_overview.yaml")])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for anatomy, per in got.items():
        print(f"{anatomy}: " + (", ".join(f"{c} {1000 * v:.2f} mm per unit of grey" for c, v in per.items())
                                or "no layer of those classes"))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
