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
from ..io.video import read_frames
from ..layout import nhwc_to_nchw

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# the bundled real-domain set (surrogate clips of held-out random scenes, with label maps):
# the default real frames of fit-textures and of `metrics`
DEFAULT_REAL = Path(__file__).resolve().parent / "data" / "real_surrogate"
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}


def circular_crop_box(img: np.ndarray, threshold: int = 12) -> tuple[slice, slice] | None:
    """The largest square inside a laparoscope frame's circular field of view as (rows, cols)
    slices, or None when the frame has no dark surround. The field of view is the bright region
    (max channel > ``threshold``)."""
    mask = img.max(axis=2) > threshold
    if mask.mean() > 0.97 or mask.mean() < 0.05:
        return None
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    r = min(ys.max() - ys.min(), xs.max() - xs.min()) / 2.0
    half = int(r / np.sqrt(2.0))
    y0, x0 = max(int(round(cy)) - half, 0), max(int(round(cx)) - half, 0)
    if half < 1:
        return None
    return slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half)


def circular_crop(img: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Crop a laparoscope frame to the largest square inside its circular field of view
    (``circular_crop_box``); frames without a dark surround come back unchanged."""
    box = circular_crop_box(img, threshold)
    return img if box is None else img[box]


def resize_short(img: np.ndarray, short: int, nearest: bool = False) -> np.ndarray:
    """Resize so the shorter side is ``short`` pixels (area filter when shrinking; ``nearest``
    for label maps, whose ids must not blend)."""
    h, w = img.shape[:2]
    s = short / min(h, w)
    if abs(s - 1.0) < 1e-6:
        return img
    size = (max(short, int(round(w * s))), max(short, int(round(h * s))))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


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
        labels: also find each frame's class label map (``labels/<frame name>.png``, uint8 class
            ids, the frame's size; in a ``labels`` folder beside the frame's folder or inside it,
            as surrogate sets and segmented footage such as CholecSeg8k come) for
            ``sample_labelled``. Every map is checked once here: another size than its frame, or
            (with ``known_ids``) a class id outside ``known_ids`` is a UserError naming the file.
        known_ids: the class ids a label map may hold (0 = background).
    Items: float tensors [3, H, W] in [0, 1].
    """

    def __init__(self, sources, size=(256, 256), resize: int | None = None, stride: int = 1,
                 circular_mask: bool = False, flip: bool = True, max_video_frames: int = 5000, seed: int = 0,
                 labels: bool = False, known_ids=None):
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
        self.video_labels: list[np.ndarray | None] = []
        self.video_sizes: list[tuple[int, int]] = []
        self.bad: set[str] = set()
        self.sources = [Path(s) for s in sources]
        self.labels = labels
        files = self._collect(sources)
        self._raw_video: list = []
        for f in files:
            if f.suffix.lower() in IMAGE_EXT:
                self.images.append(f)
            else:
                self._decode_video(f, stride, max_video_frames)
        if not self.images and not self.video_frames:
            raise UserError("no readable images or videos found", file=", ".join(str(s) for s in sources),
                            field="real.paths")
        self.label_paths: list[Path | None] = [None] * len(self)
        self.class_ids: set[int] = set()          # every class id the label maps hold
        if labels:
            self._find_labels(known_ids)

    # -- label maps ------------------------------------------------------------------------------
    def _label_file(self, index: int) -> Path | None:
        name = self.source_name(index) + ".png"
        where = self.images[index] if index < len(self.images) else None
        roots = ([where.parent / "labels", where.parent.parent / "labels"] if where is not None else []) + \
            [q / "labels" for s in self.sources for q in (s, s.parent)]
        return next((r / name for r in roots if (r / name).is_file()), None)

    def _find_labels(self, known_ids) -> None:
        """Find and check every frame's label map (size = its frame's, ids in ``known_ids``)."""
        known = None if known_ids is None else {int(i) for i in known_ids}
        for i in range(len(self)):
            f = self._label_file(i)
            if f is None:
                continue
            lab = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if lab is None or lab.ndim != 2:
                raise UserError("not a single-channel label map (class id per pixel)", file=f, field="labels")
            if i < len(self.images):
                img = cv2.imread(str(self.images[i]), cv2.IMREAD_COLOR)
                hw = None if img is None else img.shape[:2]
            else:
                hw = self.video_sizes[i - len(self.images)]
            if hw is not None and lab.shape != hw:
                raise UserError(f"label map is {lab.shape[1]}x{lab.shape[0]}, its frame {hw[1]}x{hw[0]}",
                                file=f, field="labels")
            ids = set(np.unique(lab).tolist())
            self.class_ids |= ids
            if known is not None:
                extra = sorted(ids - known)
                if extra:
                    raise UserError(f"class id(s) {', '.join(map(str, extra))} are in no training scene "
                                    f"(their ids: {', '.join(map(str, sorted(known)))})", file=f, field="labels")
            self.label_paths[i] = f
            if i >= len(self.images):       # decoded frames are prepared once, with their labels
                j = i - len(self.images)
                self.video_labels[j] = self._prepare(self._raw_video[j], lab)[1]
        self._raw_video = None

    @property
    def labelled(self) -> int:
        """How many frames have a label map."""
        return sum(p is not None for p in self.label_paths)

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
        got = 0
        frames = read_frames(path)
        try:
            for i, frame in enumerate(frames):
                if i % stride:
                    continue
                if self.labels:            # the raw frame decides the scope crop of its label map
                    self._raw_video.append(frame.copy() if self.circular_mask else None)
                self.video_frames.append(self._prepare(frame)[0])
                self.video_names.append(f"{path.stem}_{i:04d}")
                self.video_labels.append(None)
                self.video_sizes.append(frame.shape[:2])
                got += 1
                if got >= cap:
                    break
        except Exception as exc:  # corrupt container or stream: keep what decoded, report once
            text = (exc.message if isinstance(exc, UserError) else str(exc)).strip()   # the file is named once
            reason = text.splitlines()[0][:120] if text else type(exc).__name__
            self._report(path, f"cannot decode video ({reason})" + (f"; kept {got} frames" if got else ""))
        finally:
            frames.close()

    def _prepare(self, rgb: np.ndarray | None, label: np.ndarray | None = None):
        """(frame, label map) cropped to the scope view and resized (labels: nearest)."""
        if self.circular_mask and rgb is not None:
            box = circular_crop_box(rgb)
            if box is not None:
                rgb, label = rgb[box], None if label is None else label[box]
        return (None if rgb is None else resize_short(rgb, self.resize)), \
            (None if label is None else resize_short(label, self.resize, nearest=True))

    def _read_image(self, path: Path) -> np.ndarray | None:
        if str(path) in self.bad:
            return None
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            self._report(path, "cannot read image")
            return None
        return self._prepare(img[..., ::-1])[0]

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

    def label(self, index: int) -> np.ndarray | None:
        """The prepared label map of frame ``index`` (uint8 [H', W'], its frame's size), or None."""
        if self.label_paths[index] is None:
            return None
        if index >= len(self.images):
            return self.video_labels[index - len(self.images)]
        lab = cv2.imread(str(self.label_paths[index]), cv2.IMREAD_UNCHANGED)
        raw = cv2.imread(str(self.images[index]), cv2.IMREAD_COLOR) if self.circular_mask else None
        return self._prepare(raw, lab)[1]

    def native(self, index: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Frame ``index`` (uint8 [H, W, 3]) and its label map (uint8 [H, W] or None) at the
        footage's own resolution: cropped to the scope view, not resized — where its grain is
        the sensor's. Video frames are kept only as prepared, so those come resized."""
        if index >= len(self.images):
            return self.frame(index), self.label(index)
        if str(self.images[index]) in self.bad:
            return None, None
        img = cv2.imread(str(self.images[index]), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            return None, None
        rgb = img[..., ::-1]
        lab = None if self.label_paths[index] is None else cv2.imread(str(self.label_paths[index]), cv2.IMREAD_UNCHANGED)
        box = circular_crop_box(rgb) if self.circular_mask else None
        if box is not None:
            rgb, lab = rgb[box], None if lab is None else lab[box]
        return np.ascontiguousarray(rgb), lab

    def crop(self, img: np.ndarray, label: np.ndarray | None = None):
        """A random crop of the working size (and a random flip) of ``img``; with ``label``
        the same window of the label map too: (crop, label crop)."""
        W, H = self.size
        h, w = img.shape[:2]
        if h < H or w < W:
            img = cv2.resize(img, (max(W, w), max(H, h)), interpolation=cv2.INTER_LINEAR)
            if label is not None:
                label = cv2.resize(label, (max(W, w), max(H, h)), interpolation=cv2.INTER_NEAREST)
            h, w = img.shape[:2]
        y = int(self.rng.integers(0, h - H + 1))
        x = int(self.rng.integers(0, w - W + 1))
        out = img[y:y + H, x:x + W]
        lab = None if label is None else label[y:y + H, x:x + W]
        if self.flip and self.rng.random() < 0.5:
            out = out[:, ::-1]
            lab = None if lab is None else lab[:, ::-1]
        return out if label is None else (out, lab)

    def item(self, index: int, labels: bool = False):
        """Frame ``index`` (or the next readable one) cropped: [3, H, W] float in [0, 1]; with
        ``labels`` also its label crop [H, W] long (-1 where the frame has no label map)."""
        n = len(self)
        for k in range(n):  # skip unreadable files: fall through to the next frame
            i = (index + k) % n
            img = self.frame(i)
            if img is None:
                continue
            if not labels:
                out = self.crop(img)
                return nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(out))[None])[0].float() / 255.0
            lab = self.label(i)
            out, lab = self.crop(img, lab if lab is not None else np.zeros(img.shape[:2], np.uint8))
            t = nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(out))[None])[0].float() / 255.0
            lt = torch.from_numpy(np.ascontiguousarray(lab)).long()
            return t, (lt if self.label_paths[i] is not None else torch.full_like(lt, -1))
        raise UserError("no readable frames left (all files failed)", field="real.paths")

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.item(index)

    def sample(self, batch: int) -> torch.Tensor:
        """A random batch [B, 3, H, W] drawn with this dataset's own generator (resumable state)."""
        idx = self.rng.integers(0, len(self), size=batch)
        return torch.stack([self[int(i)] for i in idx])

    def sample_labelled(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of frames [B, 3, H, W] in [0, 1] and their label crops [B, H, W]
        (long class ids; -1 on frames without a label map), same generator as ``sample``."""
        idx = self.rng.integers(0, len(self), size=batch)
        items = [self.item(int(i), labels=True) for i in idx]
        return torch.stack([t for t, _ in items]), torch.stack([lab for _, lab in items])

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
