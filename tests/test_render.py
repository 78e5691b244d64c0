"""Sim render, G-buffers, MP4 output: determinism, labels, shading physics, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import SCENES, approach_scene, mini_scene_dict, write_yaml
from vidsim2real.io.video import read_video, video_info
from vidsim2real.render import Renderer
from vidsim2real.scene import load_scene
from vidsim2real.scene.scene import Lighting
from vidsim2real.shading import linear_to_srgb, shade, srgb_to_linear
from vidsim2real.texture import TextureConfig, TextureSet


def test_render_is_deterministic_and_backend_independent():
    scene = load_scene(SCENES / "instrument_pass.yaml")
    ts = TextureSet.for_scene(scene, TextureConfig(channels=4, resolution=16, levels=2), seed=3)
    with torch.no_grad():
        a = Renderer(scene, size=(96, 64), backend="cpu").render([10, 70], textures=ts)
        b = Renderer(scene, size=(96, 64), backend="cpu").render([10, 70], textures=ts)
        c = Renderer(scene, size=(96, 64), backend="torch").render([10, 70], textures=ts)
    for x in (b, c):
        assert torch.equal(a.sim_rgb, x.sim_rgb)
        assert torch.equal(a.labels, x.labels)
    assert torch.equal(a.features, b.features)
    # the fused texture kernel and its grid_sample reference agree to float rounding
    torch.testing.assert_close(a.features, c.features, atol=1e-6, rtol=1e-5)


def test_labels_match_objects_and_instrument_occludes():
    scene = load_scene(SCENES / "instrument_pass.yaml")
    r = Renderer(scene, size=(128, 128))
    buf = r.gbuffer(list(range(0, 125, 20)))
    p2f = buf.face_ids
    expect_obj = torch.where(p2f >= 0, torch.as_tensor(scene.face_object)[p2f.clamp(min=0)], torch.full_like(p2f, -1))
    assert torch.equal(buf.object_ids, expect_obj)
    cls = torch.as_tensor(scene.object_class)
    assert torch.equal(buf.labels, torch.where(p2f >= 0, cls[expect_obj.clamp(min=0)], torch.zeros_like(p2f)))
    assert (buf.labels == 7).any(), "the instrument is in view"
    # where the instrument is seen, everything else there is behind it: remove it and the depth grows
    inst = [i for i, o in enumerate(scene.objects) if o.class_name == "instrument"]
    keep = ~torch.isin(torch.as_tensor(scene.face_object), torch.tensor(inst))
    from vidsim2real.raster import rasterize
    K, w2c = r.cameras(buf.frames)
    verts = torch.stack([r.geometry(f)[0] for f in buf.frames])
    behind = rasterize(verts, r.faces[keep], K, w2c, (128, 128), r.intrinsics.near, r.intrinsics.far)
    m = (buf.labels == 7) & behind.mask
    assert m.sum() > 50
    assert (behind.zbuf[m] > buf.depth[m]).all()


def test_no_holes_or_speckles_in_a_closed_view():
    scene = load_scene(SCENES / "liver_overview.yaml")
    buf = Renderer(scene, size=(192, 192)).gbuffer([75])
    m = buf.mask[0].numpy().astype(np.uint8)
    # background pixels completely surrounded by surface (holes) and isolated surface pixels
    n_bg = cv2.filter2D(1 - m, -1, np.ones((3, 3)), borderType=cv2.BORDER_CONSTANT)
    assert not ((m == 0) & (n_bg == 1)).any(), "isolated background pixels (holes)"
    n_fg = cv2.filter2D(m, -1, np.ones((3, 3)), borderType=cv2.BORDER_CONSTANT)
    assert not ((m == 1) & (n_fg == 1)).any(), "isolated surface pixels (speckles)"


def test_shading_physics():
    light = Lighting(intensity=1.0, falloff=(50.0, 0.0, 0.02), ambient=0.0, specular=0.0)
    alb = torch.full((1, 1, 3, 3), 0.5)
    pos = torch.tensor([[[[0, 0, 0.05], [0, 0, 0.10], [0.0, 0.0, 0.05]]]])
    n = torch.tensor([[[[0, 0, -1.0], [0, 0, -1.0], [1.0, 0, -1.0]]]])
    out = shade(alb, pos, n, torch.ones(1, 1, 3, dtype=torch.bool), torch.zeros(1, 3), light)[0, 0, :, 0]
    assert out[0] > out[1] > 0                     # farther is darker
    assert float(out[0] / out[1]) == pytest.approx((50 * 0.01 + 0.02) / (50 * 0.0025 + 0.02), rel=1e-5)
    assert float(out[2]) == pytest.approx(float(out[0]) / 2 ** 0.5, rel=1e-5)    # Lambert: 45 degrees
    flipped = shade(alb, pos, -n, torch.ones(1, 1, 3, dtype=torch.bool), torch.zeros(1, 3), light)[0, 0, :, 0]
    torch.testing.assert_close(flipped, out)       # two-sided (inside of the abdominal wall)
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-6, rtol=0)
    assert float(linear_to_srgb(torch.tensor(0.5))) == pytest.approx(0.7354, abs=1e-3)


def test_render_cli_writes_mp4_sidecar_and_gbuffer(tmp_path, cli):
    out = tmp_path / "v.mp4"
    gb = tmp_path / "gb"
    rc, stdout, err = cli("render", SCENES / "liver_edge_breathing.yaml", "-o", out, "--frames", "20:30",
                          "--size", "96x64", "--save-gbuffer", gb, "--batch", "3")
    assert rc == 0, err
    n, fps, size = video_info(out)
    assert (n, fps, size) == (10, 25.0, (96, 64))
    frames = read_video(out)
    assert frames.shape == (10, 64, 96, 3) and frames.mean() > 20
    side = json.loads((tmp_path / "v.mp4.json").read_text())
    assert side["frames"] == [20, 30] and side["kind"] == "sim" and side["width"] == 96
    assert not list(tmp_path.glob(".v.mp4*")), "no temporary file left behind"
    # G-buffer layout, named by the scene's frame index
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")
    r = Renderer(scene, size=(96, 64))
    buf = r.gbuffer([27])
    face = np.load(gb / "000027_face.npy")
    depth = np.load(gb / "000027_depth.npy")
    label = cv2.imread(str(gb / "000027_label.png"), cv2.IMREAD_UNCHANGED)
    assert face.dtype == np.int32 and face.shape == (64, 96) and depth.dtype == np.float32
    np.testing.assert_array_equal(face, buf.face_ids[0].numpy())
    np.testing.assert_array_equal(depth, buf.depth[0].numpy())
    np.testing.assert_array_equal(label, buf.labels[0].numpy())
    assert (depth[face < 0] == 0).all() and (depth[face >= 0] > 0).all()
    cams = json.loads((gb / "cameras.json").read_text())
    assert sorted(cams["frames"]) == [f"{t:06d}" for t in range(20, 30)]
    c = cams["frames"]["000027"]
    np.testing.assert_allclose(c["world_to_camera"], scene.world_to_camera([27])[0], atol=1e-12)
    np.testing.assert_allclose(c["K"], scene.camera(96, 64).K())
    assert (c["width"], c["height"]) == (96, 64)
    # the frame pixel that sees a vertex-interpolated point projects through K and w2c to itself
    yx = np.argwhere(face >= 0)[len(np.argwhere(face >= 0)) // 2]
    P = buf.positions[0, yx[0], yx[1]].double().numpy()
    pc = np.asarray(c["world_to_camera"])[:3, :3] @ P + np.asarray(c["world_to_camera"])[:3, 3]
    uv = (np.asarray(c["K"]) @ pc)[:2] / pc[2]
    np.testing.assert_allclose(uv, [yx[1], yx[0]], atol=1e-3)
    assert pc[2] == pytest.approx(float(depth[yx[0], yx[1]]), rel=1e-5)


def test_interrupted_render_resumes_after_the_last_segment(tmp_path, cli, monkeypatch):
    """Ctrl-C mid-video keeps finished segments; the rerun renders only the rest, and the final
    MP4 decodes to exactly the frames of a one-pass render."""
    scene = SCENES / "liver_edge_breathing.yaml"
    args = ["--frames", "0:10", "--size", "64x48", "--batch", "2", "--segment-frames", "4"]
    ref = tmp_path / "ref.mp4"
    assert cli("render", scene, "-o", ref, *args)[0] == 0
    calls = []
    real_render = Renderer.render

    def flaky(self, frames, *a, **kw):
        calls.append(list(frames))
        if len(calls) == 4 and not hasattr(flaky, "fired"):
            flaky.fired = True
            raise KeyboardInterrupt
        return real_render(self, frames, *a, **kw)

    monkeypatch.setattr(Renderer, "render", flaky)
    out, gb = tmp_path / "v.mp4", tmp_path / "gb"
    rc, _, err = cli("render", scene, "-o", out, *args, "--save-gbuffer", gb)
    assert rc == 130 and "interrupted" in err
    assert not out.exists() and sorted(p.name for p in (tmp_path / "v.mp4.parts").glob("*.mkv")) == ["00000.mkv"]
    calls.clear()
    rc, stdout, err = cli("render", scene, "-o", out, *args, "--save-gbuffer", gb)
    assert rc == 0, err
    assert "resuming" in stdout and calls == [[4, 5], [6, 7], [8, 9]]
    assert not (tmp_path / "v.mp4.parts").exists()
    a, b = read_video(out), read_video(ref)
    assert a.shape == b.shape == (10, 48, 64, 3)
    np.testing.assert_array_equal(a, b)
    cams = json.loads((gb / "cameras.json").read_text())
    assert sorted(cams["frames"]) == [f"{t:06d}" for t in range(10)]
    # a different job in the same place starts over instead of mixing videos
    out.unlink()                              # (a finished video is never replaced without --force)
    (tmp_path / "v.mp4.parts").mkdir()
    (tmp_path / "v.mp4.parts" / "00000.mkv").write_bytes(b"stale")
    calls.clear()
    assert cli("render", scene, "-o", out, "--frames", "0:6", "--size", "64x48", "--segment-frames", "4")[0] == 0
    assert read_video(out).shape[0] == 6 and calls[0][0] == 0


@pytest.mark.parametrize("args,field", [
    (["--size", "95x64"], "--size"), (["--size", "big"], "--size"), (["--frames", "10:5"], "--frames"),
    (["--frames", "0:99999"], "--frames"), (["--batch", "0"], "--batch")])
def test_render_cli_bad_arguments(tmp_path, cli, args, field):
    rc, _, err = cli("render", SCENES / "liver_edge_breathing.yaml", "-o", tmp_path / "v.mp4", *args)
    assert rc == 2 and field in err and "Traceback" not in err
    assert not (tmp_path / "v.mp4").exists()


def test_render_refuses_camera_inside_organ(tmp_path, cli):
    d = mini_scene_dict(tmp_path)
    d["trajectory"]["keyframes"] = [{"time": 0, "position": [0, 0, 0], "look_at": [0, 1, 0], "up": [0, 0, 1]}]
    rc, _, err = cli("render", write_yaml(tmp_path / "in.yaml", d), "-o", tmp_path / "v.mp4")
    assert rc == 2 and "inside objects[0]" in err
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.cuda
def test_cuda_render_matches_cpu_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    scene = load_scene(SCENES / "instrument_pass.yaml")
    ts = TextureSet.for_scene(scene, TextureConfig(channels=4, resolution=16, levels=2), seed=3)
    with torch.no_grad():
        a = Renderer(scene, size=(96, 64)).render([10, 70], textures=ts)
        b = Renderer(scene, size=(96, 64), device="cuda").render([10, 70], textures=ts.cuda())
    assert torch.equal(a.face_ids, b.face_ids.cpu())
    torch.testing.assert_close(a.sim_rgb, b.sim_rgb.cpu(), atol=1e-4, rtol=0)
    torch.testing.assert_close(a.features, b.features.cpu(), atol=1e-4, rtol=0)


def test_auto_exposure_keeps_close_ups_from_blowing_out(tmp_path):
    """A close-up saturates at fixed exposure 1 (what the sim did before exposure control) but
    not with the default auto exposure; the exposure adapts smoothly (no flicker) and a frame
    renders the same whether alone or in a batch."""
    auto = Renderer(load_scene(approach_scene(tmp_path)), size=(64, 64))
    fixed = Renderer(load_scene(approach_scene(tmp_path, 1.0)), size=(64, 64))
    assert auto.scene.exposure.mode == "auto" and fixed.scene.exposure.mode == "fixed"

    def saturated(r, t):          # fraction of the surface with a clipped channel
        buf = r.render([t])
        return float((buf.sim_rgb[0].max(-1).values > 0.98)[buf.mask[0]].float().mean())

    assert saturated(fixed, 49) > 0.8          # the blown-out disc
    assert saturated(auto, 49) < 0.45          # the exposure lags a fast approach a little
    assert saturated(auto, 35) < 0.2
    e = auto.exposure(range(50)).numpy()
    assert e[-1] < 0.5 * e[0]                                   # darker as the scope approaches
    assert np.abs(np.diff(np.log(e))).max() < 0.1               # at most ~10 % per frame

    def surface_mean(r, t):
        buf = r.render([t])
        return float(buf.sim_rgb[0][buf.mask[0]].mean())

    lum = [surface_mean(auto, t) for t in range(0, 50, 7)]
    assert max(lum) / min(lum) < 1.5                            # tissue brightness held roughly constant
    assert surface_mean(fixed, 49) / surface_mean(fixed, 0) > 1.8
    alone = auto.render([33]).sim_rgb
    fresh = Renderer(load_scene(approach_scene(tmp_path)), size=(64, 64))
    torch.testing.assert_close(fresh.render([30, 31, 32, 33]).sim_rgb[3:], alone, rtol=0, atol=0)


def test_protect_exposure_lowers_only_the_frames_whose_highlights_pass_its_level(tmp_path):
    """Exposure mode "protect" (a model's model.exposure): exposure 1 while the frame's metered
    highlight stays under the level, lowered smoothly as the scope comes close so the
    highlight sits at the level, never above 1; re-exposing another render to it
    (Renderer.at_exposure) gives the protect render itself."""
    from vidsim2real.scene.scene import Exposure
    scene = load_scene(approach_scene(tmp_path))
    fixed = Renderer(scene, size=(64, 64), exposure=Exposure("fixed", 1.0))
    high = fixed.metered(49)[:, 1]
    level = float(np.quantile(high, 0.5))                  # the closer half of the approach passes it
    spec = Exposure("protect", value=level, smoothing=0.0)
    protect = Renderer(scene, size=(64, 64), exposure=spec)
    e = protect.exposure(range(50)).numpy()
    np.testing.assert_allclose(e, np.minimum(1.0, level / high), rtol=1e-5)
    assert (e[high <= level] == 1.0).all() and e[-1] < 0.5
    smooth = Renderer(scene, size=(64, 64), exposure=Exposure("protect", value=level)).exposure(range(50)).numpy()
    assert (smooth <= 1.0).all() and smooth[0] == 1.0 and np.abs(np.diff(np.log(smooth))).max() < 0.1
    buf, ref = fixed.render([10, 49]), protect.render([10, 49])
    assert torch.equal(ref.sim_rgb[0], buf.sim_rgb[0])    # a far frame: exposure 1
    sim, light = fixed.at_exposure(buf, spec)
    torch.testing.assert_close(light, ref.light, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sim, ref.sim_rgb, atol=1e-5, rtol=0)
    clipped = [float((x[1].max(-1).values > 0.98)[buf.mask[1]].float().mean()) for x in (buf.sim_rgb, sim)]
    assert clipped[1] < clipped[0] - 0.3                   # the close-up burns out over less of the surface


def test_exposure_in_scene_files(tmp_path, cli):
    s = load_scene(approach_scene(tmp_path, {"mode": "auto", "target": 0.3, "smoothing": 0.0}))
    assert s.exposure.target == 0.3 and s.exposure.smoothing == 0.0
    s = load_scene(approach_scene(tmp_path, {"value": 0.5}))
    assert s.exposure.mode == "fixed" and s.exposure.value == 0.5
    r = Renderer(s, size=(32, 32))
    assert torch.equal(r.exposure([0, 49]), torch.tensor([0.5, 0.5]))
    rc, _, err = cli("scene", "check", approach_scene(tmp_path, "bright"))
    assert rc == 2 and "camera.exposure: expected 'auto', a number or a mapping" in err
    rc, _, err = cli("scene", "check", approach_scene(tmp_path, {"mode": "auto", "min": 2, "max": 1}))
    assert rc == 2 and "camera.exposure.min" in err
    rc, _, err = cli("scene", "check", approach_scene(tmp_path, -1))
    assert rc == 2 and "camera.exposure: must be > 0" in err
