"""Deterministic synthetic samples: fluorescent nuclei (2D, 3D, a z-stack) and EM-like membranes.

``python -m unet_seg.data.samples [--out data_samples] [--seed 0]`` writes:

- ``2d/images/nuclei_XX.tif`` (uint8, 256 x 256), ``2d/labels/nuclei_XX.tif`` (0/1) and
  ``2d/instances/nuclei_XX.tif`` (instance ids, 0 = background),
- ``3d/image.nii.gz`` (uint16, (z, y, x) = 48 x 96 x 96, spacing (1.0, 0.5, 0.5)) and
  ``3d/label.nii.gz`` (0/1),
- ``stack/stack.tif`` (uint8, 16 x 256 x 256, ImageJ spacing (2.0, 0.5, 0.5) um),
  ``stack/stack_labels.tif`` (0/1) and ``stack/stack_instances.tif`` (uint16 ids),
- ``membranes/images/cells_XX.tif`` and ``membranes/labels/cells_XX.tif`` (1 = membrane, as in the
  ISBI 2012 configuration): Voronoi cells with blurred dark boundaries.

Masks are exact: they are drawn from the same geometry the images are rendered from. Where two
nuclei touch, the mask leaves a background seam between them (pixels with another object in their
8-neighbourhood), as in the U-Net paper's HeLa and PhC-U373 labels; the instance files keep the
objects whole. Every array depends only on ``--seed``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from unet_seg.io import Volume, write_volume

NUM_2D = 10  # enough variety for a train/val split by file (8 + 2)
NUM_MEMBRANES = 4


def nuclei(
    shape: Sequence[int],
    radius: tuple[float, float],
    count: int,
    rng: np.random.Generator,
    touching: float = 0.35,
    z_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random ellipses (2D) or ellipsoids (3D), some touching, and their brightness profile.

    Args:
        shape: ``(y, x)`` or ``(z, y, x)``.
        radius: in-plane semi-axis range in pixels; along z it is multiplied by ``z_scale``.
        count: placement attempts (objects that would overlap too much are skipped).
        touching: probability that an object is placed right against an earlier one.

    Returns:
        ``instances`` int32 ``shape`` (0 = background, 1.. = objects, later ones drawn on top) and
        ``profile`` float32 ``shape``: per-object brightness, a dome falling off towards the rim.
    """
    nd = len(shape)
    instances = np.zeros(shape, np.int32)
    profile = np.zeros(shape, np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(count):
        semi = rng.uniform(*radius) * np.array([rng.uniform(1.0, 1.6), 1.0])  # elongated
        angle = rng.uniform(0, np.pi)
        size = float(semi.mean())
        if placed and rng.random() < touching:  # right against a neighbour, sharing a border
            other, other_size = placed[rng.integers(len(placed))]
            direction = rng.normal(size=nd)
            direction[0] *= z_scale if nd == 3 else 1.0
            center = other + direction / np.linalg.norm(direction) * (other_size + size) * 0.9
        else:
            center = rng.uniform(0, 1, nd) * np.array(shape)
        if any(np.linalg.norm(center - c) < 0.8 * (s + size) for c, s in placed):
            continue
        placed.append((center, size))
        _draw(instances, profile, center, semi, angle, z_scale, len(placed), rng.uniform(0.55, 1.0))
    return instances, profile


def _draw(instances, profile, center, semi, angle, z_scale, label, brightness) -> None:
    """Paint one ellipse/ellipsoid (rotated in the (y, x) plane) into its bounding box."""
    nd = instances.ndim
    reach = np.full(nd, semi.max() + 1)
    if nd == 3:
        reach[0] = semi.mean() * z_scale + 1
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, instances.shape)
    if np.any(hi <= lo):
        return
    grid = np.meshgrid(
        *[np.arange(a, b) - c for a, b, c in zip(lo, hi, center, strict=True)], indexing="ij"
    )
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * grid[-1] + sin * grid[-2]
    v = -sin * grid[-1] + cos * grid[-2]
    q = (u / semi[0]) ** 2 + (v / semi[1]) ** 2
    if nd == 3:
        q = q + (grid[0] / (semi.mean() * z_scale)) ** 2
    inside = q <= 1.0
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    instances[box][inside] = label
    profile[box][inside] = brightness * (1.0 - 0.35 * q[inside])


def separated_mask(instances: np.ndarray) -> np.ndarray:
    """0/1 mask of ``instances`` with a background seam wherever two objects touch.

    A pixel is dropped when its full (3^nd) neighbourhood holds another object's id, so separate
    objects stay separate components even under 8-/26-connectivity. Returns uint8 ``shape``.
    """
    footprint = np.ones((3,) * instances.ndim, bool)
    big = np.where(instances > 0, instances, 0)
    small = np.where(instances > 0, instances, np.iinfo(np.int32).max)
    neighbour_max = ndi.maximum_filter(big, footprint=footprint, mode="constant")
    neighbour_min = ndi.minimum_filter(
        small, footprint=footprint, mode="constant", cval=np.iinfo(np.int32).max
    )
    seam = (instances > 0) & ((neighbour_max != instances) | (neighbour_min != instances))
    return ((instances > 0) & ~seam).astype(np.uint8)


def fluorescence(
    profile: np.ndarray,
    rng: np.random.Generator,
    blur: Sequence[float],
    photons: float = 60.0,
    background: float = 0.08,
    read_noise: float = 0.02,
) -> np.ndarray:
    """Microscope-like image in [0, 1] from a brightness ``profile``: texture, optics blur,
    uneven illumination, Poisson shot noise (``photons`` at brightness 1) and Gaussian read noise.
    Returns float32 like ``profile``."""
    texture = 1.0 + 0.15 * ndi.gaussian_filter(rng.normal(size=profile.shape), 1.5) / 0.19
    signal = ndi.gaussian_filter(profile * texture.astype(np.float32), blur)
    ramp = np.linspace(0.8, 1.2, profile.shape[-1], dtype=np.float32)  # vignetting-like gradient
    signal = (signal + background) * ramp
    noisy = rng.poisson(np.clip(signal, 0, None) * photons) / photons
    noisy = noisy + rng.normal(0.0, read_noise, profile.shape)
    return np.clip(noisy / 1.25, 0.0, 1.0).astype(np.float32)


def membranes(
    shape: tuple[int, int], cells: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """EM-like 2D image of Voronoi cells with dark boundaries, and its 0/1 membrane label.

    Returns ``image`` and ``label`` (1 = membrane, 2-3 px wide), both uint8 of ``shape``.
    """
    seeds = np.zeros(shape, bool)
    seeds[tuple(rng.integers(0, s, cells) for s in shape)] = True
    _, nearest = ndi.distance_transform_edt(~seeds, return_indices=True)
    cell = np.ravel_multi_index(tuple(nearest), shape)
    boundary = np.zeros(shape, bool)
    for axis in range(2):
        step = np.diff(cell, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(0, -1)
        boundary[tuple(lead)] |= step
    label = ndi.binary_dilation(boundary, iterations=1)
    tone = rng.uniform(0.55, 0.9, cell.max() + 1)[cell]  # cytoplasm shade per cell
    organelles = ndi.gaussian_filter(rng.normal(size=shape), 2.0) * 1.5
    clean = np.where(label, 0.15, tone + 0.15 * organelles)
    image = ndi.gaussian_filter(clean, 1.0) + rng.normal(0.0, 0.06, shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), label.astype(np.uint8)


def _uint(image: np.ndarray, dtype: type) -> np.ndarray:
    return (image * np.iinfo(dtype).max).round().astype(dtype)


def generate(out: str | Path = "data_samples", seed: int = 0) -> list[Path]:
    """Write all sample files under ``out`` (see module docstring); returns their paths."""
    out = Path(out)
    written: list[Path] = []
    streams = np.random.default_rng(seed).spawn(NUM_2D + NUM_MEMBRANES + 2)
    for i in range(NUM_2D):
        rng = streams[i]
        inst, profile = nuclei((256, 256), (8.0, 14.0), 40, rng)
        name = f"nuclei_{i:02d}.tif"
        spacing = (0.5, 0.5)
        written += [
            write_volume(
                out / "2d/images" / name,
                Volume(_uint(fluorescence(profile, rng, 1.5), np.uint8), spacing=spacing),
            ),
            write_volume(out / "2d/labels" / name, Volume(separated_mask(inst), spacing=spacing)),
            write_volume(
                out / "2d/instances" / name, Volume(inst.astype(np.uint16), spacing=spacing)
            ),
        ]
    for i in range(NUM_MEMBRANES):
        image, label = membranes((256, 256), 60, streams[NUM_2D + i])
        name = f"cells_{i:02d}.tif"
        written += [
            write_volume(out / "membranes/images" / name, image),
            write_volume(out / "membranes/labels" / name, label),
        ]

    rng = streams[-2]  # 3D NIfTI: near-isotropic voxels, 1.0 um along z, 0.5 um in-plane
    spacing3d = (1.0, 0.5, 0.5)
    inst, profile = nuclei((48, 96, 96), (7.0, 11.0), 30, rng, z_scale=0.5)
    image = _uint(fluorescence(profile, rng, (0.75, 1.5, 1.5)), np.uint16)
    written += [
        write_volume(
            out / "3d/image.nii.gz", Volume(image, spacing=spacing3d, metadata={"unit": "micron"})
        ),
        write_volume(
            out / "3d/label.nii.gz",
            Volume(separated_mask(inst), spacing=spacing3d, metadata={"unit": "micron"}),
        ),
    ]

    rng = streams[-1]  # a z-stack whose slices look like the 2D training images
    spacing_stack = (2.0, 0.5, 0.5)
    inst, profile = nuclei((16, 256, 256), (8.0, 14.0), 60, rng, z_scale=0.25)
    image = _uint(fluorescence(profile, rng, (0.5, 1.5, 1.5)), np.uint8)
    # Seams are drawn per slice: the stack is segmented slice by slice by the 2D model.
    mask = np.stack([separated_mask(plane) for plane in inst])
    written += [
        write_volume(out / "stack/stack.tif", Volume(image, spacing=spacing_stack)),
        write_volume(out / "stack/stack_labels.tif", Volume(mask, spacing=spacing_stack)),
        write_volume(
            out / "stack/stack_instances.tif", Volume(inst.astype(np.uint16), spacing=spacing_stack)
        ),
    ]
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="data_samples", help="output folder (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = generate(args.out, args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e6:.2f} MB, under {args.out}")


if __name__ == "__main__":
    main()
