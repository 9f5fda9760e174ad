"""Render a policy walking, headless (MUJOCO_GL=egl by default), to MP4 and/or GIF.

    MUJOCO_GL=egl python -m utils.video assets/policies/ppo_walk_h100.msgpack --out walk.mp4
    python -m utils.video CKPT.msgpack --out walk.mp4 --seconds 10 --command 0.3 0 0 --gif   # + walk.gif (smaller)

The rollout is the evaluation's plain-MuJoCo one (`utils.evaluate.MujocoRunner`: the env's step and observation in
numpy, domain randomization / noise / pushes / latency off, a fixed command), which on a CPU is much cheaper than
compiling MJX. Frames come from the scene's "track" camera at the 50 Hz control rate (every `--every`-th frame).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported: it picks its GL backend then

import numpy as np  # noqa: E402

from utils.checkpoint import CheckpointError, fail, load_policy  # noqa: E402


def rollout_qpos(policy, seconds: float, command, seed: int = 0) -> tuple[np.ndarray, object, int]:
    """(qpos [T+1, nq] from the reset on, the MuJoCo model, control steps until the first fall or -1)."""
    from utils.evaluate import MujocoRunner

    runner = MujocoRunner(policy)
    runner.reset(np.random.default_rng(seed), command)
    qpos, fell_at = [runner.data.qpos.copy()], -1
    for t in range(round(seconds / runner.dt)):
        if runner.step() and fell_at < 0:
            fell_at = t  # keep simulating: the video shows the fall
        qpos.append(runner.data.qpos.copy())
    return np.array(qpos), runner.model, fell_at


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--out", required=True, help="the video: .mp4 or .gif")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the rollout (s)")
    parser.add_argument("--command", type=float, nargs=3, default=(0.3, 0.0, 0.0), metavar=("VX", "VY", "YAW"),
                        help="fixed command: m/s, m/s, rad/s")  # fmt: skip
    parser.add_argument("--gif", action="store_true", help="also write a GIF (half size, 25 fps) next to --out")
    parser.add_argument("--width", type=int, default=512, help="pixels (multiples of 16 suit MP4 codecs)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--every", type=int, default=1, help="render every n-th control step (50 Hz / n fps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        fail(f"--out {out}: use a .mp4 or .gif file name")
    if args.seconds <= 0 or args.every < 1 or min(args.width, args.height) < 16:
        fail("--seconds must be > 0, --every >= 1, --width and --height >= 16")
    try:
        policy = load_policy(args.checkpoint)
    except CheckpointError as e:
        fail(str(e))
    from utils.render import render_qpos, write_frames  # sets MUJOCO_GL=egl unless it is set

    qpos, model, fell_at = rollout_qpos(policy, args.seconds, args.command, args.seed)
    fps = 1.0 / (policy.module.CTRL_DT * args.every)
    fall = "no fall" if fell_at < 0 else f"fell at {fell_at * policy.module.CTRL_DT:.2f} s"
    print(f"{policy.path}: {len(qpos) - 1} control steps, command {tuple(args.command)}, {fall}; rendering", flush=True)
    frames = render_qpos(model, qpos[:: args.every], args.width, args.height, camera="track")
    print(f"wrote {write_frames(frames, out, fps)} ({len(frames)} frames, {args.width}x{args.height}, {fps:g} fps)")
    if args.gif:
        gif = out.with_suffix(".gif") if out.suffix.lower() != ".gif" else out.with_name(out.stem + "_small.gif")
        small = render_qpos(model, qpos[:: 2 * args.every], args.width // 2, args.height // 2, camera="track")
        print(f"wrote {write_frames(small, gif, fps / 2)} ({len(small)} frames)")
    return out


if __name__ == "__main__":
    main()
