"""vidsim2real: simulated surgical 3D scenes to realistic, temporally consistent video.

Data flow (one sub-package per stage): ``scene`` (load, validate, animate) -> ``raster``
(G-buffers, exact correspondences) -> ``texture`` / ``shading`` / ``render`` -> ``translate`` /
``train`` (unpaired GAN) -> ``metrics`` and ``io`` (video, export).
"""

__version__ = "0.1.0"

from .errors import UserError  # noqa: F401
