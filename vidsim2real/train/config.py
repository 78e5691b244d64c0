"""Typed, strict training configuration (dataclasses mirroring the pipeline stages).

Unknown keys are errors (with a "did you mean"), values are type-checked by the one strict
YAML reader (``strict_yaml``), overrides ``a.b=value`` may only name existing keys; ``resolve``
returns the final config and ``to_yaml`` its YAML.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError
from ..raster import BACKENDS
from ..strict_yaml import apply_override, did_you_mean, load_yaml, read_dataclass
from ..texture import INITS, KINDS, TextureConfig
from ..texture.cells import BORDER_WIDTHS
from ..translate.config import EXPOSURES, ModelConfig
from ..translate.model import MODELS
from .losses import LossWeights


@dataclass
class RandomScenes:
    count: int = 0          # random scenes drawn with `scene random` (cached in the run folder)
    seed: int = 0           # first seed; keep disjoint from the surrogate's (>= 100000)
    frames: int = 60
    instrument_probability: float = 0.5


@dataclass
class RealData:
    paths: list = field(default_factory=list)     # folders/files of images and videos
    stride: int = 1
    circular_mask: bool = False
    surrogate_scenes: int = 0     # when > 0: render a surrogate set into the run folder first
    surrogate_views: int = 8      # views per surrogate scene
    surrogate_seed: int = 0       # random scenes 100000 + 1000 * seed ..: disjoint from training scenes
    surrogate_scope_mask: bool = False   # circular scope mask on the rendered surrogate frames


@dataclass
class Data:
    scenes: list = field(default_factory=list)    # scene files whose trajectories give sim views
    random_scenes: RandomScenes = field(default_factory=RandomScenes)
    max_offset: int = 20          # frames between the two views of a pair (1..max_offset)
    check_paths: bool = True      # check every camera path (clearance, inside organs) before training
    render_size: list = field(default_factory=list)   # [W, H] render size; crops of `size` are taken
                                                      # from it (default: equal to size, no crop)
    real: RealData = field(default_factory=RealData)


@dataclass
class Optim:
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4
    texture_lr_mult: float = 10.0
    lr_step: int = 100000
    lr_gamma: float = 0.5
    grad_clip: float = 0.0


@dataclass
class Log:
    every: int = 10
    images_every: int = 200
    checkpoint_every: int = 500
    snapshot_minutes: float = 0.0   # also keep a slim model every N minutes of training (snapshots/); 0: none
    tensorboard: bool = True


@dataclass
class TrainConfig:
    seed: int = 0
    run_dir: str = "runs/default"
    device: str = "auto"          # auto | cpu | cuda
    backend: str = "auto"         # rasterizer
    steps: int = 10000
    max_minutes: float = 0.0      # stop (and save) after this many minutes of training in one invocation; 0: no limit
    batch: int = 1
    size: list = field(default_factory=lambda: [128, 128])    # W, H of rendered views and real crops
    amp: str = "bf16"             # bf16 autocast on CUDA; none
    init_from: str = ""           # a checkpoint to start from (fine-tuning): its weights and texture
                                  # sets wherever names and shapes match; the rest starts fresh
    data: Data = field(default_factory=Data)
    model: ModelConfig = field(default_factory=ModelConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: Optim = field(default_factory=Optim)
    log: Log = field(default_factory=Log)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def validate(cfg: TrainConfig, file: str) -> TrainConfig:
    """Range and choice checks beyond types."""
    def bad(where, msg):
        return UserError(msg, file=file, field=where)
    if cfg.steps < 0:
        raise bad("steps", "must be >= 0")
    if cfg.max_minutes < 0:
        raise bad("max_minutes", "must be >= 0 (0: no time limit)")
    if cfg.batch < 1:
        raise bad("batch", "must be >= 1")
    if len(cfg.size) != 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 16 for s in cfg.size):
        raise bad("size", f"expected [W, H] with integers >= 16, got {cfg.size}")
    if cfg.size[0] % 2 ** cfg.model.n_down or cfg.size[1] % 2 ** cfg.model.n_down:
        raise bad("size", f"W and H must be divisible by 2^model.n_down = {2 ** cfg.model.n_down}")
    if cfg.model.type not in MODELS:
        raise bad("model.type", f"must be one of {', '.join(MODELS)}, got '{cfg.model.type}'"
                                f"{did_you_mean(cfg.model.type, MODELS)}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise bad("device", f"must be auto, cpu or cuda, got '{cfg.device}'")
    if cfg.backend not in BACKENDS:
        raise bad("backend", f"must be one of {', '.join(BACKENDS)}, got '{cfg.backend}'")
    if cfg.amp not in ("bf16", "none"):
        raise bad("amp", f"must be bf16 or none, got '{cfg.amp}'")
    if cfg.texture.kind not in KINDS:
        raise bad("texture.kind", f"must be one of {', '.join(KINDS)}")
    if cfg.texture.init not in INITS:
        raise bad("texture.init", f"must be one of {', '.join(INITS)}")
    for name in ("dim", "n_res", "style_dim", "mlp_dim", "dis_dim", "dis_layers", "dis_scales"):
        if getattr(cfg.model, name) < 1:
            raise bad(f"model.{name}", "must be >= 1")
    if cfg.texture.channels < 1 or cfg.texture.levels < 1 or cfg.texture.resolution < 4:
        raise bad("texture", "channels, levels >= 1 and resolution >= 4")
    if cfg.texture.albedo_init not in ("scene", "real"):
        raise bad("texture.albedo_init", f"must be scene or real, got '{cfg.texture.albedo_init}'")
    if cfg.texture.albedo_init == "real" and not cfg.texture.albedo:
        raise bad("texture.albedo_init", "real needs texture.albedo: true")
    if cfg.texture.detail and (cfg.model.type != "oneway" or not cfg.model.features):
        raise bad("texture.detail", "needs model.type oneway with model.features")
    if not 0 <= cfg.texture.detail_strength <= 4:
        raise bad("texture.detail_strength", "must be in [0, 4]")
    if cfg.texture.detail_texel_size <= 0 or cfg.texture.detail_resolution < 8:
        raise bad("texture.detail_texel_size", "must be > 0, with texture.detail_resolution >= 8")
    if cfg.texture.albedo_with_detail and not (cfg.texture.albedo_init == "real" and cfg.texture.detail):
        raise bad("texture.albedo_with_detail", "needs texture.albedo_init: real and texture.detail: true")
    if cfg.texture.albedo_translated and cfg.texture.albedo_init != "real":
        raise bad("texture.albedo_translated", "needs texture.albedo_init: real")
    if cfg.texture.albedo_statistic not in ("mean", "median", "relative"):
        raise bad("texture.albedo_statistic",
                  f"must be mean, median or relative, got {cfg.texture.albedo_statistic!r}")
    if cfg.texture.detail_scale not in ("footprint", "real"):
        raise bad("texture.detail_scale", f"must be footprint or real, got '{cfg.texture.detail_scale}'")
    if cfg.texture.detail_scale == "real" and not cfg.texture.detail:
        raise bad("texture.detail_scale", "real needs texture.detail: true")
    if cfg.texture.detail_bands and not (cfg.texture.detail and cfg.texture.detail_match):
        raise bad("texture.detail_bands", "needs texture.detail: true and texture.detail_match: true")
    if cfg.texture.detail_chroma and not (cfg.texture.detail and cfg.texture.detail_match):
        raise bad("texture.detail_chroma", "needs texture.detail: true and texture.detail_match: true")
    if cfg.texture.detail_cells and not (cfg.texture.detail and cfg.texture.detail_match):
        raise bad("texture.detail_cells", "needs texture.detail: true and texture.detail_match: true")
    names = cfg.texture.detail_cells_classes
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise bad("texture.detail_cells_classes", f"must be a list of class names, got {names!r}")
    if names and not cfg.texture.detail_cells:
        raise bad("texture.detail_cells_classes", "needs texture.detail_cells: true")
    choices = ("fit", *BORDER_WIDTHS)
    if cfg.texture.detail_cells_width not in choices:
        raise bad("texture.detail_cells_width",
                  f"must be {', '.join(choices)}, got {cfg.texture.detail_cells_width!r}")
    if cfg.texture.detail_cells_width != "fit" and not cfg.texture.detail_cells:
        raise bad("texture.detail_cells_width", "needs texture.detail_cells: true")
    bumps = cfg.texture.detail_bumps
    if bumps != "fit" and (isinstance(bumps, bool) or not isinstance(bumps, (int, float)) or not 0.0 <= bumps <= 0.5):
        raise bad("texture.detail_bumps", f"must be fit or a number in [0, 0.5] (dome height x cell size), got {bumps!r}")
    if bumps and not cfg.texture.detail_cells:
        raise bad("texture.detail_bumps", "needs texture.detail_cells: true (the domes are the cells)")
    if bumps and cfg.steps > 0:
        # the domes relight frames where they are translated; training views keep the mesh's shading
        raise bad("texture.detail_bumps", f"shades translated frames only, so it needs steps: 0 (got {cfg.steps})")
    relief = cfg.texture.detail_relief
    if isinstance(relief, bool) or not isinstance(relief, (int, float)) or not 0.0 <= relief <= 0.02:
        raise bad("texture.detail_relief", f"must be a number in [0, 0.02] (metres of relief, std), got {relief!r}")
    names = cfg.texture.detail_relief_classes
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise bad("texture.detail_relief_classes", f"must be a list of class names, got {names!r}")
    if relief and not (names and cfg.texture.detail):
        raise bad("texture.detail_relief", "needs texture.detail: true and texture.detail_relief_classes")
    if relief and cfg.steps > 0:
        # like the domes: the relief relights frames where they are translated, not training views
        raise bad("texture.detail_relief", f"shades translated frames only, so it needs steps: 0 (got {cfg.steps})")
    if not 0 <= cfg.texture.detail_relief_blur <= 8:
        raise bad("texture.detail_relief_blur", f"must be in [0, 8] (levels), got {cfg.texture.detail_relief_blur}")
    if not 0 < cfg.texture.detail_relief_paint <= 1:
        raise bad("texture.detail_relief_paint", f"must be in (0, 1], got {cfg.texture.detail_relief_paint}")
    if cfg.texture.detail_matte and not cfg.texture.detail:
        raise bad("texture.detail_matte", "needs texture.detail: true")
    if cfg.texture.detail_aligned and not cfg.texture.detail:
        raise bad("texture.detail_aligned", "needs texture.detail: true")
    if not 1 <= cfg.texture.detail_sharpness <= 64:
        raise bad("texture.detail_sharpness", "must be in [1, 64]")
    if not (isinstance(cfg.texture.detail_lod, int) and 0 <= cfg.texture.detail_lod <= 8):
        raise bad("texture.detail_lod", "must be an integer in [0, 8] (prefiltered levels; 0 = none)")
    if cfg.texture.detail_streams not in ("object", "shared"):
        raise bad("texture.detail_streams", f"must be object or shared, got '{cfg.texture.detail_streams}'")
    if not -4.0 <= float(cfg.texture.detail_lod_bias) <= 4.0:
        raise bad("texture.detail_lod_bias", f"must be in [-4, 4] (levels), got {cfg.texture.detail_lod_bias}")
    if cfg.texture.albedo and (cfg.model.type != "oneway" or not cfg.model.features or cfg.texture.channels < 3):
        raise bad("texture.albedo", "needs model.type oneway with model.features and texture.channels >= 3")
    if cfg.model.recolour and cfg.model.residual:
        raise bad("model.recolour", "cannot be combined with model.residual (both decide what the output is)")
    if not 0 < cfg.model.recolour_sigma <= 64:
        raise bad("model.recolour_sigma", f"must be in (0, 64] pixels, got {cfg.model.recolour_sigma}")
    if cfg.model.exposure not in EXPOSURES:
        raise bad("model.exposure", f"must be one of {', '.join(EXPOSURES)}, got '{cfg.model.exposure}'")
    if cfg.model.exposure_level < 0 or (cfg.model.exposure_level > 0 and cfg.model.exposure != "protect"):
        raise bad("model.exposure_level", f"must be >= 0 (0: fitted) and needs model.exposure: protect, got "
                                          f"{cfg.model.exposure_level:g} with model.exposure: {cfg.model.exposure}")
    for name in ("residual", "camera", "dis_detail", "dis_classes", "recolour"):
        if getattr(cfg.model, name) and cfg.model.type != "oneway":
            raise bad(f"model.{name}", "only the oneway model has this option")
    if cfg.model.camera_field not in ("none", "real", "real_frame"):
        raise bad("model.camera_field", f"must be none, real or real_frame, got '{cfg.model.camera_field}'")
    if cfg.model.camera_field != "none" and not cfg.model.camera:
        raise bad("model.camera_field", f"{cfg.model.camera_field} needs model.camera: true")
    for name, kinds in (("camera_noise", ("learned", "real")), ("camera_black", ("none", "real")),
                        ("camera_cast", ("none", "real"))):
        value = getattr(cfg.model, name)
        if value not in kinds:
            raise bad(f"model.{name}", f"must be {' or '.join(kinds)}, got '{value}'")
        if value == "real" and not cfg.model.camera:
            raise bad(f"model.{name}", "real needs model.camera: true")
    if cfg.model.gloss not in ("none", "real"):
        raise bad("model.gloss", f"must be none or real, got '{cfg.model.gloss}'")
    if cfg.model.gloss == "real" and not (cfg.texture.albedo and cfg.texture.albedo_init == "real"):
        raise bad("model.gloss", "real needs texture.albedo: true and texture.albedo_init: real")
    if cfg.model.grade not in ("none", "real", "curve"):
        raise bad("model.grade", f"must be none, real or curve, got '{cfg.model.grade}'")
    if cfg.model.grade != "none" and cfg.model.type != "oneway":
        raise bad("model.grade", f"{cfg.model.grade} needs model.type: oneway, got '{cfg.model.type}'")
    if cfg.model.grade_level and cfg.model.grade == "none":
        raise bad("model.grade_level", "needs model.grade: real or curve")
    if cfg.model.diffuse not in ("none", "real"):
        raise bad("model.diffuse", f"must be none or real, got '{cfg.model.diffuse}'")
    if cfg.model.diffuse == "real" and not (cfg.texture.albedo and cfg.texture.albedo_init == "real"):
        raise bad("model.diffuse", "real needs texture.albedo: true and texture.albedo_init: real")
    if cfg.model.specular not in ("tinted", "white"):
        raise bad("model.specular", f"must be tinted or white, got '{cfg.model.specular}'")
    if cfg.model.specular == "white" and not (cfg.model.recolour and cfg.texture.albedo):
        raise bad("model.specular", "white needs model.recolour: true and texture.albedo: true")
    if cfg.model.camera_blur not in ("none", "real"):
        raise bad("model.camera_blur", f"must be none or real, got '{cfg.model.camera_blur}'")
    if cfg.model.camera_blur == "real" and not cfg.model.camera:
        raise bad("model.camera_blur", "real needs model.camera: true")
    if cfg.model.dis_classes < 0 or (cfg.model.dis_classes and not cfg.model.dis_detail):
        raise bad("model.dis_classes", "must be >= 0, and > 0 only with model.dis_detail: true")
    if cfg.loss.detail < 0:
        raise bad("loss.detail", "must be >= 0 (0: off)")
    if cfg.loss.detail > 0 and cfg.model.type != "oneway":
        raise bad("loss.detail", "only the oneway model has the detail loss")
    if cfg.loss.detail_crops < 1:
        raise bad("loss.detail_crops", "must be >= 1")
    rs = cfg.data.render_size
    if rs:
        if len(rs) != 2 or any(not isinstance(v, int) or isinstance(v, bool) for v in rs) \
                or rs[0] < cfg.size[0] or rs[1] < cfg.size[1]:
            raise bad("data.render_size", f"expected [W, H] integers at least size {cfg.size}, got {rs}")
    if cfg.data.max_offset < 1:
        raise bad("data.max_offset", "must be >= 1")
    if cfg.optim.lr <= 0:
        raise bad("optim.lr", "must be > 0")
    if not cfg.data.scenes and cfg.data.random_scenes.count == 0:
        raise bad("data.scenes", "give scene files and/or data.random_scenes.count > 0")
    if not cfg.data.real.paths and cfg.data.real.surrogate_scenes == 0:
        raise bad("data.real.paths", "give real frame folders/videos or data.real.surrogate_scenes > 0")
    for i, s in enumerate(cfg.data.scenes):
        if not isinstance(s, str):
            raise bad(f"data.scenes[{i}]", f"expected a path, got {s!r}")
    for i, s in enumerate(cfg.data.real.paths):
        if not isinstance(s, str):
            raise bad(f"data.real.paths[{i}]", f"expected a path, got {s!r}")
    for k in ("every", "images_every", "checkpoint_every"):
        if getattr(cfg.log, k) < 1:
            raise bad(f"log.{k}", "must be >= 1")
    if cfg.log.snapshot_minutes < 0:
        raise bad("log.snapshot_minutes", "must be >= 0 (0: no snapshots)")
    return cfg


def resolve(path: str | Path | None, overrides: list[str], base: dict | None = None) -> TrainConfig:
    """Load a config file (or a dict ``base``), apply ``key=value`` overrides, validate.

    Relative paths inside the file are resolved against the file's folder.
    """
    if base is not None:
        data, file = base, "checkpoint config"
    else:
        data, file = load_yaml(path), str(path)
    data = data or {}
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", file=file)
    full = TrainConfig().to_dict()
    _merge(full, data, file, "")
    if path is not None and base is None:  # paths in the file are relative to the file
        root = Path(path).resolve().parent
        _absolutize(full, root)
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"override '{ov}' is not key=value", field="overrides")
        key, value = ov.split("=", 1)
        apply_override(full, key.strip(), value, "command line")
    _absolutize(full, Path.cwd())          # paths given on the command line: relative to here
    cfg = read_dataclass(TrainConfig, full, file)
    return validate(cfg, file)


def _abs(root: Path, p):
    if not isinstance(p, str):
        return p                              # type errors are reported by read_dataclass/validate
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (root / q).resolve())


def _absolutize(full: dict, root: Path) -> None:
    if full.get("init_from"):
        full["init_from"] = _abs(root, full["init_from"])
    data = full["data"]
    if isinstance(data.get("scenes"), list):
        data["scenes"] = [_abs(root, s) for s in data["scenes"]]
    real = data.get("real")
    if isinstance(real, dict) and isinstance(real.get("paths"), list):
        real["paths"] = [_abs(root, s) for s in real["paths"]]


def _merge(dst: dict, src: dict, file: str, path: str) -> None:
    """Merge a user mapping into the defaults, refusing unknown keys."""
    for key, value in src.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in dst:
            raise UserError(f"unknown key{did_you_mean(str(key), dst.keys())}", file=file, field=where)
        if isinstance(dst[key], dict):
            if not isinstance(value, dict):
                raise UserError(f"expected a mapping, got {value!r}", file=file, field=where)
            _merge(dst[key], value, file, where)
        else:
            dst[key] = value
