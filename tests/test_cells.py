"""Cell borders evaluated on the surface (texture/cells.py, ``texture.detail_cells``)."""
from __future__ import annotations

import torch

from vidsim2real.texture.cells import (_OFFSETS, BORDER_WIDTHS, DOME, WIDTH, _hash, border_distance, cell_pattern,
                                      cell_slope, object_seed)


def _brute_distance(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Distance (cell units) from points p [N, 3] to their Voronoi cell's wall, against every
    feature point of the 5 x 5 x 5 cubes around each point: the partition written out directly."""
    base = torch.floor(p).long()
    r = torch.arange(-2, 3)
    offs = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    cells = base[:, None] + offs[None]
    feat = cells.double() + torch.stack([_hash(cells, torch.full((len(p), 1), seed), k) for k in range(3)], -1).double()
    d = (feat - p.double()[:, None]).norm(dim=-1)
    i = d.argmin(1)
    c1 = feat[torch.arange(len(p)), i]
    planes = ((p.double()[:, None] - 0.5 * (c1[:, None] + feat)) * (c1[:, None] - feat)).sum(-1) \
        / (c1[:, None] - feat).norm(dim=-1).clamp(min=1e-12)
    planes[torch.arange(len(p)), i] = float("inf")
    return planes.min(1).values


def test_cell_walls_are_the_voronoi_partition_of_jittered_points():
    """border_distance is the exact distance to the nearest wall of the point's cell (checked
    against all feature points of the 125 cubes around it), 0 on a wall and about half a cell
    at most; the same points and seed give the same cells on every call, another seed others."""
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(4000, 3, generator=gen) * 6.0 - 3.0
    size = torch.ones(4000)
    got = border_distance(p, size, torch.full((4000,), 7))
    want = _brute_distance(p, 7).float()
    assert (got - want).abs().quantile(0.995) < 1e-4, (got - want).abs().max()
    assert got.min() >= 0 and got.max() < 1.0 and got.mean() > 0.05
    # metres in, cell units out: the same pattern at another scale
    torch.testing.assert_close(border_distance(p * 0.002, size * 0.002, torch.full((4000,), 7)), got, atol=1e-4, rtol=0)
    torch.testing.assert_close(border_distance(p, size, torch.full((4000,), 7)), got)
    other = border_distance(p, size, torch.full((4000,), 8))
    assert (other - got).abs().mean() > 0.05
    assert object_seed("pancreas") == object_seed("pancreas") != object_seed("stomach")
    assert len(_OFFSETS) == 27


def test_cell_pattern_is_thin_lines_that_average_out_from_afar():
    """On a plane: seen sharply the borders are dark lines over about a third of the area (the
    plane cuts the cells at every size; a wall's middle at 0.6 over the pattern's mean, tissue
    away from walls 0.3 under it); at every footprint the pattern's mean stays 0 (within 0.03)
    and seen through pixels larger than the cells its contrast falls more than fifty-fold, so
    the cells fade instead of aliasing; a footprint of 0 is the unfiltered pattern."""
    gen = torch.Generator().manual_seed(1)
    n = 20000
    xy = torch.rand(n, 2, generator=gen) * 0.05                                     # 5 cm of plane
    pos = torch.cat([xy, torch.full((n, 1), 0.013)], 1)
    size, seed = torch.full((n,), 0.002), torch.full((n,), 3)
    sharp = cell_pattern(pos, torch.zeros(n), size, seed)
    assert 0.25 < float((sharp > 0.15).float().mean()) < 0.45 and float(sharp.max()) > 0.6
    assert float(sharp.min()) < -0.3 and float(sharp.std()) > 0.3
    stds = []
    for foot in (0.0, 0.0005, 0.001, 0.002, 0.008):               # 0 to 4 cells per pixel
        got = cell_pattern(pos, torch.full((n,), foot), size, seed)
        assert abs(float(got.mean())) < 0.03, (foot, float(got.mean()))
        stds.append(float(got.std()))
    assert all(a > b for a, b in zip(stds, stds[1:])) and stds[-1] * 50 < stds[0], stds
    assert WIDTH < 0.1
    # wide borders (rims of bulging lobules): dark over most of the area, bright in the middles
    wide = cell_pattern(pos, torch.zeros(n), size, seed, 0.2)
    assert abs(float(wide.mean())) < 0.03 and float((wide > 0).float().mean()) > 0.5
    d = border_distance(pos, size, seed)
    assert float(wide[d > 0.35].mean()) < -0.4 and float(wide[d < 0.05].mean()) > 0.15


def test_cell_domes_slope_like_their_height_and_fade_from_afar():
    """cell_slope is the gradient of the domes h = height x size x (1 - (1 - d / DOME)^2): on a
    plane it matches the height's central differences (off the cells' ridges), is steepest at
    walls (2 height / DOME), zero on the flat tops, points into the cell, scales with the
    height and not with the cell size, and fades more than tenfold once pixels cover the cells."""
    gen = torch.Generator().manual_seed(2)
    n = 20000
    xy = torch.rand(n, 2, generator=gen) * 0.02
    pos = torch.cat([xy, torch.full((n, 1), 0.007)], 1)
    size, seed, zero = torch.full((n,), 0.002), torch.full((n,), 5), torch.zeros(n)

    def height(p):
        d = border_distance(p, size, seed)
        return 0.1 * 0.002 * (1 - (1 - d / DOME).clamp(min=0) ** 2)

    got = cell_slope(pos, zero, size, seed, 0.1)
    eps = 1e-6
    fd = torch.stack([(height(pos + e) - height(pos - e)) / (2 * eps)
                      for e in (torch.tensor([eps, 0, 0]), torch.tensor([0, eps, 0]))], 1)
    err = (got[:, :2] - fd).norm(dim=1)
    assert err.median() < 1e-3 and (err < 0.02).float().mean() > 0.97, err.quantile(0.97)
    d = border_distance(pos, size, seed)
    mag = got.norm(dim=1)
    assert float(mag.max()) <= 0.1 * 2 / DOME + 1e-5 and float(mag[d < 0.01].mean()) > 0.9 * 0.1 * 2 / DOME
    assert float(mag[d > DOME].abs().max()) == 0.0
    inward = (height(pos + 1e-6 * got / mag.clamp(min=1e-9)[:, None]) - height(pos)) > 0
    assert inward[(mag > 0.05) & (d < 0.3)].float().mean() > 0.97
    torch.testing.assert_close(cell_slope(pos * 2, zero, size * 2, seed, 0.2), 2 * got, atol=1e-5, rtol=1e-4)
    far = cell_slope(pos, torch.full((n,), 0.008), size, seed, 0.1)
    assert float(far.norm(dim=1).mean()) * 10 < float(mag.mean())


def test_bumped_normals_follow_the_rest_pose_slope_under_any_pose():
    """bumped_normals on a plane seen straight on: a height rising along the rest pose's x tilts
    the normal against the world direction that x moved to (a quarter turn about the view
    axis), by the rest slope over the stretch (the world twice as long along x: half the
    tilt); objects of one pixel (no steps) and no slope keep their normals."""
    from vidsim2real.texture import bumped_normals
    H = W = 8
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    rest = torch.stack([xs * 0.001, ys * 0.001, torch.zeros_like(xs)], -1)[None]
    turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    n = torch.tensor([0.0, 0.0, 1.0]).expand(1, H, W, 3)
    ids = torch.zeros(1, H, W, dtype=torch.long)
    slope = torch.tensor([0.2, 0.0, 0.0]).expand(1, H, W, 3)
    for world, tilt in ((rest @ turn.T, torch.tensor([0.0, -0.2, 1.0])),
                        (rest * torch.tensor([2.0, 1.0, 1.0]), torch.tensor([-0.1, 0.0, 1.0]))):
        got = bumped_normals(world, rest, n, ids, slope)
        torch.testing.assert_close(got, (tilt / tilt.norm()).expand(1, H, W, 3))
    assert torch.equal(bumped_normals(rest, rest, n, ids, torch.zeros_like(slope)), n)
    lone = ids.clone()
    lone[0, 3, 3] = 1
    assert torch.equal(bumped_normals(rest, rest, n, lone, slope)[0, 3, 3], n[0, 3, 3])


def test_cell_borders_are_fitted_from_the_real_frames_and_kept(tmp_path, real_frames, caplog):
    """texture.detail_cells: frames rendered with known cells on one class (cells of 8 pixel
    footprints, border gain 0.8, its layer halved) stand for the real ones; a fresh set is
    fitted back: that class gets the cells (size and gain within one grid step; the tiny frames'
    layer is too faint beside them for its gain to be told; fit-textures' test checks that gain),
    every class whose "real" texture is its layer alone keeps no cells (its distance is already
    the least), and the class gets none when left out of texture.detail_cells_classes; the cells
    and layer gain survive the texture set's state (old states load with none) and reach every render through TextureSet.sample; the option needs detail_match."""
    import pytest
    from conftest import Labelled, tiny_cfg, views_as_real

    from vidsim2real.errors import UserError
    from vidsim2real.texture import TextureSet
    from vidsim2real.train.appearance import BUMP_HEIGHTS, CELL_GAINS, CELL_SIZES, layer_gains, match_cells
    from vidsim2real.train.detail_init import class_footprints
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, fit_cells, start_detail
    oneway = ["model.type=oneway", "model.recolour=true", "loss.view_warmup=0"]
    detail = ["texture.detail=true", "texture.detail_resolution=48", "texture.detail_match=true",
              "texture.detail_cells=true"]
    with pytest.raises(UserError, match="texture.detail_cells"):
        tiny_cfg(tmp_path / "b", real_frames, "steps=0", *oneway, "texture.detail=true", "texture.detail_cells=true")
    with pytest.raises(UserError, match="texture.detail_cells_classes.*needs texture.detail_cells"):
        tiny_cfg(tmp_path / "c", real_frames, "steps=0", *oneway, "texture.detail_cells_classes=[liver]")
    with pytest.raises(UserError, match="texture.detail_cells_classes.*list of class names"):
        tiny_cfg(tmp_path / "d", real_frames, "steps=0", *oneway, *detail, "texture.detail_cells_classes=[3]")
    for bad, why in (("0.06", "needs texture.detail_cells"), ("high", "fit or a number"), ("0.9", "fit or a number")):
        extra = ["texture.detail_cells=false"] if why.startswith("needs") else []
        with pytest.raises(UserError, match=f"texture.detail_bumps.*{why}"):
            tiny_cfg(tmp_path / "e", real_frames, "steps=0", *oneway, *detail, *extra, f"texture.detail_bumps={bad}")
    with pytest.raises(UserError, match="texture.detail_cells_width.*must be fit, thin, wide, got 'medium'"):
        tiny_cfg(tmp_path / "g", real_frames, "steps=0", *oneway, *detail, "texture.detail_cells_width=medium")
    with pytest.raises(UserError, match="texture.detail_cells_width.*needs texture.detail_cells"):
        tiny_cfg(tmp_path / "h", real_frames, "steps=0", *oneway, "texture.detail_cells_width=thin")
    with pytest.raises(UserError, match="texture.detail_bumps.*needs steps: 0"):
        tiny_cfg(tmp_path / "f", real_frames, "steps=5", *oneway, *detail, "texture.detail_bumps=fit")
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", *oneway, *detail)
    bank, real, _ = build(cfg, Dist(), torch.device("cpu"), tmp_path / "run", progress=False)

    def fresh() -> dict:
        textures = {a: TextureSet.for_scenes(sc, cfg.texture, seed=0) for a, sc in bank.anatomies().items()}
        start_detail(bank, real, textures, report=False)
        return textures

    def frames(textures) -> Labelled:
        return views_as_real(bank, textures)

    counts = torch.bincount(torch.cat([b.labels.flatten() for b in (r.render([0]) for r in bank.renderers)]))
    counts[0] = 0
    c = int(counts.argmax())
    foot = class_footprints(bank)[c]
    truth_sets = fresh()
    for t in truth_sets.values():
        t.set_cells({c: (8.0 * foot, 0.8, 0.5)})
    layer_gains(bank, truth_sets)
    truth = frames(truth_sets)

    fitted = fresh()
    got = match_cells(bank, truth, fitted, albedo=False)
    assert c in got, got
    size, gain, layer, width, height, before, after = got[c]
    k = CELL_SIZES.index(min(CELL_SIZES, key=lambda s: abs(s * foot - size)))
    assert abs(k - CELL_SIZES.index(8.0)) <= 1 and abs(CELL_GAINS.index(gain) - CELL_GAINS.index(0.8)) <= 1, got[c]
    assert width == WIDTH and height == 0.0 and layer in (0.0, 0.5, 1.0) and after < 0.1 * before, got[c]    # the tiny layer's share is not seen
    assert all(row[1] == 0.0 for o, row in got.items() if o != c), got
    tset = next(iter(fitted.values()))
    assert set(tset.class_cells()) == {c}
    state = tset.state_dict()
    again = TextureSet.from_state(cfg.texture, state, tset.anatomy)
    assert again.class_cells() == tset.class_cells()
    old = TextureSet.from_state(cfg.texture, {k_: v for k_, v in state.items() if k_ != "detail_cells"}, tset.anatomy)
    assert old.class_cells() == {}
    sc = bank.scenes[0]
    buf = bank.renderers[0].render([0])
    with torch.no_grad():
        on, off = tset.sample(buf, sc)[..., -3:], old.sample(buf, sc)[..., -3:]
    mine = buf.labels == c
    assert (on - off)[mine].abs().max() > 0.2 and (on - off)[~mine].abs().max() == 0
    # texture.detail_cells_classes: a class left out keeps its layer though cells would fit it best
    other = next(o for o in got if o != c)
    kept = match_cells(bank, truth, fresh(), albedo=False, classes={other})
    assert kept[c][1] == 0.0 and kept[c][5] == kept[c][6], kept[c]
    with pytest.raises(UserError, match="texture.detail_cells_classes.*no training scene has class 'nope'"):
        fit_cells(bank, truth, fresh(), False, None, (0.0, 0.0), 0.0, False, False, ["nope"])
    # texture.detail_cells_width: wide asked, wide borders drawn though the truth's are thin
    forced = fresh()
    fit_cells(bank, truth, forced, False, None, (0.0, 0.0), 0.0, False, True, [], 0.0, "wide")
    assert "of 0.2 cell wide" in caplog.text
    rows = next(iter(forced.values())).class_cells()
    assert c in rows and all(abs(r[3] - BORDER_WIDTHS["wide"]) < 1e-6 for r in rows.values()), rows
    # texture.detail_bumps: the same cells as domes in the "real" frames (relit, as translated)
    # are told from flat ones (a height of 0 competes): the fitted height is near theirs
    for t in truth_sets.values():
        t.set_cells({c: (8.0 * foot, 0.8, 0.5, WIDTH, 0.12)})
    bumpy = match_cells(bank, frames(truth_sets), fresh(), albedo=False, views=16, heights=BUMP_HEIGHTS)
    assert bumpy[c][4] in (0.06, 0.12) and bumpy[c][6] < 0.1 * bumpy[c][5], bumpy[c]


def test_fit_textures_gives_a_new_anatomy_the_checkpoint_s_cells(tmp_path, real_frames, cli):
    """fit-textures on an anatomy the checkpoint has no textures for: the new set keeps the
    checkpoint's cell borders per class (they belong to the class, not the anatomy), and a new
    object of a class with cells has its drawn layer scaled by the class's layer gain (0: none);
    a checkpoint made with domes (texture.detail_bumps, 0 steps) is fitted with steps and keeps them."""
    import yaml
    from conftest import mini_scene_dict, tiny_cfg

    from vidsim2real.io.checkpoint import load_checkpoint, save_checkpoint
    from vidsim2real.train.loop import train
    cfg = tiny_cfg(tmp_path, real_frames, "steps=0", "model.type=oneway", "model.recolour=true", "loss.view_warmup=0",
                   "texture.detail=true", "texture.detail_resolution=48", "texture.detail_match=true")
    model = train(cfg, progress=False).model
    p = load_checkpoint(model)
    for st in p["textures"].values():             # the liver (class 2) with cells and no layer (saved
        st["detail_cells"] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.004, 0.5, 0.0]])  # as before widths)
    save_checkpoint(tmp_path / "cells.pt", p)
    for st in p["textures"].values():             # and with domes, made by a 0-step run asking for them
        st["detail_cells"] = torch.tensor([[0.0] * 5, [0.0] * 5, [0.004, 0.5, 0.0, WIDTH, 0.06]])
    p["config"]["texture"].update(detail_cells=True, detail_bumps=0.06)
    save_checkpoint(tmp_path / "domes.pt", p)
    d = mini_scene_dict(tmp_path)
    d["anatomy"] = "mini"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    layers = {}
    for name in ("cells", "domes", "plain"):
        rc, out, err = cli("fit-textures", model if name == "plain" else tmp_path / f"{name}.pt", tmp_path / "mini.yaml",
                           "--steps", "1", "-o", tmp_path / f"{name}.fit.pt", "--real", real_frames, "--device", "cpu")
        assert rc == 0, err
        tex = load_checkpoint(tmp_path / f"{name}.fit.pt")["textures"]["mini"]
        layers[name] = tex["detail.ball.levels.0"].float().abs().max()
        if name != "plain":           # fit-textures fits no cells: its steps do not clash with the domes
            torch.testing.assert_close(tex["detail_cells"][2],
                                       torch.tensor([0.004, 0.5, 0.0, WIDTH, 0.06 if name == "domes" else 0.0]))
        else:
            assert "detail_cells" not in tex or not tex["detail_cells"].any()
    assert layers["cells"] < 0.01 < layers["plain"], layers   # the liver's layer gain 0 (one step moves it a little)


def test_domes_relight_the_translated_frames_of_their_class(tiny_model):
    """translate_buffers relights a frame with the domes of a set's cells (the sim render the
    generator sees changes where the class is), tilts no other class's normals, leaves the
    caller's buffers as they were, and a height of 0 is the frame without domes, bit for bit."""
    from pathlib import Path

    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import pixel_footprint
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    model = load_model(tiny_model)
    scene = load_scene(Path(__file__).resolve().parents[1] / "scenes" / "liver_edge_breathing.yaml")
    r = Renderer(scene, (64, 64), backend="torch")
    buf = r.render([3])
    normals = buf.normals.clone()
    style = make_style(model, "1", "cpu")
    plain = translate_buffers(model, r, buf, style)
    tset = model.textures[scene.anatomy]
    counts = torch.bincount(buf.labels.flatten())
    counts[0] = 0
    c = int(counts.argmax())
    mine = buf.labels == c
    size = 8.0 * float(pixel_footprint(buf.rest_positions, buf.object_ids)[mine].median())
    tset.set_cells({c: (size, 0.5, 1.0, WIDTH, 0.0)})
    assert not tset.has_bumps() and torch.equal(translate_buffers(model, r, buf, style), plain)
    tset.set_cells({c: (size, 0.5, 1.0, WIDTH, 0.12)})
    assert tset.has_bumps()
    tilted = tset.bump_normals(buf, scene)
    assert torch.equal(tilted[~mine], buf.normals[~mine])
    assert float((tilted[mine] - buf.normals[mine]).norm(dim=-1).mean()) > 0.05
    domed = translate_buffers(model, r, buf, style)
    assert torch.equal(buf.normals, normals)
    assert float((domed - plain).abs().amax(-1)[mine].mean()) > 0.01
