"""Walking report of a trained policy: fixed commands, N episodes each, in MJX and (sim2sim) in plain MuJoCo.

    python -m utils.evaluate assets/policies/ppo_walk_h100.msgpack --episodes 20 --seconds 20 --out report.json --mujoco
    python -m utils.evaluate CKPT.msgpack --commands stand forward_0.3 --episodes 1 --seconds 1 --out r.json

The policy is deterministic (the Gaussian's mean). Domain randomization, observation noise, random pushes and
action latency are off; the command is held fixed for the whole episode (overriding the env's resampling). MJX runs
all episodes of all commands as one vmapped, jitted `lax.scan`; `--mujoco` also runs them one by one in plain
MuJoCo with the observation computed in numpy (`MujocoRunner`, mirroring `WildRobotEnv.observe` / `step`).
Midway through each episode a horizontal force of `--push-newtons` N acts on the pelvis for 0.2 s (the direction
turns by 360°/N from episode to episode); the episode counts as recovered if the robot has not fallen 2 s after the
push ends. Metrics per command and overall (all averaged over the steps before a fall):

    falls            episodes that fell (pelvis below FALL_HEIGHT or tilted > 60°)
    distance_m       path length of the pelvis on the ground plane
    vel_error_mps    |v_xy − command_xy| in the pelvis frame (after a 1 s start-up); yaw_error_radps likewise
    torque_nm        mean |τ| over joints;  power_w: mean Σ_j |τ_j q̇_j|
    clearance_m      peak height of the sole during each swing (contact → no contact → contact), averaged
    flight_pct       % of steps with neither foot on the ground
    step_symmetry    1 − |air_L − air_R| / (air_L + air_R) of the total swing time per foot (1 = symmetric)
    push_recovery    recovered / pushed episodes (pushed = not fallen when the push starts)
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from utils.checkpoint import ROOT, fail, load_policy_or_exit

COMMANDS = {  # name -> (vx m/s, vy m/s, yaw rate rad/s)
    "stand": (0.0, 0.0, 0.0),
    "forward_0.3": (0.3, 0.0, 0.0),
    "forward_0.5": (0.5, 0.0, 0.0),
    "backward_0.2": (-0.2, 0.0, 0.0),
    "sideways_0.15": (0.0, 0.15, 0.0),
    "turn_0.5": (0.0, 0.0, 0.5),
}
PUSH_SECONDS, RECOVERY_SECONDS, SETTLE_SECONDS = 0.2, 2.0, 1.0
METRICS = ("falls", "distance_m", "vel_error_mps", "yaw_error_radps", "torque_nm", "power_w", "clearance_m",
           "flight_pct", "step_symmetry", "push_recovery")  # fmt: skip
TRACE = ("pos", "linvel", "yaw_rate", "torque", "joint_vel", "foot_z", "contact", "qpos", "qvel")  # per-step arrays


def eval_args(policy, seconds: float):
    """The checkpoint's env with everything random off; episodes longer than the horizon, so none is truncated."""
    starts = {"reference_init": 0.0} if hasattr(policy.args, "reference_init") else {}  # AMP: every episode at home
    return policy.env_args(domain_randomization=False, push=False, obs_noise=False, action_latency=False,
                           episode_seconds=seconds + 1.0, **starts)  # fmt: skip


def push_schedule(steps: int, dt: float) -> tuple[int, int, int]:
    """(first pushed step, first step after the push, end of the recovery window), in control steps."""
    start = steps // 2
    end = start + round(PUSH_SECONDS / dt)
    return start, end, min(end + round(RECOVERY_SECONDS / dt), steps)


def push_forces(num_episodes: int, newtons: float) -> np.ndarray:
    """(E, 3) horizontal forces, first one to the robot's left, turning by 360°/E per episode."""
    angle = np.pi / 2 + 2 * np.pi * np.arange(num_episodes) / num_episodes
    return newtons * np.stack([np.cos(angle), np.sin(angle), np.zeros(num_episodes)], axis=-1)


# ---------------------------------------------------------------------------------------------------------------------
# MJX: all commands × episodes in one vmapped scan
# ---------------------------------------------------------------------------------------------------------------------
_ENVS = {}  # one WildRobotEnv per settings and process: building one costs seconds (MJX forward of `home`)


def make_env(policy, seconds: float):
    args = eval_args(policy, seconds)
    if repr(args) not in _ENVS:
        _ENVS[repr(args)] = policy.module.WildRobotEnv(args)
    return _ENVS[repr(args)]


def rollout_mjx(policy, commands: np.ndarray, forces: np.ndarray, steps: int, seed: int = 0) -> dict:
    """E = len(commands) envs for `steps` control steps. Returns traces [E, T, ...] (TRACE; `qpos` [E, T, 18] and
    `qvel` [E, T, 17] in full), `valid` [E, T] (steps before a fall), `fell` [E], `start` [E, 3], and `final`: the
    batched EnvState after the last step (numpy).
    `forces` [E, 3] act on the pelvis during the push window."""
    env = make_env(policy, steps * policy.module.CTRL_DT)
    pelvis = int(env.mj_model.jnt_bodyid[0])
    p0, p1, _ = push_schedule(steps, policy.module.CTRL_DT)
    cmds, forces = jnp.asarray(commands, jnp.float32), jnp.asarray(forces, jnp.float32)
    lin = slice(env.linvel_adr, env.linvel_adr + 3)

    def one_step(state, t):
        # the fixed command replaces the env's (re)sampled one, in the obs and in the state the step reads
        state = state.replace(obs=state.obs.at[:, 6:9].set(cmds), info=state.info.replace(command=cmds))
        force = jnp.where((t >= p0) & (t < p1), 1.0, 0.0) * forces  # (E, 3)
        xfrc = state.data.xfrc_applied.at[:, pelvis, :3].set(force)  # (E, nbody, 6)
        state = state.replace(data=state.data.replace(xfrc_applied=xfrc))
        nxt = jax.vmap(env.step)(state, policy.act(state.obs))
        d = nxt.data  # after a fall this is already the next episode: masked out by `valid`
        out = dict(pos=d.qpos[:, :3], linvel=d.sensordata[:, lin], yaw_rate=d.qvel[:, 5], torque=d.actuator_force,
                   joint_vel=d.qvel[:, 6:], foot_z=d.site_xpos[:, env.feet, 2], contact=jax.vmap(env.feet_contact)(d),
                   qpos=d.qpos, qvel=d.qvel, fell=nxt.done & ~nxt.truncated)  # fmt: skip
        return nxt, out

    def rollout(rng):
        state = jax.vmap(env.reset)(jax.random.split(rng, len(commands)))
        final, out = jax.lax.scan(one_step, state, jnp.arange(steps))
        return state.data.qpos[:, :3], final, out

    t0 = time.perf_counter()
    print(f"mjx: compiling the rollout ({len(commands)} envs × {steps} steps) ...", flush=True)
    compiled = jax.jit(rollout).lower(jax.random.PRNGKey(seed)).compile()
    t1 = time.perf_counter()
    start, final, out = jax.device_get(compiled(jax.random.PRNGKey(seed)))
    print(f"mjx: compiled in {t1 - t0:.1f} s, ran in {time.perf_counter() - t1:.1f} s", flush=True)
    out = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in out.items()}  # [T, E, ...] -> [E, T, ...]
    fell_at = out.pop("fell")
    valid = np.cumsum(fell_at, axis=1) == 0  # the fall step itself shows the reset state
    return dict(out, valid=valid, fell=fell_at.any(axis=1), start=np.asarray(start), final=final)


# ---------------------------------------------------------------------------------------------------------------------
# plain MuJoCo: the env's step and observation in numpy (sim2sim)
# ---------------------------------------------------------------------------------------------------------------------
class MujocoRunner:
    """One WildRobot in plain MuJoCo stepped like `WildRobotEnv.step` with DR, noise, pushes and latency off."""

    def __init__(self, policy):
        mod, self.policy = policy.module, policy
        self.model = mujoco.MjModel.from_xml_path(str(ROOT / policy.args.scene))
        self.model.geom_friction[:, 0] = mod.NOMINAL_FRICTION  # what the env's randomized_model sets with DR off
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.dt, self.fall_height = mod.CTRL_DT, mod.FALL_HEIGHT
        self.phase_step = 2 * np.pi * mod.GAIT_FREQUENCY * mod.CTRL_DT
        self.n_substeps = round(mod.CTRL_DT / m.opt.timestep)
        self.home = m.key_qpos[m.keyframe("home").id].copy()
        self.default_pose = self.home[7:]
        self.action_scale = policy.args.action_scale
        self.imu = m.site("imu").id
        self.gyro = slice(m.sensor_adr[m.sensor("gyro").id], m.sensor_adr[m.sensor("gyro").id] + 3)
        self.linvel = slice(m.sensor_adr[m.sensor("local_linvel").id], m.sensor_adr[m.sensor("local_linvel").id] + 3)
        self.feet = np.array([m.site(s).id for s in mod.FEET_SITES])
        self.soles = np.array([m.geom(g).id for g in mod.SOLES])
        self.pelvis = int(m.jnt_bodyid[0])
        self.reset(np.random.default_rng(0), (0.0, 0.0, 0.0))

    def reset(self, rng: np.random.Generator, command):
        """Like `WildRobotEnv.reset`: home + U(±0.05) joint angles and U(±0.05) velocities. (The MJX reset's first
        obs reads `home`'s IMU, stale by the noise; here a forward pass makes it current: step 0 differs slightly.)"""
        d = self.data
        mujoco.mj_resetData(self.model, d)
        d.qpos[:] = self.home
        d.qpos[7:] += rng.uniform(-0.05, 0.05, self.default_pose.shape)
        d.qvel[:] = rng.uniform(-0.05, 0.05, self.model.nv)
        d.ctrl[:] = self.default_pose
        mujoco.mj_forward(self.model, d)
        self.command, self.last_action, self.phase = np.asarray(command, np.float32), np.zeros(11, np.float32), 0.0

    def observe_data(self, d: mujoco.MjData, command, last_action, phase) -> np.ndarray:
        """`WildRobotEnv.observe`'s actor obs (44,), noise off, from MjData."""
        return np.hstack([
            -d.site_xmat[self.imu].reshape(3, 3)[2],  # 3 gravity in the IMU frame
            d.sensordata[self.gyro],  # 3
            command,  # 3
            d.qpos[7:] - self.default_pose,  # 11
            d.qvel[6:] * 0.1,  # 11
            last_action,  # 11
            np.cos(phase), np.sin(phase),  # 2
        ]).astype(np.float32)  # fmt: skip

    def observe(self) -> np.ndarray:
        return self.observe_data(self.data, self.command, self.last_action, self.phase)

    def contact(self) -> np.ndarray:
        """(2,) bool: `WildRobotEnv.feet_contact` (a sole geom in a contact closer than 1 mm)."""
        c = self.data.contact
        touching = c.dist[: self.data.ncon] < 1e-3
        geoms = c.geom[: self.data.ncon]
        return np.array([np.any(touching & ((geoms[:, 0] == g) | (geoms[:, 1] == g))) for g in self.soles])

    def step(self, force=None) -> bool:
        """One 0.02 s control step of the policy; returns True if the robot has fallen (or the state blew up)."""
        d, m = self.data, self.model
        action = np.clip(self.policy.act(self.observe()), -1.0, 1.0)
        d.ctrl[:] = np.clip(self.default_pose + self.action_scale * action, *m.actuator_ctrlrange.T)
        d.xfrc_applied[self.pelvis, :3] = 0.0 if force is None else force
        for _ in range(self.n_substeps):
            mujoco.mj_step(m, d)
        self.phase = (self.phase + self.phase_step) % (2 * np.pi)
        self.last_action = action
        upright = d.site_xmat[self.imu][8]  # −gravity_z
        return bool(d.qpos[2] < self.fall_height or upright < 0.5 or not np.isfinite(d.qpos).all())

    def trace(self) -> dict:
        d = self.data
        return dict(pos=d.qpos[:3].copy(), linvel=d.sensordata[self.linvel].copy(), yaw_rate=d.qvel[5],
                    torque=d.actuator_force.copy(), joint_vel=d.qvel[6:].copy(),
                    foot_z=d.site_xpos[self.feet, 2].copy(), contact=self.contact(), qpos=d.qpos.copy(),
                    qvel=d.qvel.copy())  # fmt: skip


def obs_gap(policy, final) -> float:
    """Max |numpy obs − MJX actor obs| over the envs of a batched EnvState (noise off): `MujocoRunner.observe_data`
    of `mjx.get_data(state.data)` against the obs `WildRobotEnv.observe` computed for that same state."""
    from mujoco import mjx

    runner = MujocoRunner(policy)
    gaps = []
    for e in range(len(final.obs)):
        state = jax.tree.map(lambda x: x[e], final)
        d = mjx.get_data(runner.model, state.data)
        obs = runner.observe_data(d, state.info.command, state.info.last_action, float(state.info.phase))
        gaps.append(np.abs(obs - state.obs).max())
    return float(max(gaps))


def rollout_mujoco(policy, commands: np.ndarray, forces: np.ndarray, steps: int, seed: int = 0) -> dict:
    """The episodes of `rollout_mjx` (same commands and pushes; the reset noise is drawn by numpy), one after
    another in plain MuJoCo; same output layout."""
    runner, rng = MujocoRunner(policy), np.random.default_rng(seed)
    p0, p1, _ = push_schedule(steps, runner.dt)
    traces, valid, fell, start = [], np.zeros((len(commands), steps), bool), np.zeros(len(commands), bool), []
    t0 = time.perf_counter()
    for e, (cmd, force) in enumerate(zip(commands, forces)):
        runner.reset(rng, cmd)
        start.append(runner.data.qpos[:3].copy())
        rows = []
        for t in range(steps):
            fell[e] = runner.step(force if p0 <= t < p1 else None)
            rows.append(runner.trace())
            if fell[e]:
                break
            valid[e, t] = True
        rows += [rows[-1]] * (steps - len(rows))  # padding after a fall, masked out by `valid`
        traces.append({k: np.stack([r[k] for r in rows]) for k in TRACE})
    print(f"mujoco: {len(commands)} episodes × {steps} steps in {time.perf_counter() - t0:.1f} s", flush=True)
    return {k: np.stack([tr[k] for tr in traces]) for k in TRACE} | dict(valid=valid, fell=fell, start=np.array(start))


# ---------------------------------------------------------------------------------------------------------------------
# metrics: one numpy function for both simulators
# ---------------------------------------------------------------------------------------------------------------------
def episode_metrics(tr: dict, command: np.ndarray, dt: float, pushed: bool) -> dict:
    """Metrics of one episode from its traces [T, ...] (only `valid` steps count). NaN where undefined."""
    v = tr["valid"]
    n = int(v.sum())
    steps = len(v)
    p0, _, p_end = push_schedule(steps, dt)
    out = dict.fromkeys(METRICS, math.nan) | dict(falls=float(tr["fell"]))
    if pushed and p0 < steps:  # pushed only if still standing when the push starts
        out["push_recovery"] = float(v[p_end - 1]) if v[p0] else math.nan
    if n == 0:
        return out
    pos = np.concatenate([tr["start"][None, :2], tr["pos"][v][:, :2]])
    out["distance_m"] = float(np.linalg.norm(np.diff(pos, axis=0), axis=-1).sum())
    settle = min(round(SETTLE_SECONDS / dt), n // 2)  # velocity errors after the start-up
    out["vel_error_mps"] = float(np.linalg.norm(tr["linvel"][v][settle:, :2] - command[:2], axis=-1).mean())
    out["yaw_error_radps"] = float(np.abs(tr["yaw_rate"][v][settle:] - command[2]).mean())
    torque, joint_vel = tr["torque"][v], tr["joint_vel"][v]
    out["torque_nm"] = float(np.abs(torque).mean())
    out["power_w"] = float(np.abs(torque * joint_vel).sum(-1).mean())
    contact, foot_z = tr["contact"][v].astype(bool), tr["foot_z"][v]
    out["flight_pct"] = float(100.0 * (~contact).all(-1).mean())
    peaks, air = [], []
    for f in range(2):
        air.append(float((~contact[:, f]).sum()) * dt)
        swing_start = None
        for t in range(1, n):
            if contact[t - 1, f] and not contact[t, f]:
                swing_start = t
            elif swing_start is not None and contact[t, f] and not contact[t - 1, f]:
                peaks.append(foot_z[swing_start:t, f].max())
                swing_start = None
    out["clearance_m"] = float(np.mean(peaks)) if peaks else math.nan
    out["step_symmetry"] = 1.0 - abs(air[0] - air[1]) / (air[0] + air[1]) if sum(air) > 0 else math.nan
    return out


def summarize(rollout: dict, names: list[str], episodes: int, dt: float, pushed: bool) -> dict:
    """Per command (episodes are consecutive rows of `rollout`) and overall: falls summed, the rest averaged."""
    per_episode = []
    for e, name in enumerate(np.repeat(names, episodes)):
        tr = {k: v[e] for k, v in rollout.items()}
        per_episode.append(episode_metrics(tr, np.asarray(COMMANDS[name]), dt, pushed))

    def combine(rows):
        out = {"episodes": len(rows)}
        for k in METRICS:
            vals = np.array([r[k] for r in rows], float)
            vals = vals[np.isfinite(vals)]
            out[k] = float(vals.sum()) if k == "falls" else (float(vals.mean()) if len(vals) else None)
        return out

    report = {name: combine(per_episode[i * episodes : (i + 1) * episodes]) for i, name in enumerate(names)}
    report["overall"] = combine(per_episode)
    return report


def print_table(report: dict):
    cols = [("falls", "{:.0f}"), ("distance_m", "{:.2f}"), ("vel_error_mps", "{:.3f}"), ("yaw_error_radps", "{:.3f}"),
            ("torque_nm", "{:.2f}"), ("power_w", "{:.2f}"), ("clearance_m", "{:.3f}"), ("flight_pct", "{:.1f}"),
            ("step_symmetry", "{:.2f}"), ("push_recovery", "{:.2f}")]  # fmt: skip
    header = f"{'sim':7s} {'command':14s} {'eps':>4s} " + " ".join(f"{c[:13]:>13s}" for c, _ in cols)
    print(header + "\n" + "-" * len(header))
    for sim, rows in report["simulators"].items():
        for name, row in rows.items():
            cells = " ".join(f"{'-' if row[c] is None else fmt.format(row[c]):>13s}" for c, fmt in cols)
            print(f"{sim:7s} {name:14s} {row['episodes']:4d} {cells}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per command")
    parser.add_argument("--seconds", type=float, default=10.0, help="episode length (s)")
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), help=f"from: {' '.join(COMMANDS)}")
    parser.add_argument("--push-newtons", type=float, default=10.0, help="mid-episode push on the pelvis (0: none)")
    parser.add_argument("--mujoco", action="store_true", help="also run the episodes in plain MuJoCo (sim2sim)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the JSON report")
    args = parser.parse_args(argv)
    unknown = [c for c in args.commands if c not in COMMANDS]
    if unknown:
        fail(f"--commands: unknown {', '.join(unknown)} (known: {', '.join(COMMANDS)})")
    if args.episodes < 1 or args.seconds <= 0 or args.push_newtons < 0:
        fail("--episodes must be >= 1, --seconds > 0 and --push-newtons >= 0")
    policy = load_policy_or_exit(args.checkpoint)
    dt = policy.module.CTRL_DT
    steps = max(1, round(args.seconds / dt))
    names = list(dict.fromkeys(args.commands))
    commands = np.repeat(np.array([COMMANDS[n] for n in names], np.float32), args.episodes, axis=0)  # (E, 3)
    forces = np.concatenate([push_forces(args.episodes, args.push_newtons)] * len(names))
    pushed = args.push_newtons > 0
    print(f"evaluating {policy.path} ({policy.meta['algo']}, step {policy.meta['global_step']:,}): "
          f"{len(names)} commands × {args.episodes} episodes × {steps * dt:g} s", flush=True)  # fmt: skip

    mjx_rollout = rollout_mjx(policy, commands, forces, steps, args.seed)
    final = mjx_rollout.pop("final")
    simulators, gap = {"mjx": summarize(mjx_rollout, names, args.episodes, dt, pushed)}, None
    if args.mujoco:
        gap = obs_gap(policy, final)
        print(f"sim2sim: numpy vs MJX actor observation at the MJX rollout's last states: max abs diff {gap:.1e}")
        simulators["mujoco"] = summarize(rollout_mujoco(policy, commands, forces, steps, args.seed), names,
                                         args.episodes, dt, pushed)  # fmt: skip
    report = dict(
        checkpoint=str(policy.path), algo=policy.meta["algo"], global_step=int(policy.meta["global_step"]),
        settings=dict(episodes=args.episodes, seconds=steps * dt, commands={n: COMMANDS[n] for n in names},
                      push_newtons=args.push_newtons, push_seconds=PUSH_SECONDS,
                      push_window_s=[t * dt for t in push_schedule(steps, dt)], seed=args.seed,
                      randomization="off (domain randomization, obs noise, random pushes, action latency)"),
        simulators=simulators, obs_max_abs_diff_numpy_vs_mjx=gap,
    )  # fmt: skip
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)  # atomic: no half-written report
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
