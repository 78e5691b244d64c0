"""Real footage as training frames: folders of images and/or videos (MP4/AVI/MOV/MKV).

Videos are decoded once (imageio-ffmpeg, every ``stride``-th frame, resized to the working
size) and held in memory as uint8, so sampling is random access. Unreadable or corrupt files
are reported once by name and skipped; they never crash a training run. An empty source is a
clear error. Images are read lazily (OpenCV) and likewise skipped when they fail.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import UserError, warn
from ..layout import nhwc_to_nchw

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# the bundled real-domain set (surrogate clips of held-out random scenes, with label maps):
# the default real frames of fit-textures and of `metrics`
DEFAULT_REAL = Path(__file__).resolve().parent / "data" / "real_surrogate"
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}


def circular_crop(img: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Crop a laparoscope frame to the largest square inside its circular field of view.

    The field of view is the bright region (max channel > ``threshold``); frames without a
    dark surround come back unchanged.
    """
    mask = img.max(axis=2) > threshold
    if mask.mean() > 0.97 or mask.mean() < 0.05:
        return img
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    r = min(ys.max() - ys.min(), xs.max() - xs.min()) / 2.0
    half = int(r / np.sqrt(2.0))
    y0, x0 = int(round(cy)) - half, int(round(cx)) - half
    y0, x0 = max(y0, 0), max(x0, 0)
    out = img[y0:y0 + 2 * half, x0:x0 + 2 * half]
    return out if out.size else img


def resize_short(img: np.ndarray, short: int) -> np.ndarray:
    """Resize so the shorter side is ``short`` pixels (area filter when shrinking)."""
    h, w = img.shape[:2]
    s = short / min(h, w)
    if abs(s - 1.0) < 1e-6:
        return img
    size = (max(short, int(round(w * s))), max(short, int(round(h * s))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


class RealFrames(torch.utils.data.Dataset):
    """Frames from folders/files of images and videos.

    Args:
        sources: files or folders (searched recursively).
        size: (W, H) of the random crops returned.
        resize: shorter side after resizing, before cropping (default: max(W, H) * 1.125).
        stride: keep every ``stride``-th video frame.
        circular_mask: crop each frame to the inside of a circular scope view first.
        flip: random horizontal flips.
        max_video_frames: cap on decoded frames per video (memory).
    Items: float tensors [3, H, W] in [0, 1].
    """

    def __init__(self, sources, size=(256, 256), resize: int | None = None, stride: int = 1,
                 circular_mask: bool = False, flip: bool = True, max_video_frames: int = 5000, seed: int = 0):
        if stride < 1:
            raise UserError("stride must be >= 1", field="real.stride")
        self.size = (int(size[0]), int(size[1]))
        self.resize = int(resize or round(max(self.size) * 1.125))
        self.circular_mask = circular_mask
        self.flip = flip
        self.rng = np.random.default_rng(seed)
        self.images: list[Path] = []
        self.video_frames: list[np.ndarray] = []
        self.video_names: list[str] = []          # "<video stem>_<frame index:04d>" per decoded frame
        self.bad: set[str] = set()
        files = self._collect(sources)
        for f in files:
            if f.suffix.lower() in IMAGE_EXT:
                self.images.append(f)
            else:
                self._decode_video(f, stride, max_video_frames)
        if not self.images and not self.video_frames:
            raise UserError("no readable images or videos found", file=", ".join(str(s) for s in sources),
                            field="real.paths")

    # -- discovery and decoding ------------------------------------------------------------
    def _collect(self, sources) -> list[Path]:
        files = []
        for s in sources:
            p = Path(s)
            if not p.exists():
                raise UserError("not found", file=p, field="real.paths")
            # a set's label maps (labels/, written beside its frames) are not frames
            cand = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()
                                                  and "labels" not in q.relative_to(p).parts[:-1])
            files += [q for q in cand if q.suffix.lower() in IMAGE_EXT | VIDEO_EXT]
        return files

    def _report(self, path: Path, why: str) -> None:
        if str(path) not in self.bad:
            self.bad.add(str(path))
            warn(f"{path}: skipped, {why}")

    def _decode_video(self, path: Path, stride: int, cap: int) -> None:
        import imageio_ffmpeg
        got = 0
        try:
            reader = imageio_ffmpeg.read_frames(str(path))
            meta = next(reader)
            W, H = meta["size"]
            for i, raw in enumerate(reader):
                if i % stride:
                    continue
                frame = np.frombuffer(raw, dtype=np.uint8).reshape(H, W, 3)
                self.video_frames.append(self._prepare(frame))
                self.video_names.append(f"{path.stem}_{i:04d}")
                got += 1
                if got >= cap:
                    break
            reader.close()
        except Exception as exc:  # corrupt container or stream: keep what decoded, report once
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            self._report(path, f"cannot decode video ({reason})" + (f"; kept {got} frames" if got else ""))

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        if self.circular_mask:
            rgb = circular_crop(rgb)
        return resize_short(rgb, self.resize)

    def _read_image(self, path: Path) -> np.ndarray | None:
        if str(path) in self.bad:
            return None
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            self._report(path, "cannot read image")
            return None
        return self._prepare(img[..., ::-1])

    # -- dataset protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images) + len(self.video_frames)

    def source_name(self, index: int) -> str:
        """Where frame ``index`` came from: an image's stem, or "<video stem>_<frame:04d>"."""
        if index < len(self.images):
            return self.images[index].stem
        return self.video_names[index - len(self.images)]

    def frame(self, index: int) -> np.ndarray | None:
        """The prepared (resized) frame ``index`` as uint8 [H', W', 3], None if unreadable."""
        if index < len(self.images):
            return self._read_image(self.images[index])
        return self.video_frames[index - len(self.images)]

    def crop(self, img: np.ndarray) -> np.ndarray:
        W, H = self.size
        h, w = img.shape[:2]
        if h < H or w < W:
            img = cv2.resize(img, (max(W, w), max(H, h)), interpolation=cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y = int(self.rng.integers(0, h - H + 1))
        x = int(self.rng.integers(0, w - W + 1))
        out = img[y:y + H, x:x + W]
        if self.flip and self.rng.random() < 0.5:
            out = out[:, ::-1]
        return out

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self)
        for k in range(n):  # skip unreadable files: fall through to the next frame
            img = self.frame((index + k) % n)
            if img is not None:
                out = self.crop(img)
                return nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(out))[None])[0].float() / 255.0
        raise UserError("no readable frames left (all files failed)", field="real.paths")

    def sample(self, batch: int) -> torch.Tensor:
        """A random batch [B, 3, H, W] drawn with this dataset's own generator (resumable state)."""
        idx = self.rng.integers(0, len(self), size=batch)
        return torch.stack([self[int(i)] for i in idx])

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
