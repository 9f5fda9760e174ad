"""The rough-ground heightfields of the scenes, and the height of one under a point (`heightfield_surface`).

    assets/rough_terrain.png   16 × 16 m, 205 × 205 samples (7.8 cm cells), smooth bumps of ±2 cm (a correlation
                               length of 0.3 m): scene_rough.xml, the walking bar's ground
    assets/terrain_train.png   30 × 30 m, 151 × 151 samples (20 cm cells), independent heights in ±2 cm (seed 1):
                               scene_terrain.xml, the training ground
    assets/terrain_bumpy.png   the same kind as terrain_train.png with another seed (2): scene_bumpy.xml, evaluation
    All are level (z = 0) in a 0.6 m square at the origin, where episodes start.

    python -m utils.terrain            # regenerate the PNGs (deterministic: fixed seeds)

Why two kinds: the shipped PPO policy walks 20 s over the smooth field without a fall (and over ±4 cm of it), while
the 20 cm cells of independent heights, at the same ±2 cm, fell it in 8 of 10 walks: sharper slopes under a sole
that spans one or two cells. They are also cheap: MJX collides a box with a heightfield by testing the prisms of a
fixed sub-grid of cells around it, sized by the box's bounding radius over the cell size
(`collision_driver._geom_groups`). The sole's radius is 8.7 cm, so 7.8 cm cells give a 4 × 4 sub-grid (32 prisms per
sole and physics step) and 20 cm cells 2 × 2 (8 prisms): 2.3× the flat scene's cost per step instead of 5.3×
(docs/benchmarks.md, "Terrain"). MJX also keeps only a few contact points per sole–field pair (the deepest of the
prisms' contacts), so a sole resting across a ridge is held by those alone.
"""

import argparse
from pathlib import Path

import jax.numpy as jp
import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parent.parent / "assets"
FIELDS = {  # png -> (half size m, samples per side, seed, smooth)
    "rough_terrain.png": (8.0, 205, 0, True),
    "terrain_train.png": (15.0, 151, 1, False),
    "terrain_bumpy.png": (15.0, 151, 2, False),
}
CORRELATION_M, LEVEL_RADIUS_M = 0.3, 0.3  # bump length scale of the smooth field; level square (half side) at origin


def make_field(half_size: float, samples: int, seed: int, smooth: bool) -> np.ndarray:
    """(samples, samples) heights in [0, 1]: white noise, smoothed by a Gaussian of CORRELATION_M if `smooth` (done
    in Fourier space, so the bumps are the same at any sampling), with a level square at the origin at height 0.5
    (z = 0 in the scenes: the field's geom sits at -elevation / 2)."""
    rng = np.random.default_rng(seed)
    if smooth:
        fine = max(samples, int(2 * half_size / 0.05))  # smooth on a ≤ 5 cm grid, then sample
        k = np.fft.fftfreq(fine, d=2 * half_size / fine)
        kx, ky = np.meshgrid(k, k, indexing="ij")
        gauss = np.exp(-2 * (np.pi * CORRELATION_M / 2) ** 2 * (kx**2 + ky**2))
        field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((fine, fine))) * gauss))
        idx = np.round(np.linspace(0, fine - 1, samples)).astype(int)
        field = field[np.ix_(idx, idx)]
    else:
        field = rng.uniform(0, 1, (samples, samples))
    field = (field - field.min()) / (field.max() - field.min())  # [0, 1]: MuJoCo rescales a PNG to this range anyway
    xs = np.linspace(-half_size, half_size, samples)
    level = np.abs(xs) <= LEVEL_RADIUS_M
    field[np.ix_(level, level)] = 0.5
    return field


def heightfield_surface(elevation, size, xy):
    """Height (...,) over points xy (..., 2) in a heightfield's frame (elevation (nrow, ncol) in [0, 1], size (4,)):
    each cell is two triangles split along the diagonal (col, row)-(col + 1, row + 1), as MuJoCo collides them."""
    nrow, ncol = elevation.shape
    u = (xy[..., 0] + size[0]) / (2 * size[0]) * (ncol - 1)  # fractional column
    v = (xy[..., 1] + size[1]) / (2 * size[1]) * (nrow - 1)  # fractional row
    c, r = jp.clip(jp.floor(u), 0, ncol - 2).astype(int), jp.clip(jp.floor(v), 0, nrow - 2).astype(int)
    fu, fv = jp.clip(u - c, 0.0, 1.0), jp.clip(v - r, 0.0, 1.0)
    h00, h10, h01, h11 = elevation[r, c], elevation[r, c + 1], elevation[r + 1, c], elevation[r + 1, c + 1]
    below = h00 + fu * (h10 - h00) + fv * (h11 - h10)  # triangle (c, r), (c+1, r), (c+1, r+1), where fu >= fv
    above = h00 + fv * (h01 - h00) + fu * (h11 - h01)  # triangle (c, r), (c, r+1), (c+1, r+1)
    return size[2] * jp.where(fu >= fv, below, above)


def write_fields():
    for name, (half, samples, seed, smooth) in FIELDS.items():
        field = make_field(half, samples, seed, smooth)
        Image.fromarray(np.round(field * 255).astype(np.uint8)).save(ASSETS / name)
        print(f"wrote {ASSETS / name}: {samples} × {samples}, {2 * half:g} × {2 * half:g} m")


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    write_fields()


if __name__ == "__main__":
    main()
