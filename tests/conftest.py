"""Shared fixtures: device selection (CPU always, CUDA when present), CLI runner, tiny scenes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO / "scenes"
MESHES = SCENES / "meshes"

os.environ.setdefault("PYTHONHASHSEED", "0")
if "OMP_NUM_THREADS" not in os.environ:   # respect an explicit setting
    # the cores shared among pytest-xdist workers (one worker per core on CI's 2 cores)
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _workers))


class Labelled:
    """A labelled real set in memory (the parts of domains.real.RealFrames the detail draw and the
    noise fit read)."""

    def __init__(self, frames, labels):
        self.frames, self.labels = frames, labels
        self.label_paths = [f"{i}.png" for i in range(len(frames))]

    def __len__(self):
        return len(self.frames)

    def frame(self, i):
        return self.frames[i]

    def label(self, i):
        return self.labels[i]

    def native(self, i):
        return self.frames[i], self.labels[i]


def views_as_real(bank, textures) -> Labelled:
    """48 training views of ``bank`` rendered with ``textures``' detail layers (the base image
    times exp(layer), no camera model) as a labelled "real" set: what a fit must give back."""
    import numpy as np

    from vidsim2real.shading import linear_to_srgb
    from vidsim2real.train.appearance import _views_with_layer
    imgs, labels = [], []
    for base, layer, lbl, _, _ in _views_with_layer(bank, textures, False, 48, None):
        imgs.append((linear_to_srgb((base * layer.exp()).clamp(0, 1))[0].numpy() * 255 + 0.5).astype(np.uint8))
        labels.append(lbl[0].numpy().astype(np.uint8))
    return Labelled(imgs, labels)


def pytest_addoption(parser):
    parser.addoption("--device", action="store", default="cpu", help="cpu | cuda | all")


@pytest.fixture
def device(request) -> torch.device:
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda" if name == "cuda" else "cpu")


@pytest.fixture
def cli(capsys):
    """Run ``vidsim2real ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from vidsim2real.cli.main import main

    def run(*args):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run


def sphere_mesh(path: Path, radius_mm: float = 20.0, center=(0.0, 0.0, 0.0), subdivisions: int = 3) -> Path:
    import trimesh
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius_mm)
    m.apply_translation(center)
    m.export(path)
    return path


def mini_scene_dict(tmp_path: Path) -> dict:
    """A small valid scene: one sphere 'organ' (r = 20 mm) and a camera path outside it."""
    mesh = sphere_mesh(tmp_path / "ball.stl")
    return {
        "name": "mini", "units": "mm",
        "camera": {"width": 64, "height": 48, "fov": 60, "near": 1, "far": 500},
        "trajectory": {"fps": 10, "frames": 12, "keyframes": [
            {"time": 0.0, "position": [0, -100, 0], "look_at": [0, 0, 0], "up": [0, 0, 1]},
            {"time": 0.5, "position": [30, -90, 10], "look_at": [0, 0, 0], "up": [0, 0, 1]},
            {"time": 1.1, "position": [60, -60, 20], "look_at": [0, 5, 0], "up": [0, 0, 1]}]},
        "objects": [{"name": "ball", "mesh": str(mesh), "class_id": 2, "class_name": "liver",
                     "color": [0.6, 0.2, 0.15]}],
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def approach_scene(tmp_path, exposure=None) -> Path:
    """The scope flies from 10 cm to 1.5 cm in front of a liver-coloured sphere (a close-up)."""
    d = mini_scene_dict(tmp_path)
    d["camera"] = {"width": 64, "height": 64, "fov": 70, "near": 1, "far": 500}
    if exposure is not None:
        d["camera"]["exposure"] = exposure
    d["trajectory"] = {"fps": 25, "frames": 50, "keyframes": [
        {"time": 0.0, "position": [0, -120, 0], "look_at": [0, 0, 0], "up": [0, 0, 1]},
        {"time": 1.96, "position": [0, -35, 0], "look_at": [0, 0, 0], "up": [0, 0, 1]}]}
    return write_yaml(tmp_path / f"approach_{exposure}.yaml", d)


@pytest.fixture
def mini_scene(tmp_path) -> Path:
    return write_yaml(tmp_path / "mini.yaml", mini_scene_dict(tmp_path))


@pytest.fixture(scope="session")
def bundled_scenes() -> list[Path]:
    return sorted(SCENES.glob("*.yaml"))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def real_frames(tmp_path_factory) -> Path:
    """A small surrogate 'real' set (64x64), rendered once per session."""
    from vidsim2real.cli.main import main
    out = tmp_path_factory.mktemp("real")
    assert main(["surrogate", "--random-scenes", "2", "--views", "4", "--frames", "20", "--size", "64x64",
                 "-o", str(out), "--seed", "1", "--no-scope-mask"]) == 0
    return out / "frames"


def tiny_cfg(tmp_path, real_frames, *overrides):
    """configs/tiny.yaml with its run folder in tmp_path and the session's real frames."""
    from vidsim2real.train.config import resolve
    return resolve(TINY, [f"run_dir={tmp_path / 'run'}", f"data.real.paths=[{real_frames}]",
                          "data.real.surrogate_scenes=0", "log.tensorboard=false", *overrides])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, real_frames) -> Path:
    """A 3-step tiny model (slim checkpoint) for the commands that need one."""
    from vidsim2real.train.loop import train
    tmp = tmp_path_factory.mktemp("tiny_model")
    return train(tiny_cfg(tmp, real_frames, "steps=3"), progress=False).model
