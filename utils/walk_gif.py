"""A GIF of a trained PPO policy walking through a schedule of commands, rolled out in MJX (one env, CPU is fine).

Usage:
    MUJOCO_GL=egl python -m utils.walk_gif     # assets/policies/ppo_walk_h100.msgpack -> docs/images/ppo_walk.gif
    MUJOCO_GL=egl python -m utils.walk_gif CKPT.msgpack --out walk.gif --schedule 2:0,0,0 4:0.3,0,0 --every 2

The schedule is segments SECONDS:VX,VY,YAW (m/s, m/s, rad/s); the default is 2 s standing, 3 s forward at 0.4 m/s,
3 s forward at 0.2 m/s while turning at 0.5 rad/s. Domain randomization, pushes, observation noise and action latency
are off; the actor's mean action is used. Frames come from the scene's "track" camera, every `--every`-th 50 Hz
control step (50 / every fps). Prints the measured velocity per segment, so the GIF comes with numbers.
A fine checker floor sliding past the tracking camera does not compress in a GIF (9 MB for 8 s), so for the video
the floor gets 0.5 m squares and no reflection, and a GIF's frames share one 64-colour palette (~2.6 MB).
"""

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported: it picks its GL backend then

import jax  # noqa: E402
import jax.numpy as jp  # noqa: E402
import numpy as np  # noqa: E402
from flax import serialization  # noqa: E402
from PIL import Image  # noqa: E402

import ppo_mjx as P  # noqa: E402
from utils.render import render_qpos, write_frames  # noqa: E402

DEFAULT_SCHEDULE = ["2:0,0,0", "3:0.4,0,0", "3:0.2,0,0.5"]


def parse_schedule(segments: list[str]) -> list[tuple[float, tuple[float, float, float]]]:
    out = []
    for s in segments:
        try:
            sec, cmd = s.split(":")
            vx, vy, yaw = (float(v) for v in cmd.split(","))
            out.append((float(sec), (vx, vy, yaw)))
        except ValueError:
            P.fail(f"--schedule {s!r}: expected SECONDS:VX,VY,YAW, e.g. 3:0.4,0,0")
    return out


def shared_palette(frames: list[np.ndarray], colors: int) -> list[np.ndarray]:
    """Map all frames to one palette (median cut over 8 sample frames, no dithering): flat colours compress well."""
    sample = Image.fromarray(np.concatenate(frames[:: max(1, len(frames) // 8)], axis=0))  # (8·H, W, 3)
    pal = sample.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized = [Image.fromarray(f).quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    return [np.asarray(q.convert("RGB")) for q in quantized]


def rollout(path: str, commands: np.ndarray, seed: int):
    """Roll the policy out under `commands` [T, 3]; returns (env, qpos [T+1, nq], qvel [T, nv], done [T])."""
    try:
        payload = serialization.msgpack_restore(open(path, "rb").read())
        meta_args, policy = payload["meta"]["args"], payload["policy"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        P.fail(f"{path}: not a readable policy checkpoint ({type(e).__name__}: {e})")
    args = replace(P.Args(**meta_args), domain_randomization=False, push=False, obs_noise=False, action_latency=False)
    env = P.WildRobotEnv(args)
    actor = P.Actor(env.ACTION_SIZE, args.min_std)
    norm = P.Normalizer(**{k: jp.asarray(v) for k, v in policy["obs_norm"].items()})

    def one_step(state, cmd):
        state = state.replace(info=state.info.replace(command=cmd))  # override the env's own command sampling
        mean, _ = actor.apply({"params": policy["actor"]}, norm(state.obs))
        state = env.step(state, mean)
        return state, (state.data.qpos, state.data.qvel, state.done)

    @jax.jit
    def run(rng, cmds):  # cmds (T, 3)
        state = env.reset(rng)
        _, (qpos, qvel, done) = jax.lax.scan(one_step, state, cmds)
        return state.data.qpos, qpos, qvel, done

    q0, qpos, qvel, done = jax.device_get(run(jax.random.PRNGKey(seed), jp.asarray(commands, jp.float32)))
    return env, np.concatenate([q0[None], qpos]), qvel, done


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default="assets/policies/ppo_walk_h100.msgpack", help="policy msgpack")
    p.add_argument("--out", default="docs/images/ppo_walk.gif", help=".gif (or .mp4)")
    p.add_argument("--schedule", nargs="+", default=DEFAULT_SCHEDULE, help="segments SECONDS:VX,VY,YAW")
    p.add_argument("--every", type=int, default=2, help="render every n-th control step (50 Hz / n fps)")
    p.add_argument("--size", type=int, nargs=2, default=(480, 360), metavar=("W", "H"), help="pixels")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    schedule = parse_schedule(a.schedule)
    steps = [round(sec / P.CTRL_DT) for sec, _ in schedule]
    commands = np.concatenate([np.tile(cmd, (n, 1)) for n, (_, cmd) in zip(steps, schedule)])  # (T, 3)

    t0 = time.time()
    env, qpos, qvel, done = rollout(a.checkpoint, commands, a.seed)
    print(f"rollout of {len(commands)} control steps (compile included): {time.time() - t0:.1f} s; "
          f"falls/resets: {int(done.sum())}")
    yaw = np.unwrap(np.arctan2(2 * (qpos[:, 3] * qpos[:, 6] + qpos[:, 4] * qpos[:, 5]),
                               1 - 2 * (qpos[:, 5] ** 2 + qpos[:, 6] ** 2)))  # fmt: skip
    for n, start, (sec, cmd) in zip(steps, np.cumsum([0] + steps), schedule):
        seg = slice(start, start + n)
        c, s, v = np.cos(yaw[1:][seg]), np.sin(yaw[1:][seg]), qvel[seg]
        vx, vy = (c * v[:, 0] + s * v[:, 1]).mean(), (-s * v[:, 0] + c * v[:, 1]).mean()  # heading frame
        wz = (yaw[start + n] - yaw[start]) / sec
        print(f"  {sec:.1f} s, command vx {cmd[0]:+.2f} vy {cmd[1]:+.2f} yaw {cmd[2]:+.2f} -> "
              f"measured vx {vx:+.3f} vy {vy:+.3f} yaw {wz:+.3f}, min height {qpos[1:][seg, 2].min():.3f} m")

    model = env.mj_model
    floors = model.geom_matid[(model.geom_type == 0) & (model.geom_matid >= 0)]  # planes (mjGEOM_PLANE = 0)
    model.mat_texrepeat[floors], model.mat_reflectance[floors] = 1.0, 0.0  # texuniform: one 2×2 checker per metre
    frames = render_qpos(model, qpos[:: a.every], *a.size, camera="track")
    if a.out.lower().endswith(".gif"):
        frames = shared_palette(frames, 64)
    out = write_frames(frames, a.out, 50.0 / a.every)
    print(f"wrote {out}: {len(frames)} frames at {50.0 / a.every:g} fps, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
