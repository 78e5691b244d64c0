"""Rasterizer: one test body per case, run against every implementation (torch, cpu, cuda).

Agreement tolerance between implementations: none. The kernels evaluate the reference's
float64 expressions in the same order without FMA contraction, so pix_to_face, bary and
zbuf are compared for exact equality (ties on equal float32 depth resolve to the lower face
id in every implementation).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MESHES
from vidsim2real.raster import barycentrics, correspondences, interpolate, rasterize
from vidsim2real.scene.camera import Intrinsics, look_at

IMPLS = ["torch", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _device_for(backend: str) -> torch.device:
    if backend == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def _camera(H=32, W=40, f=30.0):
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    return K, torch.eye(4, dtype=torch.float64)


def random_triangles(seed: int, n: int, kinds: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle soups mixing ordinary, degenerate, sliver, huge and near-plane-crossing faces."""
    rng = np.random.default_rng(seed)
    tris = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        c = rng.uniform([-1.5, -1.2, 0.5], [1.5, 1.2, 4.0])
        t = c + rng.normal(scale=0.4, size=(3, 3))
        if kind == "degenerate":
            t[1] = t[0] if rng.random() < 0.5 else t[1]
            t[2] = t[0] + rng.uniform() * (t[1] - t[0])
        elif kind == "sliver":
            t[2] = 0.5 * (t[0] + t[1]) + rng.normal(scale=1e-4, size=3)
        elif kind == "huge":
            t = c + rng.normal(scale=200.0, size=(3, 3))
        elif kind == "near":
            t[:, 2] = rng.uniform(-1.0, 1.0, size=3)   # straddles near=0.1 and the camera plane
        elif kind == "grid":  # shared edges and vertices on pixel centres: exact ties
            z = rng.uniform(1.0, 3.0)
            x0, y0 = rng.integers(-10, 10, size=2) * z / 30.0
            s = rng.integers(1, 8) * z / 30.0
            t = np.array([[x0, y0, z], [x0 + s, y0, z], [x0, y0 + s, z]])
        tris.append(t)
    verts = torch.tensor(np.concatenate(tris), dtype=torch.float64)
    faces = torch.arange(len(verts)).reshape(-1, 3)
    return verts, faces


def _raster(verts, faces, backend, device, cull=False, H=32, W=40, near=0.1, far=100.0, w2c=None):
    K, eye = _camera(H, W)
    w2c = eye if w2c is None else w2c
    return rasterize(verts.to(device), faces.to(device), K.to(device), w2c.to(device), (H, W), near, far,
                     cull_backfaces=cull, backend=backend)


def _assert_same(a, b):
    assert torch.equal(a.pix_to_face.cpu(), b.pix_to_face.cpu())
    assert torch.equal(a.bary.cpu(), b.bary.cpu())
    assert torch.equal(a.zbuf.cpu(), b.zbuf.cpu())


# -- implementations agree --------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(1, 60), cull=st.booleans(),
       kinds=st.lists(st.sampled_from(["plain", "degenerate", "sliver", "huge", "near", "grid"]), min_size=1,
                      max_size=6).map(tuple))
def test_backends_agree_with_reference(backend, seed, n, cull, kinds):
    device = _device_for(backend)
    verts, faces = random_triangles(seed, n, kinds)
    ref = _raster(verts, faces, "torch", torch.device("cpu"), cull)
    out = _raster(verts, faces, backend, device, cull)
    _assert_same(ref, out)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_backends_agree_on_openhelp_batch(backend):
    import trimesh
    device = _device_for(backend)
    m = trimesh.load(MESHES / "openhelp" / "Liver.stl")
    V = torch.tensor(np.asarray(m.vertices) * 1e-3)
    F = torch.tensor(np.asarray(m.faces))
    intr = Intrinsics.from_fov(96, 80, 70, 0.002, 1.0)
    poses = torch.tensor(np.stack([look_at([-0.04 + 0.02 * i, -0.08, 0.26 - 0.03 * i], [-0.04, 0.07, 0.15], [0, 0, 1])
                                   for i in range(3)]))
    K = torch.tensor(intr.K())
    ref = rasterize(V, F, K, poses, (80, 96), intr.near, intr.far, backend="torch")
    out = rasterize(V.to(device), F.to(device), K.to(device), poses.to(device), (80, 96), intr.near, intr.far,
                    backend=backend)
    _assert_same(ref, out)
    assert ref.mask.float().mean() > 0.1


# -- semantics, hand-computed -----------------------------------------------------------------

@pytest.mark.parametrize("backend", IMPLS)
def test_single_triangle_unit_values(backend):
    device = _device_for(backend)
    # In the plane z = 2 with f = 30: pixel (u, v) = 30 x / 2 + c. Vertices on pixel centres.
    H, W = 32, 40
    cx, cy = (W - 1) / 2, (H - 1) / 2
    px = np.array([[4.0, 4.0], [24.0, 4.0], [4.0, 20.0]])     # right triangle, legs 20 and 16 px
    z = 2.0
    pts = np.concatenate([(px - [cx, cy]) * z / 30.0, np.full((3, 1), z)], 1)
    verts = torch.tensor(pts)
    faces = torch.tensor([[0, 1, 2]])
    fr = _raster(verts, faces, backend, device)
    covered = fr.pix_to_face[0].cpu() == 0
    ys, xs = np.mgrid[0:H, 0:W]
    # inside (edges included): x >= 4, y >= 4, (x-4)/20 + (y-4)/16 <= 1
    expect = (xs >= 4) & (ys >= 4) & ((xs - 4) * 16 + (ys - 4) * 20 <= 320)
    assert torch.equal(covered, torch.tensor(expect))
    np.testing.assert_allclose(fr.zbuf[0].cpu()[covered].numpy(), z, rtol=1e-6)
    assert (fr.zbuf[0].cpu()[~covered] == 0).all()
    b = fr.bary[0, 8, 9].cpu().numpy()                          # pixel (x=9, y=8)
    np.testing.assert_allclose(b, [1 - 5 / 20 - 4 / 16, 5 / 20, 4 / 16], atol=1e-6)
    np.testing.assert_allclose(fr.bary[0][covered].sum(-1).cpu().numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("backend", IMPLS)
def test_perspective_correct_barycentrics(backend):
    device = _device_for(backend)
    # A slanted triangle: barycentrics must reproduce the 3D point seen through each pixel.
    verts = torch.tensor([[-1.0, -0.8, 1.5], [1.2, -0.6, 4.0], [0.1, 0.9, 2.5]])
    faces = torch.tensor([[0, 1, 2]])
    fr = _raster(verts, faces, backend, device)
    mask = fr.mask[0].cpu()
    P = (fr.bary[0].cpu().double()[..., None] * verts[None, None]).sum(-2)   # [H, W, 3]
    K, _ = _camera()
    u = K[0, 0] * P[..., 0] / P[..., 2] + K[0, 2]
    v = K[1, 1] * P[..., 1] / P[..., 2] + K[1, 2]
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    assert (u[mask] - xs[mask].double()).abs().max() < 1e-4
    assert (v[mask] - ys[mask].double()).abs().max() < 1e-4
    assert (P[..., 2][mask].float() - fr.zbuf[0].cpu()[mask]).abs().max() < 1e-5


@pytest.mark.parametrize("backend", IMPLS)
def test_near_plane_is_clipped_not_dropped_or_wrapped(backend):
    device = _device_for(backend)
    near = 0.5
    # one vertex behind the camera, two in front: a laparoscope's everyday triangle
    verts = torch.tensor([[0.0, -0.5, -1.0], [-2.0, 1.0, 3.0], [2.0, 1.0, 3.0]])
    faces = torch.tensor([[0, 1, 2]])
    fr = _raster(verts, faces, backend, device, near=near)
    # independent answer: intersect each pixel ray with the triangle (numpy, Moller-Trumbore)
    K, _ = _camera()
    ys, xs = np.mgrid[0:32, 0:40]
    d = np.stack([(xs - K[0, 2].item()) / 30.0, (ys - K[1, 2].item()) / 30.0, np.ones_like(xs, float)], -1)
    v0, v1, v2 = verts.numpy()
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(d, e2)
    det = p @ e1
    inv = 1.0 / det
    s = -v0
    uu = (p @ s) * inv
    q = np.cross(s, e1)
    vv = (d @ q) * inv
    t = (q @ e2) * inv                        # ray parameter = depth z (d_z = 1)
    hit = (uu >= 0) & (vv >= 0) & (uu + vv <= 1) & (t >= near)
    got = fr.mask[0].cpu().numpy()
    assert hit.sum() > 50 and (t[(uu >= 0) & (vv >= 0) & (uu + vv <= 1)] < near).any()  # the case is real
    margin = (np.minimum(np.minimum(uu, vv), 1 - uu - vv) > 1e-6) | ~hit
    assert np.array_equal(got[margin], hit[margin])
    np.testing.assert_allclose(fr.zbuf[0].cpu().numpy()[hit & margin], t[hit & margin], rtol=1e-5)


@pytest.mark.parametrize("backend", IMPLS)
def test_backface_culling(backend):
    import trimesh
    device = _device_for(backend)
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    V = torch.tensor(np.asarray(m.vertices) + [0, 0, 3.0])
    F = torch.tensor(np.asarray(m.faces))
    a = _raster(V, F, backend, device)
    b = _raster(V, F, backend, device, cull=True)
    _assert_same(a, b)                 # from outside, the nearest faces are the front faces
    assert a.mask.any()
    inside = _raster(V - torch.tensor([0, 0, 3.0], dtype=torch.float64), F, backend, device)
    inside_culled = _raster(V - torch.tensor([0, 0, 3.0], dtype=torch.float64), F, backend, device, cull=True)
    assert inside.mask.all() and not inside_culled.mask.any()


@pytest.mark.parametrize("backend", IMPLS)
def test_equal_depth_resolves_to_lower_face_id(backend):
    device = _device_for(backend)
    tri = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    verts = torch.cat([tri, tri, tri])
    faces = torch.tensor([[6, 7, 8], [3, 4, 5], [0, 1, 2]])   # three coincident faces
    fr = _raster(verts, faces, backend, device)
    assert fr.mask.any()
    assert set(fr.pix_to_face[fr.mask].cpu().tolist()) == {0}


@pytest.mark.parametrize("backend", IMPLS)
def test_far_plane_and_empty_inputs(backend):
    device = _device_for(backend)
    verts = torch.tensor([[-1.0, -1.0, 50.0], [1.0, -1.0, 50.0], [0.0, 1.0, 50.0]])
    faces = torch.tensor([[0, 1, 2]])
    assert not _raster(verts, faces, backend, device, far=10.0).mask.any()
    assert _raster(verts, faces, backend, device, far=60.0).mask.any()
    empty = _raster(verts, faces[:0], backend, device)
    assert empty.pix_to_face.shape == (1, 32, 40) and not empty.mask.any()


def test_argument_errors():
    verts = torch.zeros(3, 3)
    faces = torch.tensor([[0, 1, 2]])
    K, w2c = _camera()
    with pytest.raises(ValueError, match="near < far"):
        rasterize(verts, faces, K, w2c, (8, 8), 1.0, 0.5)
    with pytest.raises(ValueError, match="out of range"):
        rasterize(verts, torch.tensor([[0, 1, 5]]), K, w2c, (8, 8), 0.1, 5)
    with pytest.raises(ValueError, match="NaN"):
        rasterize(torch.full((3, 3), float("nan")), faces, K, w2c, (8, 8), 0.1, 5)
    with pytest.raises(ValueError, match="backend"):
        rasterize(verts, faces, K, w2c, (8, 8), 0.1, 5, backend="opengl")


def test_fallback_warns_once_when_no_compiler(monkeypatch):
    from vidsim2real import ext as _ext
    monkeypatch.setattr(_ext, "_warned", False)

    def broken(cuda=False):
        raise RuntimeError("could not build the C++ rasterizer: no compiler")
    monkeypatch.setattr(_ext, "load_extension", broken)
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert _ext.resolve_backend("auto", torch.device("cpu")) == "torch"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ext.resolve_backend("auto", torch.device("cpu")) == "torch"   # no second warning
    with pytest.raises(RuntimeError, match="no compiler"):
        _ext.resolve_backend("cpu", torch.device("cpu"))


# -- independent check against Embree ray casting -------------------------------------------

def test_face_ids_match_embree_on_openhelp_liver():
    import trimesh
    m = trimesh.load(MESHES / "openhelp" / "Liver.stl")
    V, F = np.asarray(m.vertices) * 1e-3, np.asarray(m.faces)
    mesh = trimesh.Trimesh(V, F, process=False)
    intr = Intrinsics.from_fov(256, 256, 70, 0.002, 1.0)
    K = intr.K()
    poses = [look_at([-0.04, -0.08, 0.26], [-0.04, 0.07, 0.15], [0, 0, 1]),
             look_at([-0.09, -0.05, 0.20], [-0.09, 0.0, 0.15], [0, 1, 0.4]),
             look_at([0.0, 0.02, 0.26], [-0.03, 0.08, 0.19], [0, 1, 0]),
             look_at([-0.15, 0.05, 0.22], [-0.05, 0.08, 0.17], [0, 0, 1])]
    fr = rasterize(torch.tensor(V), torch.tensor(F), torch.tensor(K), torch.tensor(np.stack(poses)), (256, 256),
                   intr.near, intr.far, backend="auto")
    ys, xs = np.mgrid[0:256, 0:256]
    d_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(xs.shape)], -1).reshape(-1, 3)
    agree, total = 0, 0
    for i, w2c in enumerate(poses):
        R = w2c[:3, :3]
        origin = -R.T @ w2c[:3, 3]
        d = d_cam @ R
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        hit = mesh.ray.intersects_first(np.repeat(origin[None], len(d), 0), d)
        ours = fr.pix_to_face[i].reshape(-1).numpy()
        agree += int((hit == ours).sum())
        total += len(hit)
        assert (ours >= 0).mean() > 0.05
    assert agree / total >= 0.999, agree / total


# -- differentiability ------------------------------------------------------------------------

def _small_scene():
    verts = torch.tensor([[-1.0, -1.0, 2.0], [1.2, -0.9, 2.5], [0.1, 1.1, 3.0], [1.5, 1.0, 2.2]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = torch.tensor([[6.0, 0, 3.5], [0, 6.0, 3.5], [0, 0, 1]], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    return verts, faces, K, w2c


def test_recomputed_barycentrics_equal_forward():
    verts, faces, K, w2c = _small_scene()
    fr = rasterize(verts, faces, K, w2c, (8, 8), 0.1, 10, backend="torch")
    b = barycentrics(fr, verts, faces)
    assert fr.mask.sum() > 10
    torch.testing.assert_close(b.float(), fr.bary, atol=1e-6, rtol=0)


def test_gradcheck_interpolate_attr_and_positions():
    verts, faces, K, w2c = _small_scene()
    fr = rasterize(verts, faces, K, w2c, (8, 8), 0.1, 10, backend="torch")
    attr = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, p: interpolate(a, fr, faces, verts=p), (attr, v), eps=1e-6, atol=1e-5)
    # and without positions: only the attribute gets gradient
    assert torch.autograd.gradcheck(lambda a: interpolate(a, fr, faces), (attr,), eps=1e-6, atol=1e-6)


# -- correspondences ----------------------------------------------------------------------------

def _textured(fr, faces, rest):
    """A smooth view-independent 'texture': colour from rest-pose position. [B, H, W, 3] in [0, 1]."""
    col = interpolate(rest.float(), fr, faces)
    return (torch.sin(col * torch.tensor([230.0, 250.0, 270.0])) * 0.5 + 0.5) * fr.mask[..., None]


def test_warping_with_gt_flow_reproduces_other_frame():
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from conftest import SCENES
    scene = load_scene(SCENES / "liver_edge_breathing.yaml")   # moving camera + breathing liver
    r = Renderer(scene, size=(160, 160))
    a, b = r.gbuffer([10]), r.gbuffer([40])
    verts_b = r.geometry(40)[0]
    corr = correspondences(a.fragments, b.fragments, verts_b, r.faces)
    rest = r.rest_vertices
    img_a, img_b = _textured(a.fragments, r.faces, rest), _textured(b.fragments, r.faces, rest)
    grid = torch.stack([corr.uv[..., 0] / (160 - 1) * 2 - 1, corr.uv[..., 1] / (160 - 1) * 2 - 1], -1)
    warped = torch.nn.functional.grid_sample(img_b.permute(0, 3, 1, 2), grid, align_corners=True,
                                             mode="bilinear").permute(0, 2, 3, 1)
    valid = corr.valid[0]
    assert valid.float().mean() > 0.3
    err = (warped[0] - img_a[0]).abs().mean(-1)[valid]
    assert err.median() < 0.005 and err.mean() < 0.02, (err.median(), err.mean())
    # ignoring the deformation (frame a's vertices used for frame b) is clearly worse on the
    # breathing liver: the correspondences are exact only because they follow the surface
    wrong = correspondences(a.fragments, b.fragments, r.geometry(10)[0], r.faces)
    g2 = torch.stack([wrong.uv[..., 0] / 159 * 2 - 1, wrong.uv[..., 1] / 159 * 2 - 1], -1)
    w2 = torch.nn.functional.grid_sample(img_b.permute(0, 3, 1, 2), g2, align_corners=True).permute(0, 2, 3, 1)
    liver = valid & (a.object_ids[0] == 1)
    assert liver.sum() > 500
    e_right = (warped[0] - img_a[0]).abs().mean(-1)[liver].mean()
    e_wrong = (w2[0] - img_a[0]).abs().mean(-1)[liver].mean()
    assert e_wrong > 3 * e_right, (e_wrong, e_right)


def test_correspondence_identity_and_occlusion():
    # a small square in front of a big back plane; camera b moves sideways so the square
    # hides a different part of the plane
    back = torch.tensor([[-5.0, -5.0, 5.0], [5.0, -5.0, 5.0], [5.0, 5.0, 5.0], [-5.0, 5.0, 5.0]])
    front = torch.tensor([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.3, 0.3, 2.0], [-0.3, 0.3, 2.0]])
    verts = torch.cat([back, front]).double()
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    K, eye = _camera(48, 48, 40.0)
    w2c_b = eye.clone()
    w2c_b[0, 3] = -0.8      # camera b 0.8 to the right
    fa = rasterize(verts, faces, K, eye, (48, 48), 0.1, 100)
    fb = rasterize(verts, faces, K, w2c_b, (48, 48), 0.1, 100)
    same = correspondences(fa, fa, verts, faces)
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    assert torch.equal(same.valid, fa.mask)
    assert (same.uv[0][fa.mask[0]] - torch.stack([xs, ys], -1)[fa.mask[0]]).abs().max() < 1e-3
    c = correspondences(fa, fb, verts, faces)
    # pixel (23, 23) sees the front square in a; it moves left in b and stays visible
    assert c.valid[0, 23, 23] and c.uv[0, 23, 23, 0] < 23 - 10
    # background right of the square in a is hidden by the square in b: invalid
    occluded = ~c.valid[0] & fa.mask[0]
    assert occluded.sum() > 20
    assert torch.equal(c.flow[0][~c.valid[0]], torch.zeros_like(c.flow[0][~c.valid[0]]))


@pytest.mark.slow
def test_cuda_source_compiles_with_nvcc(tmp_path):
    """Where nvcc exists but no GPU does (CI, CPU machines), at least compile the CUDA kernels
    for Hopper so syntax and type errors never wait for a GPU machine. ``-cubin`` runs nvcc's
    front end over the whole file (host code type-checked too) and ptxas for sm_90; only the
    host compiler's object code, which the C++ build already exercises, is skipped."""
    import shutil
    import subprocess
    import sysconfig
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA tests build and run the kernel for real")
    from pathlib import Path
    import vidsim2real.ext as ext
    csrc = Path(ext.__file__).parent / "csrc"
    tdir = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)   # the CPU wheel lacks this generated header; an empty one suffices to compile
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    procs = {}
    for src in ext.CUDA_SOURCES:          # the rasterizer and the fused texture sampling, in parallel
        cmd = [nvcc, "-cubin", str(csrc / src), "-o", str(tmp_path / f"{src}.cubin"), "-std=c++17", "-O1",
               "-fmad=false", "-DWITH_CUDA", "-arch=sm_90", "-I", str(csrc), "-I", str(tmp_path / "stub"),
               "-I", str(tdir), "-I", str(tdir / "torch/csrc/api/include"), "-I", sysconfig.get_paths()["include"],
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}", "-w"]
        procs[src] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for src, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, (src, err[-3000:])
        assert (tmp_path / f"{src}.cubin").stat().st_size > 10000
