"""Comparing two screenshots: the share of pixels that differ, SSIM, and a difference image.

Images of different sizes are compared on a white canvas the size of both (what one has and
the other lacks differs). SSIM is the mean structural similarity of the grey images over 7x7
windows (uniform weights, K1 = 0.01, K2 = 0.03: scikit-image's defaults), computed with
summed-area tables in numpy.
"""

from __future__ import annotations

import io
from pathlib import Path

WINDOW = 7
TOLERANCE = 8  # a channel may differ this much (of 255) before the pixel counts as changed


def load(data: bytes | Path):
    """An RGB image as a uint8 numpy array (height, width, 3)."""
    import numpy as np
    from PIL import Image

    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    with Image.open(io.BytesIO(raw)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _canvas(a, b):
    import numpy as np

    height, width = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    out = []
    for image in (a, b):
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        canvas[:image.shape[0], :image.shape[1]] = image
        out.append(canvas)
    return out


def ssim(a, b) -> float:
    """Mean SSIM of two RGB arrays of the same shape (on their grey levels)."""
    import numpy as np

    weights = np.array([0.299, 0.587, 0.114])
    x, y = (image.astype(np.float64) @ weights for image in (a, b))
    if min(x.shape) < WINDOW:
        return 1.0 if np.array_equal(x, y) else 0.0

    def mean(z):
        s = np.pad(z, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        w = WINDOW
        return (s[w:, w:] - s[:-w, w:] - s[w:, :-w] + s[:-w, :-w]) / (w * w)

    mx, my = mean(x), mean(y)
    n = WINDOW * WINDOW
    correction = n / (n - 1)  # sample (not population) variances, as scikit-image
    vx = (mean(x * x) - mx * mx) * correction
    vy = (mean(y * y) - my * my) * correction
    cov = (mean(x * y) - mx * my) * correction
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def compare(baseline: bytes | Path, actual: bytes | Path) -> tuple[dict, bytes]:
    """({"diff_ratio", "ssim", "same_size", "width", "height"}, the difference image as PNG).

    The difference image is the actual one faded, with changed pixels in red.
    """
    import numpy as np
    from PIL import Image

    a, b = load(baseline), load(actual)
    same_size = a.shape == b.shape
    a, b = _canvas(a, b)
    changed = (np.abs(a.astype(np.int16) - b.astype(np.int16)) > TOLERANCE).any(axis=2)
    picture = (255 - (255 - b.astype(np.float64)) * 0.25).astype(np.uint8)
    picture[changed] = (220, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    stats = {"diff_ratio": round(float(changed.mean()), 6), "ssim": round(ssim(a, b), 6),
             "same_size": same_size, "width": int(a.shape[1]), "height": int(a.shape[0])}
    return stats, buffer.getvalue()
