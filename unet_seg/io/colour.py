"""Channel axes of colour and multi-channel images, and what a one-channel model sees of them.

Readers put a channel axis first (``(C, *spatial)``) and record its kind in
``metadata["channels"]``:

- ``"rgb"``, ``"rgba"``: colour (TIFF photometric RGB, PNG RGB/RGBA/palette);
- ``"grey+alpha"``: a grey image with an alpha channel (PNG ``LA``, TIFF extra samples);
- ``"channels"``: separate channels (ImageJ/OME ``C`` axis, e.g. fluorescence), or samples that
  are not RGB.

Decision for a model with one input channel (documented in docs/guides/batch-inference.md):
colour becomes luminance (ITU-R BT.709 weights, as ``skimage.color.rgb2gray``) and the alpha
channel is dropped, with a warning; separate channels are refused with a clear error, since no
single mix of them is right (pick a channel first). Outputs are always written without a colour
axis.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.709 luma weights, as skimage.color.rgb2gray: what "grey" means for a colour image.
LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)
COLOUR_KINDS = ("rgb", "rgba", "grey+alpha")


def channel_kind(count: int, *, rgb: bool, samples: bool = True) -> str:
    """The kind of a leading channel axis of ``count`` entries (see the module docstring).

    ``rgb``: the file says its samples are RGB; ``samples``: the channels are interleaved
    samples of one pixel (TIFF ``S``, PNG) rather than separate planes (a ``C`` axis).
    """
    if rgb and count in (3, 4):
        return "rgb" if count == 3 else "rgba"
    if samples and count == 2:
        return "grey+alpha"
    return "channels"


def to_luminance(array: np.ndarray, kind: str) -> np.ndarray:
    """``(C, *spatial)`` colour -> ``(1, *spatial)`` float32 grey: BT.709 luma of RGB(A), the
    grey channel of grey + alpha; alpha is dropped.

    Raises:
        ValueError: ``kind`` is not a colour kind (separate channels have no single grey).
    """
    if kind not in COLOUR_KINDS:
        raise ValueError(f"cannot turn {kind!r} into one grey channel")
    values = np.asarray(array, dtype=np.float32)
    if kind == "grey+alpha":
        return values[:1]
    grey = np.tensordot(LUMA_WEIGHTS, values[:3], axes=(0, 0))
    return grey[None].astype(np.float32, copy=False)
