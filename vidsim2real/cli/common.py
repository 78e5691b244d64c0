"""Argument helpers shared by the commands (sizes, frame ranges, devices, flag names)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import UserError
from ..io.video import check_even
from ..raster import BACKENDS
from ..scene import check_camera_path, load_scene
from ..translate.inference import check_scene, load_model

# library error fields -> the flags of the commands that render a scene to video
VIDEO_FLAGS = {"size": "--size", "frames": "--frames", "segment_frames": "--segment-frames", "batch": "--batch",
               "style": "--style", "device": "--device", "backend": "--backend", "output": "-o"}


def add_force_option(p) -> None:
    p.add_argument("--force", action="store_true", help="replace an existing output (an interrupted job of the "
                                                        "same command resumes without it)")


def refuse_existing(path, force: bool, complete: bool | None = None) -> bool:
    """Outputs are never replaced silently: an existing (``complete``, by default: existing)
    output is a UserError unless ``force``; returns True when it is to be replaced."""
    path = Path(path)
    done = path.exists() if complete is None else complete
    if done and not force:
        raise UserError("already exists; pass --force to replace it", file=path, field="output")
    return bool(done)


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """'WxH' -> (W, H)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise UserError(f"expected WIDTHxHEIGHT (e.g. 512x512), got '{text}'", field=option)
    w, h = int(m.group(1)), int(m.group(2))
    if w < 2 or h < 2 or w > 8192 or h > 8192:
        raise UserError(f"size must be between 2 and 8192 pixels per side, got {w}x{h}", field=option)
    return w, h


def parse_frames(text: str | None, total: int, option: str = "--frames", file=None) -> range:
    """Python-style 'A:B' (also 'A:', ':B', 'A') -> range of scene frame indices within [0, total)."""
    if text is None:
        return range(total)
    m = re.fullmatch(r"\s*(-?\d*)\s*(:\s*(-?\d*))?\s*", text)
    if not m or (m.group(1) == "" and m.group(2) is None):
        raise UserError(f"expected A:B (Python-style, B exclusive), got '{text}'", field=option)
    if m.group(2) is None:  # single frame 'A'
        a = int(m.group(1))
        b = a + 1
    else:
        a = int(m.group(1)) if m.group(1) not in ("", "-") else 0
        b = int(m.group(3)) if m.group(3) not in (None, "", "-") else total
    a = a + total if a < 0 else a
    b = b + total if b < 0 else b
    if not (0 <= a < b <= total):
        raise UserError(f"frame range {text} is empty or outside the scene's 0:{total}", file=file, field=option)
    return range(a, b)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA requested but no GPU is available", field="--device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'", field="--device") from None


def load_checked_scene(path: str, frames_arg: str | None, size_arg: str | None, even: bool = True):
    """Load + validate a scene (camera path included) and parse --frames / --size against it.

    Returns (scene, frame range, (W, H)).
    """
    scene = load_scene(path)
    check_camera_path(scene)
    frames = parse_frames(frames_arg, scene.frames, file=path)
    size = parse_size(size_arg) or (scene.intrinsics.width, scene.intrinsics.height)
    if even:
        check_even(*size)
    return scene, frames, size


def load_model_for_scene(checkpoint: str, scene, device):
    """A checkpoint loaded for inference, refusing scenes it cannot translate."""
    model = load_model(checkpoint, device)
    check_scene(model, scene)
    return model


def add_video_job_options(p) -> None:
    """Options shared by the commands that render a scene to MP4 (render, translate)."""
    p.add_argument("--batch", type=int, default=4, help="frames rendered at once")
    p.add_argument("--segment-frames", type=int, default=100, metavar="N",
                   help="video is written in N-frame segments; an interrupted run resumes after the last one")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="kernel implementation")
    add_force_option(p)


def check_video_job_args(args) -> Path:
    """Validate -o/--batch/--segment-frames/--force of a video job; returns the output path.
    An existing MP4 is refused without --force (with it, the MP4, its sidecar and any
    unfinished segments go); unfinished segments alone mean an interrupted job: it resumes."""
    import shutil
    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        raise UserError("output must end in .mp4", field="-o")
    for value, option in ((args.batch, "--batch"), (args.segment_frames, "--segment-frames")):
        if value < 1:
            raise UserError("must be >= 1", field=option)
    if refuse_existing(out, args.force) or args.force:
        out.unlink(missing_ok=True)
        out.with_name(out.name + ".json").unlink(missing_ok=True)
        shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    return out
