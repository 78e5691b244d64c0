"""Training: parameter updates, loss decrease, exact resume, checkpoints, DDP (gloo), config,
NaN and signal handling, fit-textures. All on CPU at 64x64 with tiny networks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, SCENES, TINY, tiny_cfg
from recorded import SHIPPED
from vidsim2real.errors import UserError
from vidsim2real.io.checkpoint import load_checkpoint, save_checkpoint



def make_trainer(cfg):
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, build_trainer, seed_everything
    seed_everything(cfg.seed)
    dev = torch.device("cpu")
    bank, real, sampler = build(cfg, Dist(), dev, Path(cfg.run_dir))
    return build_trainer(cfg, bank, dev)[0], sampler, real


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("model", ["munit", "munit-nofeatures", "cyclegan", "pix2pix", "oneway", "oneway-albedo",
                                   "oneway-detail", "oneway-recolour"])
def test_one_step_updates_every_parameter_group(tmp_path, real_frames, model):
    extra = {"munit": [], "munit-nofeatures": ["model.features=false"], "oneway": ["model.type=oneway"],
             "oneway-detail": ["model.type=oneway", "loss.detail=1", "model.dis_detail=true", "model.dis_classes=8"],
             "oneway-albedo": ["model.type=oneway", "texture.albedo=true", "model.residual=true", "model.camera=true"],
             "oneway-recolour": ["model.type=oneway", "model.recolour=true", "texture.detail=true", "model.camera=true"],
             "cyclegan": ["model.type=cyclegan", "model.dim=4", "model.dis_dim=4"],
             "pix2pix": ["model.type=pix2pix", "model.dim=4", "model.dis_dim=4"]}[model]
    cfg = tiny_cfg(tmp_path, real_frames, "loss.view_warmup=0", *extra)
    trainer, sampler, real = make_trainer(cfg)
    before = _snapshot(trainer)
    # a residual generator starts at zero output: only its last layer sees a gradient at step 1
    from vidsim2real.train.loop import real_crops
    for _ in range(2 if model in ("oneway-albedo", "oneway-recolour") else 1):
        losses = trainer.training_step(sampler.batch(1, real, paired=trainer.net.paired, real_crops=real_crops(cfg)))
    if model == "oneway-detail":
        assert {"detail", "gan_detail"} <= set(losses) and losses["detail"] > 0
        assert any(n.startswith("net.dis_d.") for n in before)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = dict(trainer.named_parameters())
    changed = {n: not torch.equal(before[n], after[n]) for n in before}
    nets = [n for n in changed if n.startswith("net.")]
    assert nets and all(changed[n] for n in nets), [n for n in nets if not changed[n]]
    tex = [n for n in changed if n.startswith("textures.")]
    if model.startswith(("munit-", "cyclegan", "pix2pix")):
        assert not tex
    else:
        assert "view" in losses
        assert any(changed[n] for n in tex), "neural textures were not updated"
        assert len(trainer.opt_g.param_groups) == 2
        assert trainer.opt_g.param_groups[1]["lr"] == pytest.approx(10 * trainer.opt_g.param_groups[0]["lr"])


def test_fixed_batch_loss_falls(tmp_path, real_frames):
    cfg = tiny_cfg(tmp_path, real_frames, "optim.lr=0.0005")
    trainer, sampler, real = make_trainer(cfg)
    batch = sampler.batch(1, real)
    first = trainer.training_step(batch)["total_g"]
    for _ in range(19):
        last = trainer.training_step(batch)["total_g"]
    assert last < 0.8 * first, (first, last)


def _weights(path):
    p = load_checkpoint(path)
    return p["model"], p["textures"]


def test_resume_is_exact(tmp_path, real_frames):
    from vidsim2real.train.loop import train
    a = tiny_cfg(tmp_path / "a", real_frames, "steps=6", "log.checkpoint_every=3")
    train(a, progress=False)
    b = tiny_cfg(tmp_path / "b", real_frames, "steps=3", "log.checkpoint_every=3")
    train(b, progress=False)
    b2 = tiny_cfg(tmp_path / "b", real_frames, "steps=6", "log.checkpoint_every=3")
    train(b2, resume=True, progress=False)
    ma, ta = _weights(Path(a.run_dir) / "checkpoints/last.pt")
    mb, tb = _weights(Path(b2.run_dir) / "checkpoints/last.pt")
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    for an in ta:
        for k in ta[an]:
            assert torch.equal(ta[an][k], tb[an][k]), (an, k)
    assert load_checkpoint(Path(b2.run_dir) / "checkpoints/last.pt")["step"] == 6
    # the resolved config is in the run folder and resolving it again gives the same config
    saved = yaml.safe_load((Path(a.run_dir) / "config.yaml").read_text())
    assert saved == a.to_dict()
    # starting over in a folder that has a checkpoint is refused
    with pytest.raises(UserError, match="already has a checkpoint") as exc:
        train(a, progress=False)
    assert exc.value.field == "resume"


def test_slim_model_translates_like_the_full_checkpoint(tiny_model):
    """model.pt keeps only what translate and fit-textures use, texels stored as int8 (loaded
    back as float32), and translates the same frames as the full checkpoint to within rounding."""
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    slim, full = load_checkpoint(tiny_model), load_checkpoint(tiny_model.parent / "checkpoints/last.pt")
    assert {k.split(".")[0] for k in slim["model"]} == {"enc_s", "dec_r", "sty_r", "dis_r"}
    assert all(v.dtype == torch.float32 for st in slim["textures"].values() for k, v in st.items() if ".levels." in k)
    raw = torch.load(tiny_model, weights_only=True)["payload"]["textures"]
    assert all(v["int8"].dtype == torch.int8 for st in raw.values() for k, v in st.items() if ".levels." in k)
    for a, st in full["textures"].items():         # within half a quantization step of the full texels
        for k, v in st.items():
            if ".levels." in k:
                assert ((slim["textures"][a][k] - v).abs() <= v.abs().amax(dim=(2, 3), keepdim=True) / 127 + 1e-7).all()
    assert "opt_g" not in slim and "opt_g" in full
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")
    outs = []
    for path in (tiny_model, tiny_model.parent / "checkpoints/last.pt"):
        m = load_model(path)
        r = Renderer(scene, (64, 64), backend="torch")
        outs.append(translate_buffers(m, r, r.render([0]), make_style(m, "3", "cpu")))
    assert outs[0].shape == (1, 64, 64, 3)
    assert (outs[0] - outs[1]).abs().max() < 2e-2


def test_albedo_starts_as_the_real_class_colours(tmp_path, real_frames, capsys):
    """texture.albedo_init: real — each object's albedo starts as its class's albedo fitted to
    the labelled real frames (train.appearance.real_class_albedo, whose fit is tested in
    test_appearance.py); objects of classes no label map shows keep their scene colour."""
    from vidsim2real.train.appearance import real_class_albedo
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, train
    extra = ["model.type=oneway", "texture.albedo=true", "model.residual=true", "steps=0"]
    cfg = tiny_cfg(tmp_path, real_frames, *extra, "texture.albedo_init=real")
    tex = load_checkpoint(train(cfg, progress=False).last)["textures"]["openhelp"]
    assert "albedo from the real frames' class colours" in capsys.readouterr().out
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), Path(cfg.run_dir))
    colours = real_class_albedo(bank, real, seed=cfg.seed)
    scene = bank.scenes[0]
    assert {o.class_id for o in scene.objects} & set(colours)
    assert {o.class_id for o in scene.objects} - set(colours)          # some class the real set lacks
    for o in scene.objects:
        coarse = tex[f"textures.{o.name}.levels.{cfg.texture.levels - 1}"][:, :3].float()
        want = torch.tensor(colours[o.class_id]) * 2 - 1 if o.class_id in colours else \
            torch.tensor(o.color, dtype=torch.float32) * 2 - 1
        torch.testing.assert_close(coarse, want[None, :, None, None].expand_as(coarse), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="real needs texture.albedo"):
        tiny_cfg(tmp_path / "b", real_frames, "texture.albedo_init=real")


def test_albedo_run_from_a_feature_checkpoint_starts_fresh_textures(tmp_path, real_frames, tiny_model, capsys):
    """init_from a checkpoint whose textures hold features (no albedo) into an albedo run of the
    same channel count: its channels are not an albedo, so no texture is copied and the albedo
    starts from the real frames' class colours."""
    from vidsim2real.train.loop import train
    cfg = tiny_cfg(tmp_path, real_frames, "model.type=oneway", "texture.albedo=true", "model.residual=true", "steps=0",
                   "texture.albedo_init=real", f"init_from={tiny_model}")
    train(cfg, progress=False)
    log = capsys.readouterr().out
    assert "textures of 0 object(s)" in log and "albedo from the real frames' class colours: class" in log


def test_dcgan_baseline_learns_from_real_frames_alone(tmp_path, real_frames, cli):
    """model.type dcgan: every weight moves in one step on real frames alone (no view is
    rendered); its slim model 'translates' a scene into the same noise-drawn frame whatever the
    sim render shows."""
    from vidsim2real.train.loop import train
    cfg = tiny_cfg(tmp_path, real_frames, "model.type=dcgan", "model.features=false", "model.dim=4",
                   "model.dis_dim=4", "model.style_dim=8", "batch=4", "steps=1")
    trainer, sampler, real = make_trainer(cfg)
    assert not trainer.net.renders and not trainer.textures
    before = _snapshot(trainer)
    losses = trainer.training_step(sampler.real_batch(4, real))
    assert set(losses) == {"gan_g", "total_g", "total_d"}
    changed = [n for n, p in trainer.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)
    model = train(cfg, progress=False).model
    rc, _, err = cli("export", model, SCENES / "liver_edge_breathing.yaml", "-o", tmp_path / "ds", "--frames", "0:2",
                     "--size", "64x64", "--style", "3")
    assert rc == 0, err
    import cv2
    frames = sorted((tmp_path / "ds" / "rgb").glob("*.png"))
    assert len(frames) == 2
    a, b = (cv2.imread(str(f)) for f in frames)
    assert a.shape == (64, 64, 3) and (a == b).all()


def test_detail_loss_sees_missing_detail_class_by_class():
    """detail_swd: 0 for the same frames, larger when the translation lacks the real frames'
    fine detail (a blur) or a class has another colour; only classes on both sides count; the
    whole frame is one class when the real frames have no labels; gradients reach the image."""
    from vidsim2real.train.losses import detail_swd
    g = torch.Generator().manual_seed(0)
    H, W = 64, 128
    real = torch.rand(2, 3, H, W, generator=g) * 0.6 - 0.3
    labels = torch.zeros(2, H, W, dtype=torch.long)
    labels[:, :, :40], labels[:, :, 88:] = 1, 2          # a background gap wider than the pyramid's reach
    assert detail_swd(real, labels, real, labels).item() == pytest.approx(0.0, abs=1e-6)
    blur = torch.nn.functional.avg_pool2d(real, 5, 1, 2).requires_grad_()
    far = detail_swd(blur, labels, real, labels)
    far.backward()
    assert far.item() > 0.1 and blur.grad.abs().sum() > 0
    recoloured = real.clone()
    recoloured[:, 0, :, 88:] += 0.5                   # class 2 redder
    assert detail_swd(recoloured, labels, real, labels).item() > 0.05
    # with class 2 missing from the real frames only class 1 is compared: no difference left
    only1 = labels.clone()
    only1[:, :, 88:] = 0
    assert detail_swd(recoloured, labels, real, only1).item() == pytest.approx(0.0, abs=1e-4)
    # unlabelled real frames: one foreground class, still sees the blur
    assert detail_swd(blur.detach(), labels, real, None).item() > 0.05
    assert detail_swd(real, torch.zeros_like(labels), real, labels).item() == 0.0


def test_checkpoint_loads_with_weights_only_and_refuses_tampering(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 3, "w": torch.arange(10.0), "nested": {"a": [1, 2.5, "x"]}})
    raw = torch.load(path, weights_only=True)                   # plain torch.load works, no pickles
    assert raw["payload"]["step"] == 3
    assert load_checkpoint(path)["nested"]["a"] == [1, 2.5, "x"]
    # 1. content edited but digest not updated
    raw["payload"]["w"][3] = 99.0
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(UserError, match="modified or is corrupt"):
        load_checkpoint(tmp_path / "edited.pt")
    # 2. an arbitrary pickle (code execution on load) is refused by weights_only loading
    torch.save({"format": "vidsim2real-checkpoint", "evil": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="safe format"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    # 3. bytes flipped / truncated
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"trunc.pt: not a vidsim2real checkpoint, or corrupt \(truncated\?\)$"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "other.pt").write_bytes(os.urandom(4096))          # random bytes are not "unsafe objects"
    with pytest.raises(UserError, match=r"other.pt: not a vidsim2real checkpoint, or corrupt \(truncated\?\)$"):
        load_checkpoint(tmp_path / "other.pt")


def test_quantized_tensors_load_back_as_float(tmp_path):
    """A quantized tensor (int8 + a scale per [plane, channel]) is a quarter of float32 on disk,
    loads back as float32 within half a step of each slice, stores again to the same bytes,
    and tampering is still refused."""
    from vidsim2real.io.checkpoint import quantized
    t = torch.randn(3, 4, 64, 128) * torch.tensor([0.01, 1.0, 5.0, 0.0])[None, :, None, None]
    save_checkpoint(tmp_path / "q.pt", {"tex": {"levels.0": quantized(t)}, "n": [quantized(t[0, 0])]})
    back = load_checkpoint(tmp_path / "q.pt")
    got = back["tex"]["levels.0"]
    assert got.dtype == torch.float32 and got.shape == t.shape
    amax = t.abs().amax(dim=(2, 3), keepdim=True)
    assert ((got - t).abs() <= amax / 127 + 1e-12).all()        # per slice: small ones stay exact
    assert got[:, 3].abs().max() == 0 and (got[:, :3] != 0).float().mean() > 0.95
    assert torch.allclose(back["n"][0], t[0, 0], atol=t[0, 0].abs().max().item() / 127)
    again = quantized(got)                                        # a loaded tensor stores to the same bytes
    assert torch.equal(again["int8"], quantized(t)["int8"]) and torch.equal(again["scale"], quantized(t)["scale"])
    assert torch.equal(again["int8"].float() * again["scale"], got)
    raw = torch.load(tmp_path / "q.pt", weights_only=True)
    assert raw["payload"]["tex"]["levels.0"]["int8"].dtype == torch.int8
    raw["payload"]["tex"]["levels.0"]["int8"][0, 1, 0, 0] += 1
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(UserError, match="modified or is corrupt"):
        load_checkpoint(tmp_path / "edited.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('TMPDIR', '/tmp')) / 'pwned'}",))


def test_config_errors(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("max_offset: 10", "max_ofset: 10"))
    rc, _, err = cli("train", bad, "--dry-run")
    assert rc == 2 and "data.max_ofset: unknown key (did you mean 'max_offset'?)" in err
    rc, _, err = cli("train", TINY, "model.dimm=3", "--dry-run")
    assert rc == 2 and "model.dimm" in err and "did you mean 'dim'" in err
    rc, _, err = cli("train", TINY, "model.dim=big", "--dry-run")
    assert rc == 2 and "model.dim: expected an integer" in err
    rc, _, err = cli("train", TINY, "model.type=munitt", "--dry-run")
    assert rc == 2 and "model.type" in err and "did you mean 'munit'" in err
    rc, _, err = cli("train", TINY, "size=[62,64]", "--dry-run")
    assert rc == 2 and "divisible" in err
    rc, _, err = cli("train", TINY, "steps", "--dry-run")
    assert rc == 2 and "key=value" in err
    rc, _, err = cli("train", TINY, "model.type=oneway", "model.recolour=true", "model.residual=true", "--dry-run")
    assert rc == 2 and "model.recolour" in err and "model.residual" in err
    rc, _, err = cli("train", TINY, "model.type=oneway", "model.recolour=true", "model.recolour_sigma=0", "--dry-run")
    assert rc == 2 and "model.recolour_sigma" in err
    rc, _, err = cli("train", TINY, "model.recolour=true", "--dry-run")
    assert rc == 2 and "model.recolour: only the oneway model" in err
    rc, out, err = cli("train", TINY, "model.dim=12", "steps=7", "--dry-run")
    assert rc == 0 and yaml.safe_load(out)["model"]["dim"] == 12 and yaml.safe_load(out)["steps"] == 7
    assert yaml.safe_load(out)["data"]["scenes"] == [str((SCENES / "liver_edge_breathing.yaml").resolve())]


def test_nan_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path, real_frames, cli):
    cfg_args = [f"run_dir={tmp_path / 'run'}", f"data.real.paths=[{real_frames}]", "data.real.surrogate_scenes=0",
                "log.tensorboard=false", "log.checkpoint_every=1", "optim.lr=1e12", "steps=30"]
    rc, out, err = cli("train", TINY, *cfg_args, "--no-progress")
    assert rc == 3, (out, err)
    assert "non-finite loss" in err and "last good checkpoint kept" in err and "Traceback" not in err
    p = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in p["model"].values() if v.is_floating_point())


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigint_saves_and_exits(tmp_path, real_frames):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "vidsim2real", "train", str(TINY), f"run_dir={run}", f"data.real.paths=[{real_frames}]",
            "data.real.surrogate_scenes=0", "log.tensorboard=false", "steps=100000", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():   # training is running
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted: saved" in out
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 10 <= step < 100000 and f"step {step}" in out


def test_ddp_gloo_two_processes(tmp_path, real_frames):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidsim2real",
            "train", str(TINY), f"run_dir={run}", f"data.real.paths=[{real_frames}]", "data.real.surrogate_scenes=0",
            "log.tensorboard=false", "steps=3", "--no-progress"]
    r = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ranks in sync" in r.stdout
    p = load_checkpoint(run / "checkpoints" / "last.pt")
    assert p["step"] == 3 and len(p["rng"]) == 2       # every rank's RNG state, for exact resume
    assert p["rng"][0]["sampler"] != p["rng"][1]["sampler"]   # ranks draw different data


def test_fit_textures_trains_only_the_new_scene_textures(tmp_path, real_frames, cli):
    from vidsim2real.train.loop import train
    cfg = tiny_cfg(tmp_path, real_frames, "steps=2")
    model = train(cfg, progress=False).model
    # make every trained texel recognisable (2 steps barely move them from the seed's noise)
    p = load_checkpoint(model)
    from vidsim2real.io.checkpoint import quantized            # stored as a slim model.pt stores texels
    p["textures"]["openhelp"] = {k: quantized(v + 0.5) if ".levels." in k else v
                                 for k, v in p["textures"]["openhelp"].items()}
    save_checkpoint(model, p)
    d = yaml.safe_load((SCENES / "liver_overview.yaml").read_text())
    d["anatomy"] = "patient2"
    for o in d["objects"]:
        o["mesh"] = str(SCENES / o["mesh"])
    novel = d["objects"][-1]
    novel["class_name"], novel["class_id"] = "novel_tissue", 99      # a class the checkpoint never saw
    new_scene = tmp_path / "patient2.yaml"
    new_scene.write_text(yaml.safe_dump(d))
    out = tmp_path / "fitted.pt"
    rc, stdout, err = cli("fit-textures", model, new_scene, "--steps", "3", "-o", out, "--real", real_frames,
                          "--device", "cpu")
    assert rc == 0, err
    old, new = load_checkpoint(model), load_checkpoint(out)
    assert set(new["textures"]) == {"openhelp", "patient2"}
    for k in old["model"]:
        assert torch.equal(old["model"][k], new["model"][k]), k          # translator frozen
    for k in old["textures"]["openhelp"]:
        assert torch.equal(old["textures"]["openhelp"][k], new["textures"]["openhelp"][k])
    from vidsim2real.texture import TextureConfig, TextureSet
    from vidsim2real.scene import load_scene
    fresh = TextureSet.for_scene(load_scene(new_scene), TextureConfig(**new["texture_config"]), seed=cfg.seed)
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, new["textures"]["patient2"][k])]
    assert changed, "the new scene's textures did not train"
    # known classes start from the checkpoint's texture of that class; a class neither the
    # checkpoint nor any real label map has keeps a plain (flat, unfitted) texture: no stripes
    assert "liver <- openhelp/liver" in stdout and novel["name"] + " <-" not in stdout
    assert "novel_tissue (99)" in stdout and "plain texture" in stdout
    fitted, donor, init = new["textures"]["patient2"], old["textures"]["openhelp"], fresh.state_dict()

    def dist(a, b, obj):
        keys = [k for k in a if k.startswith(f"textures.{obj}.levels.")]
        return sum(float((a[k].float() - b[k].float()).norm()) for k in keys)
    assert dist(fitted, donor, "liver") < 0.5 * dist(fitted, init, "liver")
    levels = sorted(k for k in fitted if k.startswith(f"textures.{novel['name']}.levels."))
    assert not any(fitted[k].any() for k in levels[:-1])
    coarse = fitted[levels[-1]].float()
    assert coarse.abs().sum() > 0 and torch.equal(coarse, coarse[:1, :, :1, :1].expand_as(coarse))
    assert new["texture_meta"]["patient2"]["classes"]["liver"] == "liver"
    rc, _, err = cli("fit-textures", tmp_path / "missing.pt", new_scene)
    assert rc == 2 and "checkpoint not found" in err


def test_crops_of_larger_renders_keep_exact_correspondences(tmp_path, real_frames):
    from vidsim2real.raster import warp
    from vidsim2real.layout import nhwc_to_nchw
    from vidsim2real.train.data import gather_items
    cfg = tiny_cfg(tmp_path, real_frames, "data.render_size=[96,80]")
    trainer, sampler, real = make_trainer(cfg)
    b = sampler.batch(2, real)
    assert b.sim1.shape == (2, 3, 64, 64) and b.real.shape == (2, 3, 64, 64)
    p1, p2 = gather_items(b.views1, "rest_positions", 2), gather_items(b.views2, "rest_positions", 2)
    assert p1.shape == (2, 64, 64, 3)
    assert b.uv12.shape == (2, 64, 64, 2)
    assert b.valid12.float().mean() > 0.2
    for i in range(2):  # view 2's rest positions warped into view 1 equal view 1's where valid
        w2 = warp(nhwc_to_nchw(p2[i:i + 1]), b.uv12[i:i + 1])[0].permute(1, 2, 0)
        v = b.valid12[i]
        err = (p1[i] - w2).norm(dim=-1)[v]
        assert err.median() < 2e-3, err.median()
    # a crop is the same pixels as the full render's window (rendered alone)
    from vidsim2real.render import Renderer
    item = b.views1[0].items[0]
    r = sampler.bank.renderers[0]
    full = Renderer(r.scene, size=(96, 80)).render([b.views1[0].buf.frames[0]])
    x0 = int(-b.views1[0].buf.fragments.K[0, 0, 2] + full.fragments.K[0, 0, 2])
    y0 = int(-b.views1[0].buf.fragments.K[0, 1, 2] + full.fragments.K[0, 1, 2])
    crop = full.sim_rgb[0, y0:y0 + 64, x0:x0 + 64]
    assert (crop - (b.sim1[item].permute(1, 2, 0) + 1) / 2).abs().max() < 2e-3
    assert trainer.training_step(b)["total_g"] > 0


def test_sim_render_matches_the_frames_recorded_before_the_refactor():
    """The sim render at fixed exposure 1 is what the code before the architecture refactor
    rendered (tests/data/pre_refactor_frames.npz: 3 frames of two scenes at 64², C++
    rasterizer, uint8)."""
    import numpy as np
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.scene.scene import Exposure
    ref = np.load(REPO / "tests/data/pre_refactor_frames.npz")
    for name in ("liver_edge_breathing", "instrument_pass"):
        r = Renderer(load_scene(SCENES / f"{name}.yaml"), size=(64, 64), backend="cpu",
                     exposure=Exposure(mode="fixed", value=1.0))
        with torch.no_grad():
            got = (r.render([0, 17, 40]).sim_rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8).astype(int)
        diff = np.abs(got - ref[f"{name}__sim"].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (name, diff.max(), diff.mean())


@pytest.mark.parametrize("ckpt", SHIPPED)
def test_shipped_checkpoints_translate_the_recorded_frames(ckpt):
    """Each shipped checkpoint loads and translates to the frames recorded when it was shipped
    (tests/recorded.py: 3 frames of two scenes at 64², style seed 3, default exposure)."""
    import numpy as np
    from recorded import RECORD, translate_recorded
    ref = np.load(RECORD)
    for key, got in translate_recorded(ckpt).items():
        diff = np.abs(got.astype(int) - ref[key].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (key, diff.max(), diff.mean())


def test_init_from_starts_a_run_from_another_runs_weights(tmp_path, real_frames, cli):
    """Fine-tuning: a one-way run started from a MUNIT run's slim model keeps every matching
    weight and texel (the MUNIT sim->real path is the one-way generator); fresh modules (the
    camera model) keep their initialisation; a checkpoint of another architecture is refused."""
    from vidsim2real.train.loop import train
    src = train(tiny_cfg(tmp_path / "a", real_frames, "steps=2"), progress=False).model
    b = tiny_cfg(tmp_path / "b", real_frames, "steps=0", f"init_from={src}", "model.type=oneway", "model.camera=true")
    run_b = train(b, progress=False)
    got, got_model = load_checkpoint(run_b.last), run_b.model
    old = load_checkpoint(src)
    assert old["model"] and all(torch.equal(v.float(), got["model"][k]) for k, v in old["model"].items())
    assert got["model"]["camera.vignette_logit"].item() == -4.0          # not in the source: fresh
    for k, v in old["textures"]["openhelp"].items():
        assert torch.equal(v.float(), got["textures"]["openhelp"][k].float()), k
    # refined textures (twice the resolution, one level more): the old levels become the coarser
    # ones, the new finest level starts at zero, so every sampled feature is unchanged
    r = tiny_cfg(tmp_path / "r", real_frames, "steps=0", f"init_from={src}", "texture.resolution=32", "texture.levels=3")
    refined = load_checkpoint(train(r, progress=False).last)["textures"]["openhelp"]
    for k, v in old["textures"]["openhelp"].items():
        if ".levels." in k:
            name, i = k.split(".")[1], int(k.rsplit(".", 1)[1])
            assert torch.equal(v.float(), refined[f"textures.{name}.levels.{i + 1}"].float()), k
            assert not refined[f"textures.{name}.levels.0"].any()
    c = tiny_cfg(tmp_path / "c", real_frames, "steps=0", f"init_from={src}", "model.type=cyclegan", "model.dim=4",
                 "model.dis_dim=4")
    with pytest.raises(UserError, match="no network weight matches") as exc:
        train(c, progress=False)
    assert exc.value.field == "init_from"
    with pytest.raises(UserError, match="no such checkpoint") as exc:
        train(tiny_cfg(tmp_path / "d", real_frames, f"init_from={tmp_path / 'missing.pt'}"), progress=False)
    assert exc.value.field == "init_from"
    # a fine-tuned model fits textures even where its starting checkpoint is gone
    Path(src).unlink()
    rc, _, err = cli("fit-textures", got_model, SCENES / "liver_edge_breathing.yaml", "--steps", "1", "-o",
                     tmp_path / "fit.pt", "--real", real_frames, "--device", "cpu")
    assert rc == 0, err


def test_errors_come_before_any_work(tmp_path, cli):
    """A typo in what a run loads is reported before random scenes or a surrogate set are
    written (minutes with the shipped configs), naming the option the user typed."""
    cfg = REPO / "configs" / "train" / "cpu_small.yaml"     # 24 random scenes + 600 surrogate frames first
    run = tmp_path / "run"
    cases = [(f"init_from={tmp_path / 'missing.pt'}", "init_from: no such checkpoint"),
             (f"data.real.paths=[{tmp_path / 'nowhere'}]", "data.real.paths[0]: not found"),
             (f"data.scenes=[{tmp_path / 'none.yaml'}]", "data.scenes[0]: not found")]
    for override, message in cases:
        rc, out, err = cli("train", cfg, f"run_dir={run}", override, "--no-progress")
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not run.exists(), "something was written before the error"
    # real frames whose label maps do not fit (the detail loss reads them): refused by name
    import cv2
    import numpy as np
    (tmp_path / "set" / "frames").mkdir(parents=True)
    (tmp_path / "set" / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "set" / "frames" / "f.png"), np.full((48, 64, 3), 128, np.uint8))
    for lab, message in ((np.zeros((48, 32), np.uint8), "label map is 32x48, its frame 64x48"),
                         (np.full((48, 64), 42, np.uint8), "class id(s) 42 are in no training scene")):
        cv2.imwrite(str(tmp_path / "set" / "labels" / "f.png"), lab)
        rc, _, err = cli("train", cfg, f"run_dir={run}", f"data.real.paths=[{tmp_path / 'set' / 'frames'}]",
                         "data.random_scenes.count=0", "loss.detail=1", "--no-progress")
        assert rc == 2 and f"{tmp_path / 'set' / 'labels' / 'f.png'}: labels: {message}" in err, err
        assert len(err.strip().splitlines()) == 1 and not run.exists(), err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    rc, _, err = cli("train", cfg, f"run_dir={run}", f"init_from={garbage}", "--no-progress")
    assert rc == 2 and str(garbage) in err and not run.exists(), err
    rc, _, err = cli("fit-textures", REPO / "checkpoints" / "cpu_small.pt", SCENES / "liver_edge_breathing.yaml",
                     "--real", tmp_path / "missing", "-o", tmp_path / "fit.pt")
    assert rc == 2 and f"{tmp_path / 'missing'}: --real: not found" in err, err
    assert not (tmp_path / "fit").exists() and not (tmp_path / "fit.pt").exists()
