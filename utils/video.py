"""Render a policy walking, headless (no display or MUJOCO_GL needed; see utils/render.py), to MP4 and/or GIF.

    python -m utils.video assets/policies/ppo_walk_h100.msgpack --out walk.mp4
    python -m utils.video CKPT.msgpack --out walk.mp4 --seconds 10 --command forward_0.3 --gif   # + walk.gif (smaller)
    python -m utils.video assets/policies/ppo_walk_h100.msgpack --out docs/images/ppo_walk.gif --every 2 \
        --width 480 --height 360 --schedule 2:stand 3:forward_0.4 3:0.2,0,0.5     # the README's GIF

`--command` is a command name (utils/cli.py) or VX VY YAW (m/s, m/s, rad/s). `--schedule` replaces it by segments
SECONDS:NAME or SECONDS:VX,VY,YAW and prints the measured velocities of each segment, so a video comes with numbers.

The rollout is the evaluation's plain-MuJoCo one (`utils.evaluate.MujocoRunner`: the env's step and observation in
numpy, domain randomization / noise / pushes / latency off, a fixed command), which on a CPU is much cheaper than
compiling MJX. Frames come from the scene's "track" camera at the 50 Hz control rate (every `--every`-th frame).
"""

import argparse
from pathlib import Path

import numpy as np

from utils.checkpoint import load_policy_or_exit
from utils.cli import add_command, add_seed, add_size, command_arg, command_name, fail, parse_command
from utils.kinematics import heading


def rollout_qpos(policy, commands: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, object, int]:
    """Commands [T, 3] -> (qpos [T+1, nq] from the reset on, qvel [T+1, nv], the MuJoCo model, first fall or -1)."""
    from utils.evaluate import MujocoRunner

    runner = MujocoRunner(policy)
    runner.reset(np.random.default_rng(seed), commands[0])
    qpos, qvel, fell_at = [runner.data.qpos.copy()], [runner.data.qvel.copy()], -1
    for t, command in enumerate(commands):
        runner.command = np.asarray(command, np.float32)
        if runner.step() and fell_at < 0:
            fell_at = t  # keep simulating: the video shows the fall
        qpos.append(runner.data.qpos.copy())
        qvel.append(runner.data.qvel.copy())
    return np.array(qpos), np.array(qvel), runner.model, fell_at


def parse_schedule(segments: list[str], dt: float) -> np.ndarray:
    """["SECONDS:NAME" or "SECONDS:VX,VY,YAW", ...] -> commands [T, 3] at the control rate."""
    rows = []
    for s in segments:
        try:
            seconds, cmd = s.split(":")
            values = [float(c) for c in cmd.split(",")] if "," in cmd else list(parse_command(cmd))
            rows += [values] * round(float(seconds) / dt)
            assert len(rows[-1]) == 3 and float(seconds) > 0
        except (ValueError, AssertionError, IndexError):
            fail(f"--schedule {s!r}: expected SECONDS:NAME or SECONDS:VX,VY,YAW, e.g. 3:forward_0.4 or 3:0.4,0,0")
    return np.array(rows, np.float32)


def report_segments(qpos, qvel, commands, dt):
    """Measured heading-frame velocity and yaw rate per constant-command segment."""
    yaw = np.unwrap(heading(qpos))
    bounds = np.flatnonzero(np.any(np.diff(commands, axis=0) != 0, axis=1)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(commands)]):
        c, s, v = np.cos(yaw[a + 1 : b + 1]), np.sin(yaw[a + 1 : b + 1]), qvel[a + 1 : b + 1]
        vx, vy = (c * v[:, 0] + s * v[:, 1]).mean(), (-s * v[:, 0] + c * v[:, 1]).mean()
        print(f"  {(b - a) * dt:.1f} s, {command_name(np.round(commands[a], 3))} -> measured vx {vx:+.3f} "
              f"vy {vy:+.3f} yaw rate {(yaw[b] - yaw[a]) / ((b - a) * dt):+.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--out", required=True, help="the video: .mp4 or .gif")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the rollout (s)")
    add_command(parser, "forward_0.3", "the fixed command")
    parser.add_argument("--schedule", nargs="+", metavar="S:NAME", help="command segments (replaces --command)")
    parser.add_argument("--gif", action="store_true", help="also write a GIF (half size, 25 fps) next to --out")
    add_size(parser, 512, 384)  # multiples of 16 suit MP4 codecs
    parser.add_argument("--every", type=int, default=1, help="render every n-th control step (50 Hz / n fps)")
    add_seed(parser)
    args = parser.parse_args(argv)
    command = command_arg(args.command)
    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        fail(f"--out {out}: use a .mp4 or .gif file name")
    if args.seconds <= 0 or args.every < 1 or min(args.width, args.height) < 16:
        fail("--seconds must be > 0, --every >= 1, --width and --height >= 16")
    policy = load_policy_or_exit(args.checkpoint)
    from utils.render import plain_floor, render_qpos, write_frames

    dt = policy.module.CTRL_DT
    if args.schedule:
        commands = parse_schedule(args.schedule, dt)
    else:
        commands = np.tile(np.asarray(command, np.float32), (round(args.seconds / dt), 1))
    qpos, qvel, model, fell_at = rollout_qpos(policy, commands, args.seed)
    fps = 1.0 / (dt * args.every)
    fall = "no fall" if fell_at < 0 else f"fell at {fell_at * dt:.2f} s"
    print(f"{policy.path}: {len(commands)} control steps, {fall}; rendering", flush=True)
    report_segments(qpos, qvel, commands, dt)
    model = plain_floor(model)
    frames = render_qpos(model, qpos[:: args.every], args.width, args.height, camera="track")
    print(f"wrote {write_frames(frames, out, fps)} ({len(frames)} frames, {args.width}x{args.height}, {fps:g} fps)")
    if args.gif:
        gif = out.with_suffix(".gif") if out.suffix.lower() != ".gif" else out.with_name(out.stem + "_small.gif")
        small = render_qpos(model, qpos[:: 2 * args.every], args.width // 2, args.height // 2, camera="track")
        print(f"wrote {write_frames(small, gif, fps / 2)} ({len(small)} frames)")
    return out


if __name__ == "__main__":
    main()
