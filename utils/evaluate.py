"""Walking report of a trained policy: scenarios × commands × N episodes, in MJX and (sim2sim) in plain MuJoCo.

    python -m utils.evaluate assets/policies/ppo_robust.msgpack --scenario all --episodes 20 --mujoco --out r.json
    python -m utils.evaluate CKPT.msgpack --commands stand forward_0.3 --episodes 1 --seconds 1 --out r.json
    python -m utils.evaluate CKPT.msgpack --commands forward_0.3_turn_left_0.25 --mujoco --out r.json

Scenarios (SPEC.md's walking bars; each prints whether its bar is met):

    commands   the fixed commands of --commands (names, utils/cli.py) for --seconds, one --push-newtons push midway
               (the default scenario)
    long_walk  130 s at 0.4 m/s                                        bar: no falls
    pushes     30 s at 0.3 m/s, 10 N × 0.2 s every 5 s, random directions   bar: >= 90 % standing at the end
    rough      20 s at 0.3 m/s on assets/scene_rough.xml (smooth bumps, ±2 cm)   bar: no falls
    bumpy      20 s at 0.3 m/s on assets/scene_bumpy.xml (20 cm cells, ±2 cm)   no falls (beyond SPEC's bars)
    turning    yaw rates of 1/4 to all of the range the policy's file advertises (or --yaw-max), in place both ways
               and walking at 0.3 m/s
                                                                       bar: mean yaw rate within 30 % of the command

The policy is deterministic (the Gaussian's mean). Domain randomization, observation noise, random pushes and
action latency are off; the command is held fixed for the whole episode (overriding the env's resampling). MJX runs
all episodes of all commands as one vmapped, jitted `lax.scan`; `--mujoco` also runs them one by one in plain
MuJoCo with the observation computed in numpy (`MujocoRunner`, mirroring `WildRobotEnv.observe` / `step`).
A push is a horizontal force on the pelvis for 0.2 s (in `commands`, the direction turns by 360°/N from episode to
episode); it counts as recovered if the robot has not fallen 2 s after it ends. Metrics per command and overall (all
averaged over the steps before a fall):

    falls            episodes that fell (pelvis below FALL_HEIGHT or tilted > 60°)
    distance_m       path length of the pelvis on the ground plane
    vel_error_mps    |v_xy − command_xy| in the pelvis frame (after a 1 s start-up); yaw_error_radps likewise
    vel_error_2s_mps the same for v_xy averaged over each 2 s (whole gait cycles): tracking without the gait's sway
                     (the pelvis of a walking biped sways sideways: the reference clips' own vel_error_mps is
                     0.15–0.22 m/s, their vel_error_2s_mps 0.01–0.04)
    yaw_rate_radps   mean yaw rate (after the start-up); yaw_error_pct: 100 |mean yaw rate − command| / |command|
    torque_nm        mean |τ| over joints;  power_w: mean Σ_j |τ_j q̇_j|
    clearance_m      peak height of the foot above the ground under it during each swing, averaged
    flight_pct       % of steps with neither foot on the ground
    step_symmetry    1 − |air_L − air_R| / (air_L + air_R) of the total swing time per foot (1 = symmetric)
    push_recovery    recovered / pushed (pushed = not fallen when the push starts)
"""

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from utils.checkpoint import ROOT, load_policy_or_exit
from utils.cli import add_seed, command_name, fail, parse_command
from utils.kinematics import swings
from utils.robot import SCENE_BUMPY, SCENE_ROUGH

DEFAULT_COMMANDS = ("stand", "forward_0.3", "forward_0.5", "backward_0.2", "left_0.15", "turn_left_0.5")
PUSH_SECONDS, RECOVERY_SECONDS, SETTLE_SECONDS, WINDOW_SECONDS = 0.2, 2.0, 1.0, 2.0
METRICS = ("falls", "distance_m", "vel_error_mps", "vel_error_2s_mps", "yaw_error_radps", "yaw_rate_radps",
           "yaw_error_pct", "torque_nm", "power_w", "clearance_m", "flight_pct", "step_symmetry",
           "push_recovery")  # fmt: skip
TRACE = ("pos", "linvel", "yaw_rate", "torque", "joint_vel", "foot_z", "contact", "qpos", "qvel")  # per-step arrays


def scenario(name: str, policy, args) -> dict:
    """commands {name: (vx, vy, yaw)}, seconds, push_every_s (0: one push midway), push_newtons, scene (None: the
    checkpoint's), random_directions."""
    if name == "commands":
        return dict(commands={n: parse_command(n) for n in dict.fromkeys(args.commands)}, seconds=args.seconds,
                    push_every_s=0.0, push_newtons=args.push_newtons, scene=None, random_directions=False)
    walk = dict(push_every_s=0.0, push_newtons=0.0, scene=None, random_directions=False)
    if name == "long_walk":
        return walk | dict(commands={"forward_0.4": (0.4, 0.0, 0.0)}, seconds=130.0)
    if name == "pushes":
        return walk | dict(commands={"forward_0.3": (0.3, 0.0, 0.0)}, seconds=30.0, push_every_s=5.0, push_newtons=10.0,
                           random_directions=True)  # fmt: skip
    if name in ("rough", "bumpy"):
        scene = str((SCENE_ROUGH if name == "rough" else SCENE_BUMPY).relative_to(ROOT))  # relative, like Args.scene
        return walk | dict(commands={"forward_0.3": (0.3, 0.0, 0.0)}, seconds=20.0, scene=scene)
    top = getattr(args, "yaw_max", None) or float(policy.module.COMMAND_RANGE[2, 1])  # what the file promises
    yaws = [round(f * top, 3) for f in (0.25, 0.5, 0.75, 1.0)]
    commands = {command_name(c): c for y in yaws for c in ((0.0, 0.0, y), (0.0, 0.0, -y), (0.3, 0.0, y))}
    return walk | dict(commands=commands, seconds=10.0)


SCENARIOS = ("commands", "long_walk", "pushes", "rough", "bumpy", "turning")
BARS = {  # scenario -> (text, test of the overall row)
    "long_walk": ("no falls", lambda row: row["falls"] == 0),
    "pushes": (">= 90 % standing at the end", lambda row: row["falls"] <= 0.1 * row["episodes"]),
    "rough": ("no falls", lambda row: row["falls"] == 0),
    "bumpy": ("no falls", lambda row: row["falls"] == 0),
    "turning": ("yaw rate within 30 % of every command", lambda row: row["worst_yaw_error_pct"] <= 30.0),
}


# settings that name, size or place a run and never reach its env: set to their defaults in the evaluation env, so
# that runs differing only in them (another seed, a longer run) share one env and one compiled rollout
RUN_SETTINGS = ("exp_name", "seed", "track", "wandb_project_name", "wandb_entity", "capture_video", "save_model",
                "checkpoint_interval", "config", "resume", "verify", "eval_episodes", "init_policy",
                "checkpoint_env_state", "num_devices", "coordinator_address", "num_processes", "process_id",
                "total_timesteps", "num_iterations", "batch_size", "minibatch_size")  # fmt: skip


def eval_args(policy, seconds: float, scene: str | None = None):
    """The checkpoint's env with everything random off; episodes longer than the horizon, so none is truncated."""
    starts = {"reference_init": 0.0} if hasattr(policy.args, "reference_init") else {}  # AMP: every episode at home
    default = type(policy.args)()
    run = {k: getattr(default, k) for k in RUN_SETTINGS if hasattr(default, k)}
    return policy.env_args(domain_randomization=False, push=False, obs_noise=False, action_latency=False,
                           episode_seconds=seconds + 1.0, scene=scene or policy.args.scene, **starts | run)  # fmt: skip


def push_windows(steps: int, dt: float, every_s: float = 0.0) -> list[tuple[int, int, int]]:
    """[(first pushed step, first step after the push, end of its recovery window)] in control steps: one push
    midway (every_s = 0) or one every `every_s` seconds from `every_s` on."""
    every = round(every_s / dt)
    starts = [steps // 2] if every <= 0 else list(range(every, steps, every))
    push, recover = round(PUSH_SECONDS / dt), round(RECOVERY_SECONDS / dt)
    return [(s, min(s + push, steps), min(s + push + recover, steps)) for s in starts]


def push_table(windows, directions: np.ndarray, newtons: float, steps: int) -> np.ndarray:
    """(T, E, 3) force on the pelvis at each step: `newtons` along directions (E, K) (rad) in the K windows."""
    table = np.zeros((steps, len(directions), 3), np.float32)
    for k, (p0, p1, _) in enumerate(windows):
        angle = directions[:, k]
        table[p0:p1] = newtons * np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], -1)
    return table


def push_directions(episodes: int, pushes: int, random: bool, rng: np.random.Generator) -> np.ndarray:
    """(E, K) push directions: uniform at random, or the first to the robot's left turning by 360°/E per episode."""
    if random:
        return rng.uniform(0, 2 * np.pi, (episodes, pushes))
    return np.repeat((np.pi / 2 + 2 * np.pi * np.arange(episodes) / episodes)[:, None], pushes, axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# MJX: all commands × episodes in one vmapped scan
# ---------------------------------------------------------------------------------------------------------------------
_ENVS = {}  # one WildRobotEnv per settings and process: building one costs seconds (MJX forward of `home`)
_ROLLOUTS = {}  # compiled rollouts by settings and shapes: weights are an input, so one run's checkpoints share one


def make_env(policy, seconds: float, scene: str | None = None):
    args = eval_args(policy, seconds, scene)
    if repr(args) not in _ENVS:
        _ENVS[repr(args)] = policy.module.WildRobotEnv(args)
    return _ENVS[repr(args)]


def rollout_mjx(policy, commands: np.ndarray, pushes: np.ndarray | None, steps: int, seed: int = 0,
                scene: str | None = None) -> dict:  # fmt: skip
    """E = len(commands) envs for `steps` control steps. Returns traces [E, T, ...] (TRACE; `qpos` [E, T, 18] and
    `qvel` [E, T, 17] in full), `valid` [E, T] (steps before a fall), `fell` [E], `start` [E, 3], and `final`: the
    batched EnvState after the last step (numpy).
    `pushes` [T, E, 3] (or None) is the force on the pelvis at each step (`push_table`). The policy's weights and the
    commands are inputs of the compiled rollout: a second policy of the same shape and settings reuses the compile."""
    env = make_env(policy, steps * policy.module.CTRL_DT, scene)
    pelvis = int(env.mj_model.jnt_bodyid[0])
    cmds = jnp.asarray(commands, jnp.float32)
    pushes = jnp.zeros((steps, len(commands), 3)) if pushes is None else jnp.asarray(pushes, jnp.float32)
    weights = jax.tree.map(jnp.asarray, (policy.actor_params, policy.obs_mean, policy.obs_var))
    lin = slice(env.linvel_adr, env.linvel_adr + 3)
    command = policy.module.obs_slices(policy.module.OBS_LAYOUT)["command"]  # where the command sits in the obs

    def rollout(weights, cmds, rng, pushes):
        params, mean, var = weights
        act = replace(policy, actor_params=params, obs_mean=mean, obs_var=var).act  # this policy's net, these weights

        def one_step(state, force):  # force (E, 3)
            # the fixed command replaces the env's (re)sampled one, in the obs and in the state the step reads
            state = state.replace(obs=state.obs.at[:, command].set(cmds), info=state.info.replace(command=cmds))
            xfrc = state.data.xfrc_applied.at[:, pelvis, :3].set(force)  # (E, nbody, 6)
            state = state.replace(data=state.data.replace(xfrc_applied=xfrc))
            nxt = jax.vmap(env.step)(state, act(state.obs))
            d = nxt.data  # after a fall this is already the next episode: masked out by `valid`
            out = dict(pos=d.qpos[:, :3], linvel=d.sensordata[:, lin], yaw_rate=d.qvel[:, 5], torque=d.actuator_force,
                       joint_vel=d.qvel[:, 6:], foot_z=jax.vmap(env.feet_height)(d, nxt.info.rand),
                       contact=jax.vmap(env.feet_contact)(d), qpos=d.qpos, qvel=d.qvel,
                       fell=nxt.done & ~nxt.truncated)  # fmt: skip
            return nxt, out

        state = jax.vmap(env.reset)(jax.random.split(rng, len(commands)))
        final, out = jax.lax.scan(one_step, state, pushes)
        return state.data.qpos[:, :3], final, out

    inputs = (weights, cmds, jax.random.PRNGKey(seed), pushes)
    shapes = jax.tree.map(lambda x: (x.shape, str(x.dtype)), inputs)
    key = (repr(env.args), policy.module.__name__, repr(shapes))  # the env's settings hold the actor's (min_std)
    t0 = time.perf_counter()
    if key not in _ROLLOUTS:
        print(f"mjx: compiling the rollout ({len(commands)} envs × {steps} steps) ...", flush=True)
        _ROLLOUTS[key] = jax.jit(rollout).lower(*inputs).compile()
    t1 = time.perf_counter()
    start, final, out = jax.device_get(_ROLLOUTS[key](*inputs))
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

    def __init__(self, policy, scene: str | None = None):
        mod, self.policy = policy.module, policy
        self.model = mujoco.MjModel.from_xml_path(str(ROOT / (scene or policy.args.scene)))
        self.model.geom_friction[:, 0] = mod.NOMINAL_FRICTION  # what the env's randomized_model sets with DR off
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.dt, self.fall_height, self.contact_dist = mod.CTRL_DT, mod.FALL_HEIGHT, mod.CONTACT_DIST
        self.layout = mod.OBS_LAYOUT
        self.clock, self.rates = policy.args.gait_clock, {}  # gait_frequency's setting, its values by vx
        self.stand_stop = getattr(policy.args, "stand_clock", "run") == "stop"  # AMP's --stand-clock
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
        """`WildRobotEnv.observe`'s actor obs (44,), noise off, from MjData; parts in the file's OBS_LAYOUT order."""
        parts = dict(
            gravity=-d.site_xmat[self.imu].reshape(3, 3)[2],  # in the IMU frame
            gyro=d.sensordata[self.gyro],
            command=command,
            joint_pos=d.qpos[7:] - self.default_pose,
            joint_vel=d.qvel[6:] * 0.1,
            last_action=last_action,
            phase=(np.cos(phase), np.sin(phase)),
        )
        return np.hstack([parts[k] for k in self.layout]).astype(np.float32)

    def observe(self) -> np.ndarray:
        return self.observe_data(self.data, self.command, self.last_action, self.phase)

    def contact(self) -> np.ndarray:
        """(2,) bool: `WildRobotEnv.feet_contact`'s rule (a sole in a contact closer than the file's CONTACT_DIST)."""
        c = self.data.contact
        touching = c.dist[: self.data.ncon] < self.contact_dist
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
        vx = float(self.command[0])
        if vx not in self.rates:  # the file's gait_frequency (a jax function) once per command, not every step
            self.rates[vx] = float(self.policy.module.gait_frequency(vx, self.clock))
        stopped = self.stand_stop and np.linalg.norm(self.command) <= 0.05  # the clock stands still with the robot
        self.phase = (self.phase + 2 * np.pi * self.rates[vx] * self.dt * (not stopped)) % (2 * np.pi)
        self.last_action = action
        upright = d.site_xmat[self.imu][8]  # −gravity_z
        return bool(d.qpos[2] < self.fall_height or upright < 0.5 or not np.isfinite(d.qpos).all())

    def trace(self) -> dict:
        d = self.data
        return dict(pos=d.qpos[:3].copy(), linvel=d.sensordata[self.linvel].copy(), yaw_rate=d.qvel[5],
                    torque=d.actuator_force.copy(), joint_vel=d.qvel[6:].copy(),
                    feet=d.site_xpos[self.feet].copy(), contact=self.contact(), qpos=d.qpos.copy(),
                    qvel=d.qvel.copy())  # fmt: skip


def obs_gap(policy, final, scene: str | None = None) -> float:
    """Max |numpy obs − MJX actor obs| over the envs of a batched EnvState (noise off): `MujocoRunner.observe_data`
    of `mjx.get_data(state.data)` against the obs `WildRobotEnv.observe` computed for that same state."""
    from mujoco import mjx

    runner = MujocoRunner(policy, scene)
    gaps = []
    for e in range(len(final.obs)):
        state = jax.tree.map(lambda x: x[e], final)
        d = mjx.get_data(runner.model, state.data)
        obs = runner.observe_data(d, state.info.command, state.info.last_action, float(state.info.phase))
        gaps.append(np.abs(obs - state.obs).max())
    return float(max(gaps))


def rollout_mujoco(policy, commands: np.ndarray, pushes: np.ndarray | None, steps: int, seed: int = 0,
                   scene: str | None = None) -> dict:  # fmt: skip
    """The episodes of `rollout_mjx` (same commands and pushes; the reset noise is drawn by numpy), one after
    another in plain MuJoCo; same output layout."""
    runner, rng = MujocoRunner(policy, scene), np.random.default_rng(seed)
    env = make_env(policy, steps * runner.dt, scene)  # its ground_height: the same ground rule as in MJX
    ground = env.sample_randomization(jax.random.PRNGKey(0))  # with randomization off: the nominal ground
    pushes = np.zeros((steps, len(commands), 3)) if pushes is None else pushes
    traces, valid, fell, start = [], np.zeros((len(commands), steps), bool), np.zeros(len(commands), bool), []
    t0 = time.perf_counter()
    for e, cmd in enumerate(commands):
        runner.reset(rng, cmd)
        start.append(runner.data.qpos[:3].copy())
        rows = []
        for t in range(steps):
            fell[e] = runner.step(pushes[t, e] if pushes[t, e].any() else None)
            rows.append(runner.trace())
            if fell[e]:
                break
            valid[e, t] = True
        rows += [rows[-1]] * (steps - len(rows))  # padding after a fall, masked out by `valid`
        feet = np.stack([r["feet"] for r in rows])  # (T, 2, 3)
        trace = {k: np.stack([r[k] for r in rows]) for k in TRACE if k != "foot_z"}
        trace["foot_z"] = feet[..., 2] - np.asarray(env.ground_height(ground, jnp.asarray(feet[..., :2])))
        traces.append(trace)
    print(f"mujoco: {len(commands)} episodes × {steps} steps in {time.perf_counter() - t0:.1f} s", flush=True)
    return {k: np.stack([tr[k] for tr in traces]) for k in TRACE} | dict(valid=valid, fell=fell, start=np.array(start))


# ---------------------------------------------------------------------------------------------------------------------
# metrics: one numpy function for both simulators
# ---------------------------------------------------------------------------------------------------------------------
def error_norms(error: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """|error| per step (T,) and of its means over each whole WINDOW_SECONDS window (W,: none in a shorter series) of
    a velocity error (T, 2): what is left of a gait's sway after whole cycles is the tracking error."""
    k = round(WINDOW_SECONDS / dt)
    means = error[: len(error) // k * k].reshape(-1, k, error.shape[-1]).mean(1)
    return np.linalg.norm(error, axis=-1), np.linalg.norm(means, axis=-1)


def episode_metrics(tr: dict, command: np.ndarray, dt: float, windows: list) -> dict:
    """Metrics of one episode from its traces [T, ...] (only `valid` steps count) and its push `windows`. NaN where
    undefined. Also `pushed` and `recovered`: pushes that met the robot standing, and those it was up 2 s after."""
    v = tr["valid"]
    n = int(v.sum())
    out = dict.fromkeys(METRICS, math.nan) | dict(falls=float(tr["fell"]))
    met = [w for w in windows if v[w[0]]]  # pushed only if still standing when the push starts
    out |= dict(pushed=len(met), recovered=sum(bool(v[end - 1]) for _, _, end in met))
    if met:
        out["push_recovery"] = out["recovered"] / out["pushed"]
    if n == 0:
        return out
    pos = np.concatenate([tr["start"][None, :2], tr["pos"][v][:, :2]])
    out["distance_m"] = float(np.linalg.norm(np.diff(pos, axis=0), axis=-1).sum())
    settle = min(round(SETTLE_SECONDS / dt), n // 2)  # velocity errors after the start-up
    per_step, of_means = error_norms(tr["linvel"][v][settle:, :2] - command[:2], dt)
    out["vel_error_mps"] = float(per_step.mean())
    if len(of_means):
        out["vel_error_2s_mps"] = float(of_means.mean())
    out["yaw_error_radps"] = float(np.abs(tr["yaw_rate"][v][settle:] - command[2]).mean())
    out["yaw_rate_radps"] = float(tr["yaw_rate"][v][settle:].mean())
    if command[2] != 0:
        out["yaw_error_pct"] = 100.0 * abs(out["yaw_rate_radps"] - command[2]) / abs(command[2])
    torque, joint_vel = tr["torque"][v], tr["joint_vel"][v]
    out["torque_nm"] = float(np.abs(torque).mean())
    out["power_w"] = float(np.abs(torque * joint_vel).sum(-1).mean())
    contact, foot_z = tr["contact"][v].astype(bool), tr["foot_z"][v]
    out["flight_pct"] = float(100.0 * (~contact).all(-1).mean())
    peaks = [foot_z[a:b, f].max() for f, a, b in swings(contact) if a > 0]  # swings that lift off in the window
    air = [float((~contact[:, f]).sum()) * dt for f in range(2)]
    out["clearance_m"] = float(np.mean(peaks)) if peaks else math.nan
    out["step_symmetry"] = 1.0 - abs(air[0] - air[1]) / (air[0] + air[1]) if sum(air) > 0 else math.nan
    return out


def summarize(rollout: dict, commands: dict, episodes: int, dt: float, windows: list) -> dict:
    """Per command (episodes are consecutive rows of `rollout`) and overall: falls summed, push recovery pooled over
    all pushes, the rest averaged; overall also has the worst command's yaw_error_pct."""
    per_episode = []
    for e, name in enumerate(np.repeat(list(commands), episodes)):
        tr = {k: v[e] for k, v in rollout.items()}
        per_episode.append(episode_metrics(tr, np.asarray(commands[name]), dt, windows))

    def combine(rows):
        out = {"episodes": len(rows)}
        for k in METRICS:
            vals = np.array([r[k] for r in rows], float)
            vals = vals[np.isfinite(vals)]
            out[k] = float(vals.sum()) if k == "falls" else (float(vals.mean()) if len(vals) else None)
        pushed = sum(r["pushed"] for r in rows)
        out["push_recovery"] = sum(r["recovered"] for r in rows) / pushed if pushed else None
        return out

    report = {name: combine(per_episode[i * episodes : (i + 1) * episodes]) for i, name in enumerate(commands)}
    report["overall"] = combine(per_episode)
    yaw = [row["yaw_error_pct"] for row in report.values() if row["yaw_error_pct"] is not None]
    report["overall"]["worst_yaw_error_pct"] = max(yaw) if yaw else None
    return report


def print_table(name: str, result: dict):
    cols = [("falls", "{:.0f}"), ("distance_m", "{:.2f}"), ("vel_error_mps", "{:.3f}"), ("vel_error_2s_mps", "{:.3f}"),
            ("yaw_rate_radps", "{:+.3f}"),
            ("yaw_error_pct", "{:.0f}"), ("torque_nm", "{:.2f}"), ("power_w", "{:.2f}"), ("clearance_m", "{:.3f}"),
            ("flight_pct", "{:.1f}"), ("step_symmetry", "{:.2f}"), ("push_recovery", "{:.2f}")]  # fmt: skip
    w = max(19, *(len(c) for rows in result["simulators"].values() for c in rows))  # forward_0.3_turn_left_0.125
    header = f"{'sim':7s} {'command':{w}s} {'eps':>4s} " + " ".join(f"{c[:13]:>13s}" for c, _ in cols)
    print(f"\n{name} ({result['settings']['seconds']:g} s)\n{header}\n" + "-" * len(header))
    for sim, rows in result["simulators"].items():
        for command, row in rows.items():
            cells = " ".join(f"{'-' if row[c] is None else fmt.format(row[c]):>13s}" for c, fmt in cols)
            print(f"{sim:7s} {command:{w}s} {row['episodes']:4d} {cells}")
    for sim, (text, met) in result.get("bar", {}).items():
        print(f"bar ({sim}): {text}: {'met' if met else 'NOT met'}")


def run_scenario(policy, name: str, spec: dict, args) -> dict:
    """One scenario in MJX (and plain MuJoCo with --mujoco): settings, simulators, obs gap, bar."""
    dt = policy.module.CTRL_DT
    steps = max(1, round(spec["seconds"] / dt))
    commands = np.repeat(np.array(list(spec["commands"].values()), np.float32), args.episodes, axis=0)  # (E, 3)
    windows = push_windows(steps, dt, spec["push_every_s"]) if spec["push_newtons"] > 0 else []
    rng = np.random.default_rng(args.seed)
    directions = push_directions(len(commands), len(windows), spec["random_directions"], rng)  # (E, K)
    pushes = push_table(windows, directions, spec["push_newtons"], steps) if windows else None
    print(f"{name}: {len(spec['commands'])} commands × {args.episodes} episodes × {steps * dt:g} s, "
          f"{len(windows)} pushes of {spec['push_newtons']:g} N each, scene {spec['scene'] or policy.args.scene}")
    mjx_rollout = rollout_mjx(policy, commands, pushes, steps, args.seed, spec["scene"])
    final = mjx_rollout.pop("final")
    simulators = {"mjx": summarize(mjx_rollout, spec["commands"], args.episodes, dt, windows)}
    gap = None
    if args.mujoco:
        gap = obs_gap(policy, final, spec["scene"])
        print(f"sim2sim: numpy vs MJX actor observation at the MJX rollout's last states: max abs diff {gap:.1e}")
        rollout = rollout_mujoco(policy, commands, pushes, steps, args.seed, spec["scene"])
        simulators["mujoco"] = summarize(rollout, spec["commands"], args.episodes, dt, windows)
    settings = dict(episodes=args.episodes, seconds=steps * dt, commands=spec["commands"], scene=spec["scene"] or
                    policy.args.scene, push_newtons=spec["push_newtons"], push_seconds=PUSH_SECONDS,
                    push_starts_s=[w[0] * dt for w in windows], seed=args.seed,
                    randomization="off (domain randomization, obs noise, random pushes, action latency)")  # fmt: skip
    result = dict(settings=settings, simulators=simulators, obs_max_abs_diff_numpy_vs_mjx=gap)
    if name in BARS:
        text, test = BARS[name]
        result["bar"] = {sim: (text, bool(test(rows["overall"]))) for sim, rows in simulators.items()}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--scenario", nargs="+", default=["commands"], help=f"from: {' '.join(SCENARIOS)}, or all")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per command")
    parser.add_argument("--seconds", type=float, default=None, help="episode length (s) of `commands` (default 10)")
    parser.add_argument("--commands", nargs="+", default=None, metavar="NAME",
                        help=f"of `commands` (default {' '.join(DEFAULT_COMMANDS)})")
    parser.add_argument("--push-newtons", type=float, default=None, help="`commands`' push (default 10; 0: none)")
    parser.add_argument("--yaw-max", type=float, default=None, help="`turning` up to this yaw rate instead (rad/s)")
    parser.add_argument("--mujoco", action="store_true", help="also run the episodes in plain MuJoCo (sim2sim)")
    add_seed(parser)
    parser.add_argument("--out", required=True, help="the JSON report")
    args = parser.parse_args(argv)
    scenarios = list(SCENARIOS) if args.scenario == ["all"] else list(dict.fromkeys(args.scenario))
    unknown = [c for c in scenarios if c not in SCENARIOS]
    if unknown:
        fail(f"--scenario: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)}, all)")
    given = [f for f, v in (("--seconds", args.seconds), ("--commands", args.commands),
                            ("--push-newtons", args.push_newtons)) if v is not None]  # fmt: skip
    if given and "commands" not in scenarios:
        fail(f"{', '.join(given)} set(s) the `commands` scenario, which --scenario {' '.join(scenarios)} does not run")
    args.seconds = 10.0 if args.seconds is None else args.seconds
    args.commands = list(DEFAULT_COMMANDS) if args.commands is None else args.commands
    args.push_newtons = 10.0 if args.push_newtons is None else args.push_newtons
    for name in args.commands:
        try:
            parse_command(name)
        except ValueError as e:
            fail(f"--commands: {e}")
    if args.episodes < 1 or args.seconds <= 0 or args.push_newtons < 0 or (args.yaw_max or 1) <= 0:
        fail("--episodes must be >= 1, --seconds > 0, --push-newtons >= 0 and --yaw-max > 0")
    policy = load_policy_or_exit(args.checkpoint)
    print(f"evaluating {policy.path} ({policy.meta['algo']}, step {policy.meta['global_step']:,}): "
          f"{', '.join(scenarios)}", flush=True)  # fmt: skip
    results = {name: run_scenario(policy, name, scenario(name, policy, args), args) for name in scenarios}
    report = dict(checkpoint=str(policy.path), algo=policy.meta["algo"], global_step=int(policy.meta["global_step"]),
                  scenarios=results)  # fmt: skip
    for name, result in results.items():
        print_table(name, result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)  # atomic: no half-written report
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
