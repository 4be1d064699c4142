"""Samples as a person sees them: images as PNG pictures, table rows as tables, texts as text.

Shared by the labeling panel (the sample to label) and the drift monitor (a batch's most anomalous samples).
"""

import base64
import html
import io

import numpy as np


def image_png(array, size: int = 160) -> bytes:
    """PNG bytes of a grey (H, W) or colour (H, W, 3|4) array, scaled up without smoothing."""
    from PIL import Image

    a = np.asarray(array, dtype=float)
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    scaled = np.clip((a - lo) / ((hi - lo) or 1.0) * 255, 0, 255).astype(np.uint8)
    picture = Image.fromarray(scaled)
    factor = max(1, size // max(scaled.shape[:2]))
    picture = picture.resize((scaled.shape[1] * factor, scaled.shape[0] * factor), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def is_image(sample) -> bool:
    return isinstance(sample, np.ndarray) and (sample.ndim == 2 or (sample.ndim == 3 and sample.shape[2] in (3, 4)))


def sample_html(sample, feature_names=None) -> str:
    """A text sample as wrapped text, a tabular row (array, Series, dict) as a two-column table."""
    if isinstance(sample, str):
        return f"<div style='white-space:pre-wrap;max-width:40em'>{html.escape(sample)}</div>"
    if hasattr(sample, "items"):
        pairs = list(sample.items())
    else:
        values = np.ravel(sample)
        names = feature_names if feature_names is not None else [f"x{i}" for i in range(len(values))]
        pairs = list(zip(names, values))
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(f'{v:.4g}' if isinstance(v, (float, np.floating)) else str(v))}</td></tr>"
        for k, v in pairs
    )
    return f"<table>{rows}</table>"


def sample_view(sample, feature_names=None, size: int = 160) -> dict:
    """What a front end shows for one sample: {"image": data URL} for a picture, else {"html": ...}."""
    if is_image(sample):
        return {"image": "data:image/png;base64," + base64.b64encode(image_png(sample, size)).decode()}
    return {"html": sample_html(sample, feature_names)}
