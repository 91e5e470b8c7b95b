"""A procedural benchmark with ground truth for class-specific evidence (the demo profile's data).

Every class belongs to a *sibling group*.  All classes of a group share a large
**group part** (a shape with a texture, e.g. a striped square) and each class
has its own small **unique part** (a dot, a plus, a ring or a small wedge in
its own hue) drawn elsewhere in the image.  Telling the group apart is easy (a
large part in the group's hue, shape and texture); telling two siblings apart
needs the unique part, which is small, sometimes faint (blended with the
background) and whose hue range touches its sibling's (they overlap by a hair),
so siblings are what a model confuses.
The paper judges class-specificity by the overlap of two maps only; here a map
can also be scored against the pixels that really separate two classes.

Label ``y = group · siblings + sibling``.  Each image is drawn by its own random
generator, seeded from a hash of ``(seed, split, index)``, so any image can be
regenerated alone and the splits are disjoint by construction.  Clutter: a
muted colour-gradient background with low-frequency waves and pixel noise,
random positions, sizes, rotations and colours, and thin lines and corners
that belong to no class.  Distractors are drawn last and may occlude parts; the
masks hold only the visible pixels of each part.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .._io import atomic_path, cache_dir, config_hash

GROUP_SHAPES: tuple[str, ...] = ("disk", "square", "triangle", "diamond", "hexagon")
GROUP_TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "solid", "rings")
SIBLING_SHAPES: tuple[str, ...] = ("dot", "plus", "ring", "wedge")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_GROUPS = len(GROUP_SHAPES) * len(GROUP_TEXTURES)

# Per-channel mean and std of the default training split (measured, rounded; tests/test_synthetic.py checks
# them).
MEAN: tuple[float, float, float] = (0.50, 0.49, 0.48)
STD: tuple[float, float, float] = (0.19, 0.20, 0.20)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides the images; ranges are ``(low, high)``, drawn uniformly per image.

    Radii are in pixels of a 64-pixel image (scaled with ``size``).  ``unique_colours="sibling"``: the
    unique part of sibling s has hue ``0.1 + s·sibling_hue_step ± sibling_hue_jitter`` (jitter > step / 2
    makes neighbouring ranges overlap); ``"random"``: any colour, so only its shape tells the siblings
    apart (much harder: the demo models would need far longer training).  ``unique_alpha`` blends the
    unique part with the background.  ``group_hues``: the group part has hue ``group / groups``.
    """

    groups: int = 5
    siblings: int = 2
    size: int = 64
    group_radius: tuple[float, float] = (11.0, 15.0)
    unique_radius: tuple[float, float] = (2.5, 5.0)
    unique_alpha: tuple[float, float] = (0.5, 1.0)
    distractors: tuple[int, int] = (1, 3)
    background_saturation: float = 0.4
    group_hues: bool = True
    unique_contrast: float = 0.45
    unique_colours: str = "sibling"
    sibling_hue_step: float = 0.08
    sibling_hue_jitter: float = 0.042
    noise: float = 0.05
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 4000, "val": 2000, "test": 1000})

    def __post_init__(self) -> None:
        for name in ("groups", "siblings", "size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if not 1 <= self.groups <= MAX_GROUPS:
            raise ValueError(f"groups must be between 1 and {MAX_GROUPS}, got {self.groups}")
        if not 2 <= self.siblings <= len(SIBLING_SHAPES):
            raise ValueError(
                f"siblings must be between 2 and {len(SIBLING_SHAPES)} (unique parts: "
                f"{', '.join(SIBLING_SHAPES)}), got {self.siblings}"
            )
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        for name in ("group_radius", "unique_radius", "unique_alpha", "distractors"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.unique_alpha[1] > 1:
            raise ValueError(f"unique_alpha must lie in [0, 1], got {self.unique_alpha}")
        g_hi, u_hi = self.scaled(self.group_radius[1]), self.scaled(self.unique_radius[1])
        if 2 * (g_hi + 1) > self.size or (g_hi + u_hi + 2) > self.size * 0.55:
            raise ValueError(f"group_radius {self.group_radius} is too large for {self.size}-pixel images")
        if not 0 <= self.background_saturation <= 1:
            raise ValueError(f"background_saturation must lie in [0, 1], got {self.background_saturation}")
        if not 0 <= self.unique_contrast <= 0.8:
            raise ValueError(f"unique_contrast must lie in [0, 0.8], got {self.unique_contrast}")
        if self.unique_colours not in ("sibling", "random"):
            raise ValueError(f"unique_colours must be 'sibling' or 'random', got {self.unique_colours!r}")
        if not (0 < self.sibling_hue_step and 0 <= self.sibling_hue_jitter < self.sibling_hue_step):
            raise ValueError(
                f"need 0 < sibling_hue_step and 0 <= sibling_hue_jitter < sibling_hue_step, "
                f"got {self.sibling_hue_step} and {self.sibling_hue_jitter}"
            )
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if set(self.split_sizes) != set(SPLITS) or any(int(n) < 1 for n in self.split_sizes.values()):
            raise ValueError(f"split_sizes must give a positive size for each of {SPLITS}, got "
                             f"{self.split_sizes}")

    @property
    def num_classes(self) -> int:
        return self.groups * self.siblings

    def scaled(self, pixels: float) -> float:
        """A length given for 64-pixel images, at this config's ``size``."""
        return pixels * self.size / 64.0

    def to_dict(self) -> dict:
        """JSON-ready description (hashed into cache keys)."""
        return {**asdict(self), "format_version": FORMAT_VERSION}


def class_group(label: int, config: BenchmarkConfig) -> int:
    """Group of a class: ``label // siblings``."""
    return _check_label(label, config) // config.siblings


def siblings(label: int, config: BenchmarkConfig) -> list[int]:
    """The other classes of ``label``'s group (its siblings), ascending."""
    label = _check_label(label, config)
    g = label // config.siblings
    return [g * config.siblings + s for s in range(config.siblings) if g * config.siblings + s != label]


def group_members(config: BenchmarkConfig) -> list[list[int]]:
    """Classes of every group: ``[[0, 1], [2, 3], ...]``."""
    return [[g * config.siblings + s for s in range(config.siblings)] for g in range(config.groups)]


def group_style(group: int) -> tuple[str, str]:
    """``(shape, texture)`` of a group part."""
    # == len(GROUP_TEXTURES): group g < n² gets shape g mod n, texture (g + g // n) mod n
    n = len(GROUP_SHAPES)
    return GROUP_SHAPES[group % n], GROUP_TEXTURES[(group + group // n) % n]


_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue", "violet",
              "magenta", "rose")


def sibling_hue(sibling: int, config: BenchmarkConfig) -> float:
    """Centre of the hue range of sibling ``sibling``'s unique part (``unique_colours="sibling"``)."""
    return (0.1 + sibling * config.sibling_hue_step) % 1.0


def class_names(config: BenchmarkConfig) -> list[str]:
    """Descriptive class names, e.g. ``"striped disk + yellow plus"`` (group part + unique part)."""
    adjective = {"solid": "plain", "stripes": "striped", "checker": "chequered", "dots": "dotted",
                 "rings": "ringed"}
    names = []
    for g in range(config.groups):
        shape, texture = group_style(g)
        for s in range(config.siblings):
            colour = ""
            if config.unique_colours == "sibling":
                colour = _HUE_NAMES[round(sibling_hue(s, config) * len(_HUE_NAMES)) % len(_HUE_NAMES)] + " "
            names.append(f"{adjective[texture]} {shape} + {colour}{SIBLING_SHAPES[s]}")
    return names


def _check_label(label: int, config: BenchmarkConfig) -> int:
    if isinstance(label, bool) or (isinstance(label, torch.Tensor) and label.is_floating_point()):
        raise TypeError(f"label must be an int class index, got {label!r}")
    try:
        label = operator.index(label)
    except TypeError:
        raise TypeError(f"label must be an int class index, got {type(label).__name__}") from None
    if not 0 <= label < config.num_classes:
        raise ValueError(f"label must lie in 0..{config.num_classes - 1}, got {label}")
    return label


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def image_seed(seed: int, split: str, index: int) -> int:
    """The per-image generator's seed: a hash of ``(seed, split, index)``."""
    blob = f"casekit-synthetic/{int(seed)}/{_check_split(split)}/{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


# ---------------------------------------------------------------------------------------------------------
# Drawing.  Shapes are implicit functions on a pixel grid in a rotated local frame (u, v); every shape of
# radius r fits inside the disc of radius r around its centre.


def _frame(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
           angle: float) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _polygon(u: np.ndarray, v: np.ndarray, sides: int, apothem: float, phase: float = 0.0) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        a = phase + 2 * math.pi * k / sides
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _group_shape(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if shape == "disk":
        return u * u + v * v <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7 * r
    if shape == "triangle":
        return _polygon(u, v, 3, 0.5 * r, phase=math.pi / 2)
    if shape == "diamond":
        return np.abs(u) / r + np.abs(v) / (0.6 * r) <= 1.0
    if shape == "hexagon":
        return _polygon(u, v, 6, 0.866 * r)
    raise ValueError(f"unknown group shape {shape!r}")


def _unique_shape(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if shape == "dot":
        return u * u + v * v <= r * r
    if shape == "plus":
        w = max(0.75, 0.3 * r)
        au, av = np.abs(u), np.abs(v)
        return ((au <= w) & (av <= r)) | ((av <= w) & (au <= r))
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "wedge":
        return _polygon(u, v, 3, 0.5 * r, phase=math.pi / 2)
    raise ValueError(f"unknown unique shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Boolean pattern: True where the texture's second colour goes."""
    if texture == "solid":
        return np.zeros(u.shape, dtype=bool)
    if texture == "stripes":
        return np.floor(u / (period / 2)) % 2 == 1
    if texture == "checker":
        return (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 1
    if texture == "dots":
        du, dv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        return du * du + dv * dv <= 0.09
    if texture == "rings":
        return np.floor(np.sqrt(u * u + v * v) / (period / 2)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_dist: float) -> np.ndarray:
    """A uniform random RGB colour at Euclidean distance ≥ ``min_dist`` from every colour in ``against``."""
    against = np.atleast_2d(against)
    col = rng.random(3)
    for _ in range(64):
        if np.min(np.linalg.norm(against - col, axis=1)) >= min_dist:
            return col
        col = rng.random(3)
    # fall back: the colour farthest away among the corners of the RGB cube
    corners = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=float)
    return corners[np.argmax(np.min(np.linalg.norm(corners[:, None] - against[None], axis=2), axis=1))]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _muted(rng: np.random.Generator, saturation: float) -> np.ndarray:
    """A random colour pulled towards its grey level: ``grey + saturation · (c − grey)``."""
    c = rng.random(3)
    grey = c.mean()
    return grey + saturation * (c - grey)


class Rendered(NamedTuple):
    """One image: ``image`` float32 ``[3, H, W]`` in [0, 1], its label and bool masks ``[H, W]``."""

    image: torch.Tensor
    label: int
    masks: dict[str, torch.Tensor]


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
        _GRIDS[size] = (yy, xx)
    return _GRIDS[size]


def render(
    config: BenchmarkConfig,
    seed: int,
    split: str,
    index: int,
    omit: tuple[str, ...] = (),
) -> Rendered:
    """Draw image ``index`` of ``split`` (label ``index mod C``).

    ``omit`` may name ``"unique"``, ``"shared"`` or ``"clutter"`` to leave that
    unpainted while every random draw stays the same: the counterfactual image
    without it (the masks stay those of the full image).  The pixels where it
    differs from the full image are exactly the part's mask.
    """
    if index < 0 or int(index) != index:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    bad = set(omit) - {"unique", "shared", "clutter"}
    if bad:
        raise ValueError(f"omit may name 'unique', 'shared' and 'clutter', got {sorted(bad)}")
    rng = np.random.default_rng(image_seed(seed, split, index))
    S = config.size
    yy, xx = _grid(S)
    label = int(index) % config.num_classes
    group, sibling = divmod(label, config.siblings)
    shape, texture = group_style(group)

    # background: a gradient between two muted colours along a random direction, brightness waves
    c0, c1 = _muted(rng, config.background_saturation), _muted(rng, config.background_saturation)
    theta = rng.uniform(0, 2 * math.pi)
    t = ((xx - S / 2) * math.cos(theta) + (yy - S / 2) * math.sin(theta)) / S + 0.5
    img = c0[:, None, None] + (c1 - c0)[:, None, None] * np.clip(t, 0, 1)[None]
    waves = np.zeros((S, S))
    for _ in range(2):
        fy, fx = rng.uniform(-3, 3, size=2)
        waves += rng.uniform(0.03, 0.08) * np.sin(2 * math.pi * (fx * xx + fy * yy) / S
                                                  + rng.uniform(0, 2 * math.pi))
    img = np.clip(img + waves[None], 0, 1)

    # group part: position, size, rotation, texture period; colours of the group's hue (or random)
    R = config.scaled(rng.uniform(*config.group_radius))
    gcy, gcx = rng.uniform(R + 1, S - R - 1, size=2)
    gu, gv = _frame(yy, xx, gcy, gcx, rng.uniform(0, 2 * math.pi))
    shared = _group_shape(shape, gu, gv, R)
    pattern = _texture(texture, gu, gv, period=config.scaled(rng.uniform(5.0, 7.0)))
    if config.group_hues:
        hue = group / config.groups + rng.uniform(-0.03, 0.03)
        sat, val = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
        col_a, col_b = _hsv(hue, sat, val), _hsv(hue, sat, val * rng.uniform(0.3, 0.5))
    else:
        bg_at_group = img[:, int(gcy), int(gcx)]
        col_a = _contrasting_colour(rng, bg_at_group, 0.4)
        col_b = _contrasting_colour(rng, np.stack([bg_at_group, col_a]), 0.35)

    # unique part: away from the group part, small, a random colour that stands out from the background
    r = config.scaled(rng.uniform(*config.unique_radius))
    for _ in range(200):
        ucy, ucx = rng.uniform(r + 1, S - r - 1, size=2)
        if math.hypot(ucy - gcy, ucx - gcx) >= R + r + 2:
            break
    else:  # the corner farthest from the group part always fits (checked in BenchmarkConfig)
        ucy = r + 1 if gcy > S / 2 else S - r - 1
        ucx = r + 1 if gcx > S / 2 else S - r - 1
    uu, uv = _frame(yy, xx, ucy, ucx, rng.uniform(-0.35, 0.35))
    unique = _unique_shape(SIBLING_SHAPES[sibling], uu, uv, r)
    if not unique.any():  # a sub-pixel shape: at least its centre pixel
        unique[min(int(ucy), S - 1), min(int(ucx), S - 1)] = True
    if config.unique_colours == "sibling":
        hue = sibling_hue(sibling, config) + rng.uniform(-config.sibling_hue_jitter,
                                                         config.sibling_hue_jitter)
        u_col = _hsv(hue, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0))
    else:
        u_col = _contrasting_colour(rng, img[:, min(int(ucy), S - 1), min(int(ucx), S - 1)],
                                    config.unique_contrast)
    u_alpha = rng.uniform(*config.unique_alpha)

    # clutter that belongs to no class: thin lines and corners in random colours, drawn last.  A position
    # that would hide more than 40 % of the unique part or 30 % of the group part is drawn again.
    clutter: list[tuple[np.ndarray, np.ndarray]] = []
    occluded = np.zeros((S, S), dtype=bool)
    n_unique, n_shared = unique.sum(), shared.sum()
    for _ in range(int(rng.integers(config.distractors[0], config.distractors[1] + 1))):
        col = rng.random(3)
        corner = rng.random() < 0.5
        length = config.scaled(rng.uniform(8.0, 16.0))
        for _ in range(10):
            cy, cx = rng.uniform(0, S, size=2)
            du, dv = _frame(yy, xx, cy, cx, rng.uniform(0, 2 * math.pi))
            m = (np.abs(dv) <= 0.6) & (du >= -length / 2) & (du <= length / 2)
            if corner:
                m |= (np.abs(du + length / 2) <= 0.6) & (dv >= 0) & (dv <= length / 2)
            hidden = occluded | m
            if (unique & ~hidden).sum() >= 0.6 * n_unique and (shared & ~hidden).sum() >= 0.7 * n_shared:
                clutter.append((m, col))
                occluded = hidden
                break

    unique_vis = unique & ~occluded
    shared_vis = shared & ~unique & ~occluded
    if "shared" not in omit:
        paint = (np.where(pattern, 1.0, 0.0)[None] * col_b[:, None, None]
                 + np.where(pattern, 0.0, 1.0)[None] * col_a[:, None, None])
        img = np.where(shared[None], paint, img)
    if "unique" not in omit:
        img = np.where(unique[None], u_alpha * u_col[:, None, None] + (1 - u_alpha) * img, img)
    for m, col in clutter if "clutter" not in omit else ():
        img = np.where(m[None], col[:, None, None], img)
    if config.noise > 0:
        img = img + rng.normal(0.0, config.noise, size=img.shape)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    masks = {"unique": torch.from_numpy(unique_vis.copy()), "shared": torch.from_numpy(shared_vis.copy())}
    return Rendered(torch.from_numpy(img), label, masks)


# ---------------------------------------------------------------------------------------------------------
# The dataset: one split drawn once, cached as uint8 tensors.


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``(x − mean) / std`` per channel for images in [0, 1] (``[3, H, W]`` or ``[B, 3, H, W]``)."""
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return (images.float() - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, clipped to [0, 1] for display."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.float() * std + mean).clamp(0, 1)


def generate(
    config: BenchmarkConfig, seed: int, split: str, n: int, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Draw images ``0..n-1`` of a split →
    ``{"images": uint8 [n,3,H,W], "labels": int64 [n], "parts": uint8 [n,H,W]}``.

    ``parts`` is 1 on the visible group part, 2 on the visible unique part, 0 elsewhere.
    """
    S = config.size
    images = torch.empty((n, 3, S, S), dtype=torch.uint8)
    parts = torch.zeros((n, S, S), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i in tqdm(range(n), desc=f"drawing {split} images", unit="img", disable=not progress, leave=False):
        out = render(config, seed, split, i)
        images[i] = (out.image * 255).round().to(torch.uint8)
        parts[i][out.masks["shared"]] = 1
        parts[i][out.masks["unique"]] = 2
        labels[i] = out.label
    return {"images": images, "labels": labels, "parts": parts}


def load_split(
    config: BenchmarkConfig, seed: int, split: str, n: int, cache: bool = True, progress: bool = True
) -> dict[str, torch.Tensor]:
    """:func:`generate`, cached in ``cache_dir("synthetic")`` by a hash of ``(config, seed, split, n)``."""
    _check_split(split)
    if not cache:
        return generate(config, seed, split, n, progress)
    key = config_hash({"config": config.to_dict(), "seed": int(seed), "split": split, "n": int(n)})
    path = cache_dir("synthetic") / f"{split}-seed{int(seed)}-n{int(n)}-{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # unreadable (e.g. a foreign or damaged file): draw it again
            pass
    data = generate(config, seed, split, n, progress)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return data


class SyntheticDataset(Dataset):
    """One split of the benchmark: items ``(image, label, masks)``.

    ``image`` is normalised float32 ``[3, H, W]`` (:data:`MEAN`, :data:`STD`),
    ``label`` an int and ``masks`` a dict of bool ``[H, W]`` tensors under
    ``"unique"`` (the class's own part) and ``"shared"`` (its group's part).
    """

    def __init__(
        self,
        split: str = "test",
        seed: int = 0,
        config: BenchmarkConfig | None = None,
        size: int | None = None,
        cache: bool = True,
        progress: bool = True,
    ) -> None:
        self.config = config if config is not None else BenchmarkConfig()
        self.split = _check_split(split)
        self.seed = int(seed)
        n = self.config.split_sizes[split] if size is None else size
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"size must be a positive int, got {n!r}")
        data = load_split(self.config, self.seed, split, n, cache=cache, progress=progress)
        self.images_uint8: torch.Tensor = data["images"]
        self.labels: torch.Tensor = data["labels"]
        self.parts: torch.Tensor = data["parts"]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} images")
        return index % len(self)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        i = self._index(index)
        return normalize(self.images_uint8[i] / 255.0), int(self.labels[i]), self.masks(i)

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        """``{"unique": bool [H, W], "shared": bool [H, W]}`` of one image."""
        p = self.parts[self._index(index)]
        return {"unique": p == 2, "shared": p == 1}

    def raw(self, index: int) -> torch.Tensor:
        """The un-normalised image, float32 ``[3, H, W]`` in [0, 1], for display."""
        return self.images_uint8[self._index(index)].float() / 255.0

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images normalised ``[N, 3, H, W]`` and labels ``[N]`` at once (for training and evaluation)."""
        return normalize(self.images_uint8.float() / 255.0), self.labels.clone()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> list[str]:
        return class_names(self.config)

    @property
    def groups(self) -> list[list[int]]:
        return group_members(self.config)

    def siblings(self, label: int) -> list[int]:
        return siblings(label, self.config)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"SyntheticDataset(split={self.split!r}, seed={self.seed}, n={len(self)}, "
            f"{c.groups} groups × {c.siblings} siblings, {c.size}×{c.size})"
        )

