"""Surrogate domain (determinism, view consistency) and real-footage loader (bad files, crops)."""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import SCENES
from vidsim2real.domains.noise import fbm, perlin, worley
from vidsim2real.domains.real import RealFrames, circular_crop
from vidsim2real.domains.surrogate import SurrogateRenderer, tissue_of
from vidsim2real.errors import UserError
from vidsim2real.io.video import VideoWriter
from vidsim2real.raster import correspondences
from vidsim2real.scene import load_scene


@pytest.fixture(scope="module")
def breathing():
    return load_scene(SCENES / "liver_edge_breathing.yaml")


def test_noise_is_deterministic_and_seeded():
    p = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 10
    assert torch.equal(perlin(p, 3), perlin(p.clone(), 3))
    assert not torch.equal(perlin(p, 3), perlin(p, 4))
    assert perlin(torch.tensor([[1.0, 2.0, 3.0]]), 0).abs().item() < 1e-6   # zero on the lattice
    n = fbm(p, 1)
    assert n.abs().max() <= 1.0 and n.std() > 0.05
    f1, f2, _ = worley(p, 2)
    assert (f1 <= f2).all() and (f1 >= 0).all()


def test_surrogate_is_deterministic_per_seed(breathing):
    a = SurrogateRenderer(breathing, size=(64, 64), patient_seed=1, video_seed=2)
    b = SurrogateRenderer(breathing, size=(64, 64), patient_seed=1, video_seed=2)
    c = SurrogateRenderer(breathing, size=(64, 64), patient_seed=9, video_seed=2)
    with torch.no_grad():
        ia, _ = a.render([10, 60])
        ib, _ = b.render([10, 60])
        ic, _ = c.render([10, 60])
    assert torch.equal(ia, ib)
    assert (ia - ic).abs().mean() > 0.01          # another patient looks different
    assert not torch.equal(ia[0], ia[1])


def test_surrogate_albedo_is_view_consistent(breathing):
    sr = SurrogateRenderer(breathing, size=(128, 128), patient_seed=3, video_seed=4)
    r = sr.renderer
    with torch.no_grad():
        bufs = [r.gbuffer([f]) for f in (5, 55)]
        albs = [sr.materials(b)[0] for b in bufs]
    # 1. albedo is a function of the rest-pose surface point alone: recomputed here from
    #    (face, barycentrics) and the rest mesh, independently of the frame's deformation
    faces = torch.as_tensor(breathing.faces)
    rest = torch.as_tensor(breathing.rest_vertices, dtype=torch.float32)
    for buf, alb in zip(bufs, albs):
        m = buf.mask[0]
        p = (rest[faces[buf.face_ids[0][m]]] * buf.fragments.bary[0][m][..., None]).sum(1)
        obj = buf.object_ids[0][m]
        for i, o in enumerate(breathing.objects):
            sel = obj == i
            if sel.any():
                expect = sr.appearance.material(p[sel], sr.tissues[i], o.color).albedo.clamp(0, 1)
                torch.testing.assert_close(alb[0][m][sel], expect, atol=2e-4, rtol=1e-3)
    # 2. the same surface point seen from two frames (camera moved, liver breathed) has the same
    #    albedo: warp frame b's albedo into frame a with the exact GT correspondences
    a, b = bufs
    corr = correspondences(a.fragments, b.fragments, r.geometry(55)[0], r.faces)
    g = corr.uv / 127 * 2 - 1
    warped = torch.nn.functional.grid_sample(albs[1].permute(0, 3, 1, 2), g, align_corners=True).permute(0, 2, 3, 1)
    v = corr.valid[0]
    assert v.sum() > 1000
    err = (warped[0] - albs[0][0]).abs().max(-1).values[v]
    assert err.median() < 0.1 * albs[0][0][v].std()
    # ...while the shaded frames differ (the scope light moved): consistency is of the tissue
    with torch.no_grad():
        fa, _ = sr.render([5])
        fb, _ = sr.render([55])
    wf = torch.nn.functional.grid_sample(fb.permute(0, 3, 1, 2), g, align_corners=True).permute(0, 2, 3, 1)
    assert (wf[0] - fa[0]).abs().max(-1).values[v].median() > err.median()


def test_tissue_models_cover_bundled_classes(breathing):
    kinds = {tissue_of(o.class_name) for o in breathing.objects}
    assert {"liver", "wall", "bowel", "pancreas", "spleen"} <= kinds
    assert tissue_of("instrument") == "instrument" and tissue_of("greater omentum") == "fat"


def _write_img(path, seed):
    rng = np.random.default_rng(seed)
    img = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)


def test_loader_over_mixed_folder_with_corrupt_files(tmp_path, capsys):
    d = tmp_path / "real"
    (d / "sub").mkdir(parents=True)
    _write_img(d / "a.png", 0)
    _write_img(d / "sub" / "b.jpg", 1)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42garbage" * 10)
    (d / "notes.txt").write_text("ignored")
    with VideoWriter(d / "clip.mp4", 10, (64, 48)) as vw:
        vw.write(np.random.default_rng(2).random((12, 48, 64, 3)))
    ds = RealFrames([d], size=(32, 24), stride=3, seed=0)
    err = capsys.readouterr().err
    assert err.count("broken.mp4") == 1 and "skipped" in err
    assert len(ds) == 3 + 4                 # 3 images (one broken) + 12 video frames / stride 3
    batch = ds.sample(16)                   # touches the broken image: reported once, skipped
    assert batch.shape == (16, 3, 24, 32) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    for _ in range(5):
        ds[0], ds[1], ds[2]
    err = capsys.readouterr().err
    assert err.count("broken.png") == 1


def test_videos_decode_without_imageio_ffmpeg(tmp_path, monkeypatch, capsys):
    """Where imageio-ffmpeg is not installed (the GPU machines' bare images), OpenCV decodes the
    same frames, and a broken video is still reported and skipped."""
    d = tmp_path / "real"
    d.mkdir()
    with VideoWriter(d / "clip.mp4", 10, (64, 48)) as vw:
        vw.write(np.random.default_rng(3).random((9, 48, 64, 3)))
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42garbage" * 10)
    with_ffmpeg = RealFrames([d], size=(32, 24), stride=2, seed=0)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)     # import now raises ImportError
    capsys.readouterr()
    without = RealFrames([d], size=(32, 24), stride=2, seed=0)
    assert "broken.mp4" in capsys.readouterr().err
    assert len(without) == len(with_ffmpeg) == 5
    assert without.video_names == with_ffmpeg.video_names and without.video_sizes == [(48, 64)] * 5
    for a, b in zip(without.video_frames, with_ffmpeg.video_frames):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_loader_crops_have_requested_size_and_resume_state(tmp_path):
    _write_img(tmp_path / "x.png", 3)
    ds = RealFrames([tmp_path / "x.png"], size=(50, 40), resize=60, flip=True, seed=5)
    for _ in range(4):
        assert ds[0].shape == (3, 40, 50)
    state = ds.state()
    a = ds.sample(3)
    ds.load_state(state)
    assert torch.equal(a, ds.sample(3))
    big = RealFrames([tmp_path / "x.png"], size=(300, 200), seed=0)       # upscales small sources
    assert big[0].shape == (3, 200, 300)


def test_loader_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no readable images or videos"):
        RealFrames([tmp_path / "empty"], size=(32, 32))
    with pytest.raises(UserError, match="not found"):
        RealFrames([tmp_path / "nope"], size=(32, 32))


def test_circular_crop():
    img = np.zeros((200, 300, 3), np.uint8)
    cv2.circle(img, (150, 100), 90, (200, 120, 100), -1)
    out = circular_crop(img)
    assert out.shape[0] == out.shape[1] and 110 <= out.shape[0] <= 130
    assert out.min() > 12                   # all inside the scope's field of view
    full = np.full((50, 60, 3), 128, np.uint8)
    assert circular_crop(full).shape == full.shape


def test_surrogate_cli_manifest_and_resume(tmp_path, cli):
    out = tmp_path / "s"
    rc, stdout, err = cli("surrogate", SCENES / "liver_edge_breathing.yaml", "-o", out, "--views", "2",
                          "--size", "48x48", "--seed", "4")
    assert rc == 0, err
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["frames"]) == 2
    files = sorted((out / "frames").glob("*.png"))
    assert len(files) == 2 and cv2.imread(str(files[0])).shape == (48, 48, 3)
    mtime = files[0].stat().st_mtime_ns
    rc, _, err = cli("surrogate", SCENES / "liver_edge_breathing.yaml", "-o", out, "--views", "2",
                     "--size", "48x48", "--seed", "4")
    assert rc == 0 and files[0].stat().st_mtime_ns == mtime          # resumed: nothing re-rendered
    assert len(json.loads((out / "manifest.json").read_text())["frames"]) == 2
    rc, _, err = cli("surrogate", "-o", out)
    assert rc == 2 and "--random-scenes" in err


def test_real_frames_with_label_maps(tmp_path, real_frames):
    """Training reads each real frame's label map (labels/ beside the frames) with the same
    crop and flip; maps of another size or with class ids no scene has are refused naming the
    file; frames without maps come with -1 labels."""
    import cv2
    ds = RealFrames([real_frames], size=(64, 64), resize=64, flip=False, labels=True, known_ids=range(8))
    assert ds.labelled == len(ds) > 0
    x, lab = ds.sample_labelled(3)
    assert x.shape == (3, 3, 64, 64) and lab.shape == (3, 64, 64) and lab.dtype == torch.long
    # the whole frame (crop = frame, no flip): the label crop is the file itself
    frame, got = ds.item(0, labels=True)
    want = cv2.imread(str(ds.label_paths[0]), cv2.IMREAD_UNCHANGED)
    assert torch.equal(got, torch.from_numpy(want).long())
    assert (got > 0).any() and (got == 0).any()
    # flipped crops flip frame and labels together
    flip = RealFrames([real_frames], size=(64, 64), resize=64, flip=True, labels=True, seed=3)
    for _ in range(6):
        f, lab = flip.item(0, labels=True)
        assert torch.equal(lab, got) or torch.equal(lab, got.flip(-1))
        assert torch.allclose(f, frame) or torch.allclose(f, frame.flip(-1))
    # bad maps: another size; a class id outside the scenes'
    bad = tmp_path / "set"
    (bad / "frames").mkdir(parents=True)
    (bad / "labels").mkdir()
    img = cv2.imread(str(ds.images[0]))
    cv2.imwrite(str(bad / "frames" / "a.png"), img)
    cv2.imwrite(str(bad / "labels" / "a.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(UserError, match="label map is 12x10, its frame 64x64") as exc:
        RealFrames([bad / "frames"], size=(64, 64), labels=True)
    assert exc.value.field == "labels" and "a.png" in str(exc.value.file)
    cv2.imwrite(str(bad / "labels" / "a.png"), np.full(img.shape[:2], 9, np.uint8))
    with pytest.raises(UserError, match=r"class id\(s\) 9 are in no training scene"):
        RealFrames([bad / "frames"], size=(64, 64), labels=True, known_ids=range(8))
    (bad / "labels" / "a.png").unlink()
    none = RealFrames([bad / "frames"], size=(32, 32), labels=True, known_ids=range(8))
    assert none.labelled == 0 and bool((none.sample_labelled(2)[1] == -1).all())
