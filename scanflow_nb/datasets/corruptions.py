"""The 15 corruptions of MNIST-C (Mu & Gilmer, 2019), re-implemented with numpy/scipy.

Each works on square grey images of any side length in [0, 1]: spatial amounts (shift, blur
length, stripe width...) are given for 28x28 images and scaled to the actual side, never below
one pixel. `severity` runs from 1 (mild) to 5 (strong). The same `seed` gives the same output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..errors import ScanflowError

Rng = np.random.Generator


def _px(amount: float, side: int) -> int:
    """A length given for 28-pixel images, scaled to `side` pixels (at least 1)."""
    return max(1, int(round(amount * side / 28)))


def _about_center(img: np.ndarray, matrix: np.ndarray, order: int = 1) -> np.ndarray:
    center = (np.array(img.shape) - 1) / 2
    return ndimage.affine_transform(img, matrix, offset=center - matrix @ center, order=order, mode="constant")


def _draw(img: np.ndarray, points: np.ndarray, every: int = 1) -> np.ndarray:
    """Set to 1 the pixels along the polyline through `points` ((k, 2) row/col floats)."""
    out = img.copy()
    side = img.shape[0]
    for start, end in zip(points[:-1], points[1:]):
        steps = max(2, int(np.ceil(np.abs(end - start).max())) + 1)
        line = np.rint(np.linspace(start, end, steps)).astype(int)[::every]
        line = np.clip(line, 0, side - 1)
        out[line[:, 0], line[:, 1]] = 1.0
    return out


def shot_noise(img, sev, rng: Rng):
    photons = (60, 25, 12, 5, 3)[sev - 1]
    return rng.poisson(img * photons) / photons


def impulse_noise(img, sev, rng: Rng):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[sev - 1]
    out = img.copy()
    hit = rng.random(img.shape) < amount
    out[hit] = rng.integers(0, 2, int(hit.sum()))
    return out


def glass_blur(img, sev, rng: Rng):
    sigma, delta, rounds = ((0.7, 1, 1), (0.9, 2, 1), (1.0, 2, 2), (1.1, 3, 2), (1.5, 4, 2))[sev - 1]
    side = img.shape[0]
    out = ndimage.gaussian_filter(img, sigma * side / 28)
    reach = _px(delta, side)
    rows, cols = np.indices(img.shape)
    for _ in range(rounds):
        dr, dc = rng.integers(-reach, reach + 1, (2, *img.shape))
        out = out[np.clip(rows + dr, 0, side - 1), np.clip(cols + dc, 0, side - 1)]
    return ndimage.gaussian_filter(out, sigma * side / 28)


def motion_blur(img, sev, rng: Rng):
    length = _px((3, 5, 7, 9, 11)[sev - 1], img.shape[0])
    angle = rng.uniform(0, np.pi)
    kernel = np.zeros((2 * length + 1, 2 * length + 1))
    t = np.linspace(0, length, 4 * length + 1)
    kernel[np.rint(length - t * np.sin(angle)).astype(int), np.rint(length + t * np.cos(angle)).astype(int)] = 1
    kernel = np.roll(kernel, (int(round(length * np.sin(angle) / 2)), -int(round(length * np.cos(angle) / 2))), (0, 1))
    return ndimage.convolve(img, kernel / kernel.sum(), mode="constant")


def shear(img, sev, rng: Rng):
    amount = (0.15, 0.25, 0.35, 0.45, 0.55)[sev - 1] * rng.choice([-1, 1])
    return _about_center(img, np.array([[1.0, amount], [0.0, 1.0]]))


def scale(img, sev, rng: Rng):
    factor = (0.85, 0.75, 0.65, 0.55, 0.45)[sev - 1]
    return _about_center(img, np.eye(2) / factor)


def rotate(img, sev, rng: Rng):
    degrees = (12, 22, 32, 42, 52)[sev - 1] * rng.choice([-1, 1])
    return ndimage.rotate(img, degrees, reshape=False, order=1, mode="constant")


def brightness(img, sev, rng: Rng):
    return img + (0.1, 0.2, 0.3, 0.4, 0.5)[sev - 1]


def translate(img, sev, rng: Rng):
    reach = _px((2, 3, 4, 5, 6)[sev - 1], img.shape[0])
    offset = rng.integers(-reach, reach + 1, 2)
    axis = rng.integers(0, 2)
    offset[axis] = reach * rng.choice([-1, 1])  # at least one axis moves by the full amount
    return ndimage.shift(img, offset, order=0, mode="constant")


def stripe(img, sev, rng: Rng):
    side = img.shape[0]
    width = _px((2, 3, 4, 5, 6)[sev - 1], side)
    start = int(rng.integers(side // 4, max(side // 4 + 1, 3 * side // 4 - width + 1)))
    out = img.copy()
    out[:, start : start + width] = 1.0 - out[:, start : start + width]
    return out


def fog(img, sev, rng: Rng):
    strength = (0.3, 0.5, 0.7, 0.9, 1.2)[sev - 1]
    side = img.shape[0]
    field = sum(ndimage.gaussian_filter(rng.random(img.shape), side / f, mode="wrap") * (1 / f) for f in (2, 4, 8))
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    return (img + strength * field) * img.max() / (img.max() + strength + 1e-12)


def spatter(img, sev, rng: Rng):
    side = img.shape[0]
    cut, level = ((1.6, 0.6), (1.3, 0.7), (1.1, 0.8), (0.9, 0.9), (0.7, 1.0))[sev - 1]
    noise = ndimage.gaussian_filter(rng.normal(size=img.shape), max(0.6, side / 28))
    noise /= noise.std() + 1e-12
    return np.maximum(img, np.where(noise > cut, level, 0.0))


def _border_point(rng: Rng, side: int) -> np.ndarray:
    along, edge = rng.uniform(0, side - 1), rng.integers(0, 4)
    return np.array([[along, 0], [along, side - 1], [0, along], [side - 1, along]][edge], dtype=float)


def dotted_line(img, sev, rng: Rng):
    side = img.shape[0]
    lines, every = ((1, 3), (1, 2), (2, 3), (2, 2), (3, 2))[sev - 1]
    out = img
    for _ in range(lines):
        out = _draw(out, np.stack([_border_point(rng, side), _border_point(rng, side)]), every=every)
    return out


def zigzag(img, sev, rng: Rng):
    side = img.shape[0]
    lines, corners = ((1, 2), (1, 3), (2, 2), (2, 3), (3, 3))[sev - 1]
    out = img
    for _ in range(lines):
        out = _draw(out, rng.uniform(0, side - 1, (corners + 1, 2)))
    return out


def canny_edges(img, sev, rng: Rng):
    """Edge map: Gaussian smoothing, Sobel gradient magnitude, hysteresis thresholds (no thinning)."""
    side = img.shape[0]
    smooth = ndimage.gaussian_filter(img, (0.5, 0.7, 0.9, 1.1, 1.3)[sev - 1] * side / 28)
    magnitude = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    if magnitude.max() <= 0:
        return np.zeros_like(img)
    magnitude /= magnitude.max()
    strong, weak = magnitude > 0.4, magnitude > 0.15
    labels, count = ndimage.label(weak)
    keep = np.unique(labels[strong])
    return np.isin(labels, keep[keep > 0]).astype(img.dtype)


_FUNCTIONS: dict[str, Callable[[np.ndarray, int, Rng], np.ndarray]] = {
    f.__name__: f
    for f in (
        shot_noise,
        impulse_noise,
        glass_blur,
        motion_blur,
        shear,
        scale,
        rotate,
        brightness,
        translate,
        stripe,
        fog,
        spatter,
        dotted_line,
        zigzag,
        canny_edges,
    )
}
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCTIONS)


def corrupt(images: np.ndarray, name: str, severity: int = 3, seed: int | None = 0) -> np.ndarray:
    """`images` ((n, side, side) or one (side, side) image, values in [0, 1]) with corruption `name`.

    Returns a new float32 array of the same shape, clipped to [0, 1]; the input is not changed.
    """
    if name not in _FUNCTIONS:
        raise ScanflowError(f"unknown corruption {name!r}; choose one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ScanflowError(f"severity must be a whole number from 1 to 5, got {severity!r}")
    arr = np.asarray(images, dtype=np.float64)
    single = arr.ndim == 2
    batch = arr[None] if single else arr
    if batch.ndim != 3 or batch.shape[1] != batch.shape[2] or batch.shape[1] < 2:
        raise ScanflowError(f"corrupt expects square grey images of shape (n, side, side), got {arr.shape}")
    if not np.isfinite(batch).all():
        raise ScanflowError("corrupt: images contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    func = _FUNCTIONS[name]
    out = np.stack([func(img, int(severity), rng) for img in batch]) if len(batch) else batch.copy()
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out[0] if single else out
