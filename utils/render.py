"""Headless rendering helpers shared by the tools and the training files: frames from a qpos sequence, PNG / GIF /
MP4 writers, and a GL backend that works without a display and without the user exporting anything.

MuJoCo picks its OpenGL backend from `MUJOCO_GL` when `mujoco` is imported. On Linux without a display (no `DISPLAY`
or `WAYLAND_DISPLAY`) and without `MUJOCO_GL`, `headless_gl` picks EGL (GPU or Mesa), else OSMesa
(`apt-get install libosmesa6`), and loads MuJoCo's GL context module again with that choice, so it works whenever
mujoco was imported. Nothing is set at import time: a machine without EGL libraries still imports mujoco.
"""

import functools
import importlib
import os
import platform
import sys
from pathlib import Path

import mujoco
import numpy as np

from utils.cli import fail


class RenderError(RuntimeError):
    """No OpenGL context could be made; str(e) is one line with the cause and what to install or set."""


@functools.cache
def headless_gl() -> str:
    """Choose a GL backend that renders here (see the module docstring); returns its name ('' = MuJoCo's default).
    Raises RenderError if none makes a context."""
    chosen = os.environ.get("MUJOCO_GL", "")
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    candidates = [chosen] if chosen or display or platform.system() != "Linux" else ["egl", "osmesa"]
    errors = []
    for backend in candidates:
        try:
            if backend != os.environ.get("MUJOCO_GL", ""):
                os.environ["MUJOCO_GL"] = backend
                importlib.reload(sys.modules[mujoco.Renderer.__module__].gl_context)  # mujoco chose on import
            with mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), height=8, width=8) as r:
                r.render()
            return backend
        except Exception as e:  # each backend fails in its own way (ImportError, OSError, RuntimeError, ...)
            errors.append(f"{backend or 'default'}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    hint = "install libegl1 (EGL) or libosmesa6 (OSMesa), or set MUJOCO_GL" if not chosen else "check MUJOCO_GL"
    raise RenderError(f"cannot render ({'; '.join(errors)}); {hint}")


def require_gl(flag: str):
    """Before long work that ends in rendering (training with --capture-video, retargeting with --gif): one error line
    naming `flag` and the cause (exit code 2) if nothing renders here."""
    try:
        headless_gl()
    except RenderError as e:
        fail(f"{flag}: {e}")


def render_qpos(
    model: mujoco.MjModel,
    qpos_seq: np.ndarray,
    width: int = 480,
    height: int = 360,
    camera: str | int = "track",
) -> list[np.ndarray]:
    """Render one RGB frame (H, W, 3) uint8 per row of `qpos_seq` (T, nq), kinematics only."""
    headless_gl()
    data = mujoco.MjData(model)
    frames = []
    cam = camera if isinstance(camera, int) or mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) >= 0 else -1
    with mujoco.Renderer(model, height=height, width=width) as renderer:
        for q in np.atleast_2d(qpos_seq):
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=cam)
            frames.append(renderer.render().copy())
    return frames


def plain_floor(model: mujoco.MjModel) -> mujoco.MjModel:
    """For videos: 0.5 m checker squares without reflection on the floor planes (a fine reflective checker sliding
    past a tracking camera does not compress: 9 MB instead of 2.6 MB for an 8 s GIF). Rendering only."""
    floors = model.geom_matid[(model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE) & (model.geom_matid >= 0)]
    model.mat_texrepeat[floors], model.mat_reflectance[floors] = 1.0, 0.0  # texuniform: one 2×2 checker per metre
    return model


def shared_palette(frames: list[np.ndarray], colors: int = 64) -> list[np.ndarray]:
    """Map all frames to one palette (median cut over 8 sample frames, no dithering): flat colours compress well."""
    from PIL import Image

    sample = Image.fromarray(np.concatenate(frames[:: max(1, len(frames) // 8)], axis=0))  # (8·H, W, 3)
    pal = sample.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized = [Image.fromarray(f).quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    return [np.asarray(q.convert("RGB")) for q in quantized]


def write_frames(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write frames as .gif (one shared 64-colour palette), .mp4 or .png (first frame), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    if suffix == ".gif":
        iio.imwrite(tmp, np.stack(shared_palette(frames)), duration=1000.0 / fps, loop=0)
    elif suffix == ".mp4":
        iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", plugin="pyav" if _has_pyav() else None)
    elif suffix == ".png":
        iio.imwrite(tmp, frames[0])
    else:
        raise ValueError(f"{path}: unsupported extension {suffix!r} (use .gif, .mp4 or .png)")
    os.replace(tmp, path)
    return path


def strip(frames: list[np.ndarray], count: int = 6) -> np.ndarray:
    """A horizontal strip of `count` evenly spaced frames, for READMEs."""
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return np.concatenate([frames[i] for i in idx], axis=1)


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False
