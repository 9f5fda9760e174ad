"""Headless rendering helpers shared by the tools: frames from a qpos sequence, PNG / GIF / MP4 writers.

Rendering needs an OpenGL backend without a display: set `MUJOCO_GL=egl` (GPU or Mesa EGL) or `MUJOCO_GL=osmesa`
(`apt-get install libosmesa6`). If neither is set we default to egl.
"""

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def render_qpos(
    model: mujoco.MjModel,
    qpos_seq: np.ndarray,
    width: int = 480,
    height: int = 360,
    camera: str | int = "track",
) -> list[np.ndarray]:
    """Render one RGB frame (H, W, 3) uint8 per row of `qpos_seq` (T, nq), kinematics only."""
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


def write_frames(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write frames as .gif, .mp4 or .png (first frame), atomically (temp file + rename)."""
    import imageio.v3 as iio

    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    if suffix == ".gif":
        iio.imwrite(tmp, np.stack(frames), duration=1000.0 / fps, loop=0)
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
