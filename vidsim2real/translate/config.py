"""The translator's configuration (the ``model`` section of a training config, stored in every
checkpoint so inference rebuilds the same networks)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..scene.scene import Exposure

EXPOSURES = ("scene", "fixed", "protect")


@dataclass
class ModelConfig:
    type: str = "munit"           # munit | oneway | cyclegan | pix2pix (translate.model.MODELS)
    features: bool = True         # neural textures as generator input (False: per-frame baseline)
    dim: int = 64
    n_down: int = 2
    n_res: int = 4
    style_dim: int = 8
    mlp_dim: int = 256
    dis_dim: int = 64
    dis_layers: int = 4
    dis_scales: int = 3
    pool_size: int = 50           # CycleGAN/pix2pix history of fakes for the discriminator
    residual: bool = False        # oneway: the generator adds a correction to its input image
    camera: bool = False          # oneway: learned vignetting and sensor noise on the output
    camera_field: str = "none"    # with camera: "real" fits the lens field (how the real frames darken
                                  # towards the corners) from the labelled real frames at the start;
                                  # "real_frame" the same with each class relative to itself in its own frame
    camera_noise: str = "learned" # with camera: "real" sets the sensor noise level from the real frames'
                                  # grain at the start (train.appearance.real_noise); "learned" starts near 0
    camera_black: str = "none"    # with camera: "real" fits the black levels (flare and black offset, one per
                                  # video) from the real frames' background at the start (real_black)
    camera_cast: str = "none"     # with camera: "real" fits colour casts (white balance and exposure, one per
                                  # video) from the real frames' class colours at the start (real_cast)
    camera_blur: str = "none"     # with camera: "real" fits a lens blur and a blur of geometric edges to the
                                  # real frames' sharpness at the start (train.appearance.real_blur)
    recolour: bool = False        # oneway: the generator outputs a smooth 3x3 colour matrix per pixel
                                  # applied to its base image's linear RGB (shading and edges kept)
    recolour_sigma: float = 8.0   # its smoothing, a Gaussian std in pixels (of the rendered frame)
    gloss: str = "none"           # albedo models: "real" fits each class's specular strength and shininess to the
                                  # real frames' colours at the start (train.appearance.real_gloss)
    diffuse: str = "none"         # albedo models: "real" fits each class's diffuse exponent m (falloff x (n.l)^m,
                                  # darker towards grazing angles) to the real frames' colours (real_diffuse)
    grade: str = "none"           # oneway: "real" fits how each class's chroma varies with its brightness across it
                                  # (and apart from it) to the real frames at the start (train.appearance.real_grade);
                                  # "curve": the same as curves, and the brightness across it too (its highlights)
    grade_level: bool = False     # with grade: also how each class's mean colour follows its mean brightness from
                                  # frame to frame (distance, light), as in the real frames (networks.level_fit)
    specular: str = "tinted"      # recolour with albedo: "white" adds the specular term after the colour matrix
                                  # and the detail layer (the light's colour); "tinted": through them
    exposure: str = "scene"       # the exposure of the frames the model sees: "scene" (the scene file's,
                                  # auto by default) or "fixed" (exposure 1: the scope light falls off
                                  # with distance as it does without auto exposure) or "protect"
                                  # (exposure 1, lowered in frames whose highlights pass exposure_level)
    exposure_level: float = 0.0   # protect: the highlight level (shading.meter's quantile of the sim render at
                                  # exposure 1) a frame is exposed down to; 0: fitted from the real frames at
                                  # the start (train.appearance.real_protect), and stored here
    dis_detail: bool = False      # oneway: also a patch discriminator on the high-pass band
                                  # (networks.DetailDiscriminator)
    dis_classes: int = 0          # > 0: that discriminator sees one-hot class maps of ids 1..N-1
                                  # (needs label maps with the real frames)

    def to_dict(self) -> dict:
        return asdict(self)


def model_exposure(mode: str, level: float = 0.0) -> Exposure | None:
    """The exposure a model's frames are rendered at (training and translation alike), from
    ``model.exposure`` and ``model.exposure_level``: None for the scene's own ("scene"),
    exposure 1 for "fixed" and for "protect" without a level yet, else protect at ``level``."""
    if mode == "scene":
        return None
    if mode == "protect" and level > 0:
        return Exposure(mode="protect", value=float(level))
    return Exposure(mode="fixed", value=1.0)
