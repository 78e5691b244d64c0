"""Scene files: loading, validation errors, trajectories, deformation, CLI check/mesh/random."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import trimesh
import yaml

from conftest import SCENES, mini_scene_dict, write_yaml
from vidsim2real.scene import check_camera_path, dump_scene, load_scene
from vidsim2real.scene.camera import (camera_center, look_at, matrix_from_quat, nerf_from_w2c, quat_from_matrix,
                                      w2c_from_nerf)


# -- loading ------------------------------------------------------------------------------

def test_bundled_scenes_load_and_pass_check(cli, bundled_scenes):
    assert len(bundled_scenes) >= 3
    rc, out, err = cli("scene", "check", *bundled_scenes)
    assert rc == 0, err
    assert out.count(": OK") == len(bundled_scenes)
    assert "min camera-to-surface distance" in out
    for p in bundled_scenes:
        s = load_scene(p)
        # every bundled camera is inside the cavity: not inside any object at any frame
        assert check_camera_path(s).min_distance > s.intrinsics.near


def test_units_are_converted_to_metres(mini_scene):
    s = load_scene(mini_scene)
    assert s.units == "mm"
    np.testing.assert_allclose(np.linalg.norm(s.rest_vertices, axis=1).max(), 0.020, rtol=1e-3)
    np.testing.assert_allclose(camera_center(s.camera_poses[0]), [0, -0.1, 0], atol=1e-12)
    assert s.intrinsics.near == pytest.approx(0.001)


def test_round_trip_through_dump(tmp_path, mini_scene):
    s = load_scene(mini_scene)
    again = load_scene(write_yaml(tmp_path / "again.yaml", dump_scene(s)))
    np.testing.assert_allclose(again.camera_poses, s.camera_poses, atol=1e-9)
    np.testing.assert_allclose(again.vertices(5), s.vertices(5), atol=1e-12)
    assert again.intrinsics == s.intrinsics and again.frames == s.frames and again.fps == s.fps


def test_bundled_round_trip_with_breathing(tmp_path):
    s = load_scene(SCENES / "liver_edge_breathing.yaml")
    again = load_scene(write_yaml(tmp_path / "again.yaml", dump_scene(s)))
    np.testing.assert_allclose(again.vertices(37), s.vertices(37), atol=1e-9)
    np.testing.assert_allclose(again.camera_poses, s.camera_poses, atol=1e-9)


def test_fx_fy_cx_cy_intrinsics(tmp_path):
    d = mini_scene_dict(tmp_path)
    d["camera"] = {"width": 64, "height": 48, "fx": 50, "fy": 52, "cx": 31.5, "cy": 23.5, "near": 1, "far": 100}
    s = load_scene(write_yaml(tmp_path / "s.yaml", d))
    np.testing.assert_allclose(s.intrinsics.K(), [[50, 0, 31.5], [0, 52, 23.5], [0, 0, 1]])
    r = s.camera(128, 96)  # rescaling keeps pixel centres at integers
    assert r.fx == 100 and r.cx == pytest.approx(63.5)


def test_nerf_transforms_trajectory(tmp_path):
    d = mini_scene_dict(tmp_path)
    poses = [look_at(np.array([x, -100.0, 5.0]), np.zeros(3), np.array([0, 0, 1.0])) for x in (0, 10, 20)]
    frames = [{"file_path": f"f{i}", "transform_matrix": nerf_from_w2c(p).tolist()} for i, p in enumerate(poses)]
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 1.0, "frames": frames}))
    d["trajectory"] = {"fps": 5, "transforms": "transforms.json"}
    s = load_scene(write_yaml(tmp_path / "s.yaml", d))
    assert s.frames == 3
    expect = np.stack(poses)
    expect[:, :3, 3] *= 0.001
    np.testing.assert_allclose(s.camera_poses, expect, atol=1e-12)
    np.testing.assert_allclose(w2c_from_nerf(nerf_from_w2c(poses[1])), poses[1], atol=1e-12)


def test_pose_keyframes_equal_look_at_keyframes(tmp_path):
    d = mini_scene_dict(tmp_path)
    s1 = load_scene(write_yaml(tmp_path / "a.yaml", d))
    d2 = copy.deepcopy(d)
    for k in d2["trajectory"]["keyframes"]:
        pose = look_at(np.array(k.pop("position"), float), np.array(k.pop("look_at"), float), np.array(k.pop("up"), float))
        k["pose"] = pose.tolist()
    s2 = load_scene(write_yaml(tmp_path / "b.yaml", d2))
    np.testing.assert_allclose(s1.camera_poses, s2.camera_poses, atol=1e-9)


# -- validation errors: one line, file + field, exit code 2 --------------------------------

def _mutations(tmp_path):
    garbage = tmp_path / "garbage.stl"
    garbage.write_bytes(b"\x00\x01not a mesh at all" * 3)
    empty = tmp_path / "empty.ply"
    empty.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                     "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n")
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")

    def set_(path, value):
        def f(d):
            node = d
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        return f

    def delete(path):
        def f(d):
            node = d
            for k in path[:-1]:
                node = node[k]
            del node[path[-1]]
        return f

    inside = [{"time": 0.0, "position": [0, 0, 0], "look_at": [0, 10, 0], "up": [0, 0, 1]}]
    return [
        ("missing mesh", set_(["objects", 0, "mesh"], "nope/Liverr.stl"), "objects[0].mesh", "not found"),
        ("unreadable mesh", set_(["objects", 0, "mesh"], str(garbage)), "objects[0].mesh", "garbage.stl"),
        ("empty mesh", set_(["objects", 0, "mesh"], str(empty)), "objects[0].mesh", "empty"),
        ("nan vertices", set_(["objects", 0, "mesh"], str(nan)), "objects[0].mesh", "NaN"),
        ("unknown key", lambda d: d.__setitem__("camrea", {}), "camrea", "did you mean 'camera'"),
        ("unknown nested key", set_(["camera", "heigth"], 3), "camera.heigth", "did you mean 'height'"),
        ("wrong type", set_(["camera", "width"], "wide"), "camera.width", "expected an integer"),
        ("bool is not a number", set_(["camera", "fov"], True), "camera.fov", "expected a number"),
        ("frames < 1", set_(["trajectory", "frames"], 0), "trajectory.frames", ">= 1"),
        ("look_at == position", set_(["trajectory", "keyframes", 1, "look_at"], [30, -90, 10]),
         "trajectory.keyframes[1].look_at", "equals position"),
        ("fov 180", set_(["camera", "fov"], 180), "camera.fov", "< 180"),
        ("fov 0", set_(["camera", "fov"], 0), "camera.fov", "> 0"),
        ("near >= far", set_(["camera", "near"], 600), "camera.near", "smaller than far"),
        ("missing units", delete(["units"]), "units", "missing"),
        ("bad units", set_(["units"], "inch"), "units", "must be one of"),
        ("times decrease", set_(["trajectory", "keyframes", 1, "time"], 0.0), "trajectory.keyframes[1].time", "increase"),
        ("camera inside organ", set_(["trajectory", "keyframes"], inside), "trajectory", "inside objects[0] 'ball'"),
        ("color range", set_(["objects", 0, "color"], [2, 0, 0]), "objects[0].color", "[0, 1]"),
        ("vector length", set_(["trajectory", "keyframes", 0, "position"], [1, 2]), "position", "list of 3"),
        ("class id", set_(["objects", 0, "class_id"], 0), "objects[0].class_id", ">= 1"),
    ]


@pytest.mark.parametrize("case", range(20))
def test_bad_input_gives_one_line_error(tmp_path, cli, case):
    name, mutate, field, message = _mutations(tmp_path)[case]
    d = mini_scene_dict(tmp_path)
    mutate(d)
    path = write_yaml(tmp_path / "bad.yaml", d)
    rc, out, err = cli("scene", "check", path)
    assert rc == 2, (name, out, err)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, (name, err)
    assert str(path) in lines[0] and field in lines[0] and message in lines[0], (name, lines[0])
    assert "Traceback" not in err


def test_invalid_yaml_and_duplicate_keys(tmp_path, cli):
    p = tmp_path / "dup.yaml"
    p.write_text("units: mm\nunits: m\n")
    rc, _, err = cli("scene", "check", p)
    assert rc == 2 and "duplicate key 'units'" in err and "line 2" in err
    p.write_text("units: [mm\n")
    rc, _, err = cli("scene", "check", p)
    assert rc == 2 and "invalid YAML" in err
    rc, _, err = cli("scene", "check", tmp_path / "absent.yaml")
    assert rc == 2 and "absent.yaml: file not found" in err


def test_error_from_console_script_has_no_traceback(tmp_path):
    import subprocess
    import sys
    d = mini_scene_dict(tmp_path)
    d["camera"]["fov"] = 200
    path = write_yaml(tmp_path / "bad.yaml", d)
    r = subprocess.run([sys.executable, "-m", "vidsim2real", "scene", "check", str(path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "camera.fov" in r.stderr and "Traceback" not in r.stderr


def test_degenerate_faces_are_dropped_with_warning(tmp_path, cli):
    m = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    faces = np.concatenate([m.faces, [[0, 0, 1], [1, 2, 2]]])        # two degenerate faces
    trimesh.Trimesh(m.vertices, faces, process=False).export(tmp_path / "deg.ply")
    d = mini_scene_dict(tmp_path)
    d["objects"][0]["mesh"] = str(tmp_path / "deg.ply")
    path = write_yaml(tmp_path / "deg.yaml", d)
    rc, out, err = cli("scene", "check", path)
    assert rc == 0
    assert "warning:" in err and "dropped 2 degenerate faces" in err
    assert load_scene(path).num_faces == len(m.faces)


def test_multiple_files_report_each(tmp_path, cli, mini_scene):
    d = mini_scene_dict(tmp_path)
    d["trajectory"]["frames"] = -3
    bad = write_yaml(tmp_path / "bad.yaml", d)
    rc, out, err = cli("scene", "check", mini_scene, bad)
    assert rc == 2 and ": OK" in out and "bad.yaml: trajectory.frames" in err


# -- trajectories -----------------------------------------------------------------------------

def test_keyframes_are_hit_exactly_and_quaternions_are_unit(tmp_path):
    d = mini_scene_dict(tmp_path)
    d["trajectory"]["fps"] = 10
    d["trajectory"]["frames"] = 12
    s = load_scene(write_yaml(tmp_path / "s.yaml", d))
    track = s.camera_track
    for k in d["trajectory"]["keyframes"]:
        pose = look_at(np.array(k["position"]) * 1e-3, np.array(k["look_at"]) * 1e-3, np.array(k["up"]))
        frame = int(round(k["time"] * 10))
        np.testing.assert_allclose(s.camera_poses[frame], pose, atol=1e-12)
    q = track.evaluate_quats(np.linspace(0, 1.1, 200))
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    _, R = track.evaluate(np.linspace(0, 1.1, 200))
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_trajectory_is_smooth():
    from vidsim2real.scene.trajectory import PoseTrack
    rng = np.random.default_rng(3)
    times = np.array([0.0, 0.7, 1.5, 3.0])
    pos = rng.normal(size=(4, 3)) * 0.05
    rots = [matrix_from_quat(rng.normal(size=4)) for _ in range(4)]
    tr = PoseTrack.from_rotations(times, pos, rots)
    t = np.linspace(0, 3.0, 3001)
    p, R = tr.evaluate(t)
    dt = t[1] - t[0]
    vel = np.diff(p, axis=0) / dt
    # C1: velocity is continuous (no jumps between neighbouring samples, keys included)
    assert np.abs(np.diff(vel, axis=0)).max() < 50 * dt * np.abs(vel).max() + 1e-9
    # orientation changes by a bounded angle per step: no flips
    cosang = np.clip((np.einsum("nij,nij->n", R[1:], R[:-1]) - 1) / 2, -1, 1)
    assert np.degrees(np.arccos(cosang)).max() < 1.0
    # slerp takes the short arc: q and -q keys give the same motion
    tr2 = PoseTrack(times, pos, np.stack([q * (-1) ** i for i, q in enumerate(tr.quats)]))
    np.testing.assert_allclose(tr2.evaluate(t)[1], R, atol=1e-12)
    # held before the first and after the last key
    np.testing.assert_allclose(tr.evaluate([5.0])[0][0], pos[-1])


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = matrix_from_quat(rng.normal(size=4))
        np.testing.assert_allclose(matrix_from_quat(quat_from_matrix(R)), R, atol=1e-12)


def test_instrument_follows_its_own_trajectory():
    s = load_scene(SCENES / "instrument_pass.yaml")
    shaft = next(i for i, o in enumerate(s.objects) if o.name == "grasper_shaft")
    sl = slice(s.vertex_offsets[shaft], s.vertex_offsets[shaft + 1])
    v0, v1 = s.vertices(0)[sl], s.vertices(100)[sl]
    assert np.linalg.norm(v0.mean(0) - v1.mean(0)) > 0.02  # it moves
    # rigidly: pairwise distances are preserved
    i, j = np.arange(0, len(v0), 7), np.arange(3, len(v0), 7)[: len(np.arange(0, len(v0), 7))]
    n = min(len(i), len(j))
    np.testing.assert_allclose(np.linalg.norm(v0[i[:n]] - v0[j[:n]], axis=1),
                               np.linalg.norm(v1[i[:n]] - v1[j[:n]], axis=1), atol=1e-9)


# -- deformation -------------------------------------------------------------------------------

def test_breathing_is_reproducible_and_periodic():
    s = load_scene(SCENES / "liver_edge_breathing.yaml")
    liver = next(i for i, o in enumerate(s.objects) if o.name == "liver")
    sl = slice(s.vertex_offsets[liver], s.vertex_offsets[liver + 1])
    np.testing.assert_array_equal(s.vertices(40)[sl], load_scene(SCENES / "liver_edge_breathing.yaml").vertices(40)[sl])
    period_frames = int(round(s.objects[liver].deformation.period * s.fps))
    np.testing.assert_allclose(s.vertices(3)[sl], s.vertices(3 + period_frames)[sl], atol=1e-12)
    disp = np.linalg.norm(s.vertices(period_frames // 2)[sl] - s.vertices(0)[sl], axis=1)
    assert 0.001 < disp.max() <= 0.006 + 1e-9            # up to the 6 mm amplitude
    assert disp.min() < 0.5 * disp.max()                  # with spatial falloff: non-rigid
    stomach = next(i for i, o in enumerate(s.objects) if o.name == "stomach")
    ss = slice(s.vertex_offsets[stomach], s.vertex_offsets[stomach + 1])
    np.testing.assert_array_equal(s.vertices(0)[ss], s.vertices(50)[ss])


def test_vertex_array_deformation(tmp_path, cli):
    d = mini_scene_dict(tmp_path)
    s0 = load_scene(write_yaml(tmp_path / "s0.yaml", d))
    V = s0.objects[0].mesh.vertices / 1e-3      # back to file units (mm)
    T = s0.frames
    frames = np.stack([V * (1 + 0.01 * t) for t in range(T)])
    np.savez(tmp_path / "def.npz", vertices=frames)
    d["objects"][0]["deformation"] = {"type": "vertices", "file": "def.npz"}
    s = load_scene(write_yaml(tmp_path / "s.yaml", d))
    np.testing.assert_allclose(s.vertices(7), frames[7] * 1e-3, atol=1e-12)
    np.savez(tmp_path / "short.npz", vertices=frames[:3])
    d["objects"][0]["deformation"]["file"] = "short.npz"
    rc, _, err = cli("scene", "check", write_yaml(tmp_path / "bad.yaml", d))
    assert rc == 2 and "objects[0].deformation.file" in err and "3 frames" in err
    np.savez(tmp_path / "wrongv.npz", vertices=frames[:, :5])
    d["objects"][0]["deformation"]["file"] = "wrongv.npz"
    rc, _, err = cli("scene", "check", write_yaml(tmp_path / "bad2.yaml", d))
    assert rc == 2 and "5 vertices per frame" in err


# -- scene mesh --------------------------------------------------------------------------------

def test_scene_mesh_writes_frame_geometry(tmp_path, cli):
    out = tmp_path / "f.ply"
    rc, stdout, err = cli("scene", "mesh", SCENES / "liver_edge_breathing.yaml", "--frame", "50", "-o", out)
    assert rc == 0, err
    s = load_scene(SCENES / "liver_edge_breathing.yaml")
    m = trimesh.load(out, process=False)
    assert len(m.faces) == s.num_faces
    np.testing.assert_array_equal(m.faces, s.faces)
    np.testing.assert_allclose(m.vertices, s.vertices(50), atol=1e-6)   # float32 in the file
    obj = m.metadata["_ply_raw"]["face"]["data"]["object_id"]
    np.testing.assert_array_equal(obj.reshape(-1), s.face_object)
    side = json.loads((tmp_path / "f.ply.json").read_text())
    assert side["units"] == "m" and [o["name"] for o in side["objects"]] == [o.name for o in s.objects]
    rc, _, err = cli("scene", "mesh", SCENES / "liver_edge_breathing.yaml", "--frame", "9999", "-o", out)
    assert rc == 2 and "--frame" in err


# -- random scenes -----------------------------------------------------------------------------

def test_random_scenes_are_deterministic_and_valid(tmp_path, cli):
    a, b = tmp_path / "a", tmp_path / "b"
    rc, out, err = cli("scene", "random", "--seed", "11", "--count", "2", "--frames", "40", "-o", a)
    assert rc == 0, err
    rc, _, err = cli("scene", "random", "--seed", "11", "--count", "2", "--frames", "40", "-o", b)
    assert rc == 0, err
    files = sorted(a.glob("*.yaml"))
    assert len(files) == 2
    for f in files:
        assert f.read_bytes() == (b / f.name).read_bytes()
        s = load_scene(f)
        report = check_camera_path(s)             # raises if the camera enters an object
        assert report.min_distance >= 0.005
        for o in s.objects:                       # and explicitly: outside every closed mesh
            mesh = trimesh.Trimesh(o.vertices(0, 0.0), o.mesh.faces, process=False)
            assert not mesh.contains(s.camera_positions()).any()
    assert yaml.safe_load((a / "random_00011.yaml").read_text())["trajectory"] != \
        yaml.safe_load((a / "random_00012.yaml").read_text())["trajectory"]
