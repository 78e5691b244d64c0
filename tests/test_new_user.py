"""What a new user trips over: extension builds, unwritable outputs, clobbering, random
styles, memory of long clips, dash-leading option values, help text."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, SCENES, mini_scene_dict, write_yaml


# -- 1. the C++ extension builds once per install -----------------------------------------------

@pytest.mark.slow
def test_two_installs_build_once_each(tmp_path):
    """Two copies of the package (different kernel sources: two versions checked out side by
    side) used alternately on one machine each compile once; neither rebuilds the other's."""
    copies = []
    for name in ("a", "b"):
        root = tmp_path / name
        shutil.copytree(REPO / "vidsim2real", root / "vidsim2real", ignore=shutil.ignore_patterns("__pycache__", "data"))
        copies.append(root)
    with open(copies[1] / "vidsim2real/ext/csrc/bind.cpp", "a") as f:
        f.write("\n// another version of the sources\n")
    env = dict(os.environ, VIDSIM2REAL_EXT_DIR=str(tmp_path / "ext"), OMP_NUM_THREADS="1")
    code = "from vidsim2real.ext import load_extension; load_extension(); print('loaded')"

    def use(root):
        r = subprocess.run([sys.executable, "-c", code], cwd=root, env={**env, "PYTHONPATH": str(root)},
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0 and "loaded" in r.stdout, r.stderr[-2000:]
        return "compiling the C++ kernels" in r.stderr

    assert [use(copies[0]), use(copies[1]), use(copies[0]), use(copies[1])] == [True, True, False, False]
    assert len([p for p in (tmp_path / "ext").iterdir() if p.is_dir()]) == 2


def test_a_build_killed_mid_compile_does_not_hang_the_next_one(tmp_path):
    """A compile killed midway leaves torch's build lock behind, and torch waits on a lock
    without a bound. The next use removes a lock whose builder is gone, at once when no longer
    running before it starts, and while it waits when the builder dies meanwhile."""
    import socket
    from vidsim2real.ext import build_dir, load_extension
    load_extension()                                   # built (cached) for this install
    built = build_dir(False)[1]
    root = tmp_path / "ext"
    shutil.copytree(built, root / built.name)          # a copy: the shared build is never locked here
    folder = root / built.name
    env = dict(os.environ, VIDSIM2REAL_EXT_DIR=str(root), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    code = "from vidsim2real.ext import load_extension; load_extension(); print('loaded')"

    def lock_by(pid):
        (folder / "owner").write_text(f"{socket.gethostname()} {pid}")
        (folder / "lock").touch()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock_by(gone.pid)                                  # the builder died before this run started
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "loaded" in r.stdout, r.stderr[-2000:]
    assert "stale build lock" in r.stderr and not (folder / "lock").exists()
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock_by(builder.pid)                           # a live build: wait for it ...
        user = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            user.wait(timeout=6)
        assert (folder / "lock").exists()
        builder.kill()                                 # ... until it is killed mid-compile
        builder.wait()
        out, err = user.communicate(timeout=300)
        assert user.returncode == 0 and "loaded" in out, err[-2000:]
        assert not (folder / "lock").exists()
    finally:
        builder.kill()


# -- 2. unwritable outputs ------------------------------------------------------------------------

@contextlib.contextmanager
def unwritable(path: Path):
    """A directory nobody (root included, via the immutable attribute) can write into."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: no unwritable directory possible")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)])
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def test_unwritable_output_is_one_line_exit_2(tmp_path, cli, tiny_model):
    scene = SCENES / "liver_edge_breathing.yaml"
    with unwritable(tmp_path / "ro") as ro:
        cases = [
            ("render", scene, "-o", ro / "x.mp4", "--frames", "0:2", "--size", "32x32"),
            ("translate", tiny_model, scene, "-o", ro / "x.mp4", "--frames", "0:2", "--size", "32x32"),
            ("export", tiny_model, scene, "-o", ro / "set", "--frames", "0:2", "--size", "32x32"),
            ("scene", "random", "--seed", "3", "-o", ro / "scenes", "--frames", "10"),
        ]
        for args in cases:
            rc, out, err = cli(*args)
            lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
            assert rc == 2, (args[0], rc, err[-500:])
            assert len(lines) == 1 and lines[0].startswith(f"error: {ro}") and "cannot write" in lines[0], err
            assert "Traceback" not in err
        assert list(ro.iterdir()) == []                       # nothing half-written


def test_metrics_unwritable_output(tmp_path, cli):
    video = tmp_path / "v.mp4"
    assert cli("render", SCENES / "liver_edge_breathing.yaml", "-o", video, "--frames", "0:4", "--size", "32x32")[0] == 0
    with unwritable(tmp_path / "ro") as ro:
        rc, _, err = cli("metrics", video, "-o", ro / "m", "--real", tmp_path)
        assert rc == 2 and err.strip().splitlines()[-1].startswith(f"error: {ro}") and "cannot write" in err
        assert list(ro.iterdir()) == []


# -- 3. no silent overwriting --------------------------------------------------------------------

def test_outputs_are_not_replaced_without_force(tmp_path, cli, tiny_model):
    scene = SCENES / "liver_edge_breathing.yaml"
    video = tmp_path / "v.mp4"
    base = ("render", scene, "-o", video, "--frames", "0:3", "--size", "32x32")
    assert cli(*base)[0] == 0
    before = video.read_bytes()
    rc, _, err = cli(*base[:-2], "--size", "48x48")
    assert rc == 2 and f"error: {video}: -o: already exists; pass --force to replace it" in err
    assert video.read_bytes() == before
    assert cli(*base[:-2], "--size", "48x48", "--force")[0] == 0 and video.read_bytes() != before
    t = tmp_path / "t.mp4"
    args = ("translate", tiny_model, scene, "-o", t, "--frames", "0:3", "--size", "32x32", "--style", "1")
    assert cli(*args)[0] == 0
    assert cli(*args)[0] == 2 and cli(*args, "--force")[0] == 0
    ex = tmp_path / "set"
    args = ("export", tiny_model, scene, "-o", ex, "--frames", "0:2", "--size", "32x32", "--style", "1")
    assert cli(*args)[0] == 0
    rc, _, err = cli(*args)
    assert rc == 2 and "already exported; pass --force" in err
    rc, _, err = cli("export", tiny_model, scene, "-o", ex, "--frames", "0:3", "--size", "32x32")
    assert rc == 2 and "holds another export" in err
    assert cli(*args, "--force")[0] == 0
    rs = tmp_path / "rs"
    assert cli("scene", "random", "--seed", "5", "-o", rs, "--frames", "10")[0] == 0
    rc, _, err = cli("scene", "random", "--seed", "5", "-o", rs, "--frames", "10")
    assert rc == 2 and "random_00005.yaml: -o: already exists" in err
    ply = tmp_path / "m.ply"
    assert cli("scene", "mesh", scene, "-o", ply)[0] == 0
    assert cli("scene", "mesh", scene, "-o", ply)[0] == 2 and cli("scene", "mesh", scene, "-o", ply, "--force")[0] == 0


def test_an_interrupted_export_resumes_without_force(tmp_path, cli, tiny_model):
    scene = SCENES / "liver_edge_breathing.yaml"
    ex = tmp_path / "set"
    args = ("export", tiny_model, scene, "-o", ex, "--frames", "0:4", "--size", "32x32")
    assert cli(*args)[0] == 0
    seed = json.loads((ex / "meta.json").read_text())["seed"]
    (ex / "meta.json").unlink()                           # as if stopped before the end
    (ex / "rgb" / "000002.png").unlink()
    rc, out, _ = cli(*args)
    assert rc == 0 and "exported 1 new frames" in out
    assert json.loads((ex / "meta.json").read_text())["seed"] == seed     # the random seed it drew


# -- 4. random styles ------------------------------------------------------------------------------

def test_random_style_is_random_and_recorded(tmp_path, cli, tiny_model):
    from vidsim2real.io.video import read_video
    scene = SCENES / "liver_edge_breathing.yaml"
    sides = []
    for name in ("a", "b", "c"):
        style = "random" if name != "c" else None
        args = ["translate", tiny_model, scene, "-o", tmp_path / f"{name}.mp4", "--frames", "0:2", "--size", "32x32"]
        if name == "c":
            args += ["--style", str(json.loads((tmp_path / "a.mp4.json").read_text())["seed"])]
        elif style:
            args += ["--style", style]
        assert cli(*args)[0] == 0
        sides.append(json.loads((tmp_path / f"{name}.mp4.json").read_text()))
    a, b, c = sides
    assert a["style"] == "random" and isinstance(a["seed"], int) and a["seed"] != b["seed"]
    assert c["seed"] == a["seed"] and c["style"] == str(a["seed"])
    va, vb, vc = (read_video(tmp_path / f"{n}.mp4") for n in "abc")
    assert (va != vb).any() and (va == vc).all()                # random differs; its seed reproduces it
    img = tmp_path / "style.png"
    import cv2
    cv2.imwrite(str(img), (torch.rand(40, 40, 3) * 255).numpy().astype("uint8"))
    os.chdir(tmp_path)
    assert cli("translate", tiny_model, scene, "-o", "d.mp4", "--frames", "0:2", "--size", "32x32",
               "--style", "style.png")[0] == 0
    d = json.loads((tmp_path / "d.mp4.json").read_text())
    assert d["style"] == str(img.resolve()) and d["seed"] is None      # absolute, like the other paths


# -- 6. metrics memory does not grow with clip length -------------------------------------------

def _peak_rss_mb(args: list, env: dict) -> float:
    code = ("import resource, sys\nfrom vidsim2real.cli.main import main\nrc = main(sys.argv[1:])\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\nsys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return float(r.stdout.split("PEAK")[-1])


@pytest.mark.slow
def test_metrics_memory_is_flat_in_clip_length(tmp_path, cli, real_frames):
    """metrics streams the video and renders ground truth on demand: a clip 4x as long as the
    measures' caps (64 frames for the classifier test and the ground-truth cache; the 200 frames
    of the set measures are visited a few at a time) peaks at about the same memory."""
    d = mini_scene_dict(tmp_path)
    d["camera"].update(width=128, height=128)
    d["trajectory"] = {"fps": 25, "frames": 400, "keyframes": [
        {"time": 0.0, "position": [0, -100, 0], "look_at": [0, 0, 0], "up": [0, 0, 1]},
        {"time": 16.0, "position": [60, -60, 20], "look_at": [0, 5, 0], "up": [0, 0, 1]}]}
    scene = write_yaml(tmp_path / "long.yaml", d)
    # A fixed mmap threshold makes the peak RSS what the process holds: with glibc's sliding
    # one, freed frame-sized blocks stay in a fragmented heap and the peak wanders by ~90 MB.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MALLOC_MMAP_THRESHOLD_="65536")
    peaks = {}
    for n in (64, 256):
        video = tmp_path / f"v{n}.mp4"
        assert cli("render", scene, "-o", video, "--frames", f"0:{n}")[0] == 0
        peaks[n] = _peak_rss_mb(["metrics", video, "-o", tmp_path / f"m{n}", "--real", real_frames, "--c2st-steps", "10",
                                 "--c2st-seeds", "1"], env)
    # holding 192 more frames with their G-buffers would take ~150 MB at 128², the set measures'
    # 200 frames at once ~300 MB
    assert peaks[256] - peaks[64] < 80, peaks


# -- 8. smaller things ------------------------------------------------------------------------------

def test_dash_leading_values_and_defaults_in_help(tmp_path, cli):
    scene = SCENES / "liver_edge_breathing.yaml"
    rc, out, err = cli("render", scene, "-o", tmp_path / "a.mp4", "--frames", "-3:", "--size", "32x32")
    assert rc == 0, err
    assert json.loads((tmp_path / "a.mp4.json").read_text())["frames"] == [147, 150]
    rc, _, err = cli("render", scene, "-o", tmp_path / "b.mp4", "--frames", "0:2", "--size", "-32x32")
    assert rc == 2 and "--size: expected WIDTHxHEIGHT" in err
    import argparse
    from vidsim2real.cli.main import build_parser
    subs = build_parser()._subparsers._group_actions[0].choices
    helps = {name: p.format_help() for name, p in subs.items()}
    assert "(default: 4)" in helps["translate"] and "(default: random)" in helps["translate"]
    assert "(default: 100)" in helps["render"]
    rnd = subs["scene"]._subparsers._group_actions[0].choices["random"]
    assert "(default: 1)" in rnd.format_help() and "(default: 25.0)" in rnd.format_help()
    parsers = [(n, p) for n, p in subs.items()] + [(f"scene {n}", p) for n, p in
                                                    subs["scene"]._subparsers._group_actions[0].choices.items()]
    for name, p in parsers:
        for action in p._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name}: {action.option_strings[0]} has no help text"


def test_threads_option_sets_the_jobs_cpu_threads(tmp_path, cli):
    import torch
    before = torch.get_num_threads()
    try:
        rc, _, err = cli("--threads", "1", "render", SCENES / "liver_edge_breathing.yaml", "-o", tmp_path / "a.mp4",
                         "--frames", "0:2", "--size", "32x32")
        assert rc == 0, err
        assert torch.get_num_threads() == 1
        rc, _, err = cli("--threads", "0", "render", SCENES / "liver_edge_breathing.yaml", "-o", tmp_path / "b.mp4")
        assert rc == 2 and err.count("\n") == 1 and "--threads: 0 is not a thread count" in err, err
        assert not (tmp_path / "b.mp4").exists()
    finally:
        torch.set_num_threads(before)
