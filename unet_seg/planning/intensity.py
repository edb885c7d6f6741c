"""The normalisation rule: per-image percentiles, or nnU-Net's fixed window for absolute units.

- ``intensity=relative``: per-image percentiles 1 / 99.8 (the project's default; microscopy
  counts, whose scale changes with illumination and gain from image to image).
- ``intensity=absolute``: a fixed dataset-wide window, as nnU-Net normalises CT: clip to the
  foreground's 0.5 / 99.5 percentiles over the whole training set, then z-score by the
  foreground's mean and std over the whole set (the same numbers for every image, stored with the
  model). One channel only: one window cannot serve channels of different units.
- ``intensity=auto`` (default): the window where the intensities look absolute (values below
  :data:`ABSOLUTE_BELOW`, CT-like, or a float image) *and* the cases agree: each case's 0.5 and
  99.5 percentiles lie within :data:`AGREE` of the dataset's 0.5-99.5 range of each other (a
  dataset whose cases are on different scales is not in absolute units, whatever its dtype).
  Looking absolute without agreeing (or without the per-case figures, a fingerprint from before
  they were measured): per-image percentiles widened to 0.5 / 99.5. Otherwise 1 / 99.8.
"""

from __future__ import annotations

from typing import Any

from unet_seg.errors import UsageError
from unet_seg.planning.fingerprint import Fingerprint
from unet_seg.planning.rules import Decision

ABSOLUTE_BELOW = -100.0  # CT units start at -1024; microscopy counts are never negative
AGREE = 0.1  # per-case percentiles this close (share of the dataset's range): one scale
CHOICES = ("auto", "absolute", "relative")


def case_spread(channel: dict[str, Any]) -> float | None:
    """How far the cases' 0.5 and 99.5 percentiles lie apart, as a share of the dataset's
    0.5-99.5 range (the larger of the two spreads); None where it cannot be measured (one case,
    a fingerprint without per-case figures, a constant image)."""
    cases = channel.get("case_percentiles") or []
    width = channel["percentiles"]["99.5"] - channel["percentiles"]["0.5"]
    if len(cases) < 2 or width <= 0:
        return None
    lows, highs = [c[0] for c in cases], [c[1] for c in cases]
    return max(max(lows) - min(lows), max(highs) - min(highs)) / width


def fixed_window(channel: dict[str, Any]) -> dict[str, Any] | None:
    """nnU-Net's window of ``channel``: ``{window: [fg p0.5, fg p99.5], mean, std}`` of the
    foreground, or None where the foreground gives no usable one (none, or constant)."""
    fg = channel.get("foreground_percentiles")
    mean, std = channel.get("foreground_mean"), channel.get("foreground_std")
    if not fg or mean is None or not std or not fg["0.5"] < fg["99.5"]:
        return None
    return {"window": [fg["0.5"], fg["99.5"]], "mean": mean, "std": std}


def _window_decision(window: dict[str, Any], why: str) -> Decision:
    low, high = window["window"]
    return Decision(
        "normalization",
        f"fixed window {low:g}..{high:g}, z-score {window['mean']:.4g}/{window['std']:.4g}",
        f"{why}: clipped to the foreground's 0.5-99.5 percentiles over all cases and z-scored "
        "by its mean/std (nnU-Net's CT scheme), the same for every image",
        {f"normalization.{k}": v for k, v in window.items()},
    )


def _percentiles(low: float, high: float, why: str) -> Decision:
    return Decision(
        "normalization",
        f"percentiles {low:g}-{high:g}",
        why,
        {"normalization.low": low, "normalization.high": high},
    )


def normalization(fp: Fingerprint, intensity: str = "auto") -> Decision:
    """The normalisation decision for ``fp`` under the user's ``intensity`` (module docstring);
    ``UsageError`` for an unknown choice, or ``absolute`` where no window can be made."""
    if intensity not in CHOICES:
        raise UsageError(f"intensity={intensity!r}: choose {', '.join(CHOICES)}")
    lowest = min(c["min"] for c in fp.intensity)
    if intensity == "relative":
        return _percentiles(1.0, 99.8, "intensity=relative: each image scaled by its own")
    window = fixed_window(fp.intensity[0]) if fp.channels == 1 else None
    if intensity == "absolute":
        if fp.channels != 1:
            raise UsageError(
                f"intensity=absolute: one fixed window for {fp.channels} channels of different "
                "units is not supported; use intensity=relative or auto"
            )
        if window is None:
            raise UsageError(
                f"intensity=absolute: {fp.source.get('images') or fp.source.get('root')}: the "
                "foreground intensities are constant or missing, so they give no window"
            )
        return _window_decision(window, "intensity=absolute")
    looks = lowest < ABSOLUTE_BELOW or fp.dtype.startswith("float")
    if not looks:
        return _percentiles(
            1.0, 99.8, f"{fp.dtype} counts from {lowest:g}: microscopy, scaled per image"
        )
    what = f"intensities down to {lowest:g}" if lowest < ABSOLUTE_BELOW else f"{fp.dtype} images"
    spread = case_spread(fp.intensity[0]) if fp.channels == 1 else None
    if window is not None and spread is not None and spread <= AGREE:
        return _window_decision(
            window,
            f"{what} look absolute and the cases' 0.5/99.5 percentiles agree within "
            f"{spread:.1%} of the range (<= {AGREE:.0%})",
        )
    if fp.channels != 1:
        unlike = f"{fp.channels} channels need one window each, which is not supported"
    elif spread is None or window is None:
        unlike = "no per-case or foreground figures to fix a window from"
    else:
        unlike = f"the cases' percentiles differ by {spread:.1%} of the range (> {AGREE:.0%})"
    return _percentiles(0.5, 99.5, f"{what} look absolute, but {unlike}: per-image, widened")
