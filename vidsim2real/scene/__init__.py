"""Scenes: load + validate YAML scene files, animate cameras, objects and tissue."""
from .camera import Intrinsics, look_at
from .checks import check_camera_path, summary
from .loader import dump_scene, load_scene
from .scene import Lighting, Scene, SceneObject

__all__ = ["Intrinsics", "look_at", "check_camera_path", "summary", "dump_scene", "load_scene",
           "Lighting", "Scene", "SceneObject"]
