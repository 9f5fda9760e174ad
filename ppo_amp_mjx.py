"""PPO + Adversarial Motion Priors on MuJoCo MJX: the WildRobot walks on command, in the style of reference motions.

    python ppo_amp_mjx.py                     # the default job: 2048 envs, the shipped gait clips (wildrobot_walk.npz)
    python ppo_amp_mjx.py --motion-file my_clips.npz --amp-weight 1.0
    python ppo_amp_mjx.py --verify            # tiny run through every code path (CPU, < 2 min)
    python ppo_amp_mjx.py --amp-weight 0 --init-std 0.5   # ppo_mjx.py on the same seed (to float rounding)

ppo_mjx.py plus AMP (Peng et al. 2021, https://arxiv.org/abs/2104.02180), every differing block marked `# AMP:`: a
discriminator learns to tell the reference clips' (s, s') feature pairs from the policy's; its least-squares score is
a style reward added to the task reward. README.md "ppo_amp_mjx.py" has the flags, metric names and results.
"""

import contextlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jp
import mujoco
import numpy as np
import optax
import tyro
from flax import serialization, struct
from jax.experimental import multihost_utils
from jax.scipy.spatial.transform import Rotation  # AMP: quaternions to matrices in amp_features
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from utils import runs, terrain
from utils.cli import fail, name_values

with contextlib.redirect_stdout(io.StringIO()):  # without the optional warp package, mjx prints two import failures
    from mujoco import mjx

from utils.kinematics import feet_kinematics  # AMP: the reference clips' sole kinematics
from utils.motions import load_motions, load_motions_or_exit, reference_states  # AMP: safe loaders (no unpickling)

# Shapes: T num_steps, N num_envs, B = T·N, M minibatch size, O actor obs dim, C critic obs dim, A action dim (11)
# AMP: D AMP feature dim (41), k frames per discriminator sample (--disc-history), P reference pairs, R replay size
ROOT = Path(__file__).resolve().parent


@dataclass
class Args:
    # Experiment
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (first part of the run folder)"""
    seed: int = 1
    """seed of the experiment"""
    track: bool = False
    """log to Weights & Biases (also works with WANDB_MODE=offline)"""
    wandb_project_name: str = "wildrobot-mjx"
    """the W&B project name"""
    wandb_entity: str | None = None
    """the W&B entity (team)"""
    capture_video: bool = False
    """render a video of the final policy into the run folder's videos/"""
    save_model: bool = True
    """write checkpoints (every `checkpoint_interval` iterations and at the end)"""
    checkpoint_interval: int = 50
    """iterations between checkpoints"""
    config: str | None = None
    """a saved args.yaml to take defaults from; flags given on the command line override it"""
    resume: str | None = None
    """a checkpoint to continue from (its args are the defaults; flags override)"""
    verify: bool = False
    """tiny run through every code path (rollout, update, checkpoint save + reload, eval) in < 2 min on a CPU"""
    eval_episodes: int = 16
    """parallel episodes of the deterministic policy evaluated at the end of training"""
    init_policy: str | None = None
    """fine-tune from a checkpoint's actor and obs normalizer (e.g. assets/policies/*.msgpack), with a fresh critic"""
    checkpoint_env_state: bool = True
    """keep the envs' state in checkpoints (exact resume); without it they are much smaller, a resume starts fresh
    episodes, and --num-envs may change"""

    # Devices (data-parallel: the envs are split over the devices, everything else is replicated)
    num_devices: int | None = None
    """devices to split the envs over (default: all; with several processes, all of theirs, equally many each)"""
    coordinator_address: str | None = None
    """host:port of process 0, to train on several hosts with jax.distributed (with --num-processes, --process-id)"""
    num_processes: int = 1
    """number of processes (hosts) taking part; only process 0 logs and writes checkpoints and videos"""
    process_id: int = 0
    """this process's index, 0 .. num_processes - 1"""

    # Environment
    scene: str = "assets/scene_flat.xml"
    """the MJCF scene (relative paths are resolved against this file's folder)"""
    episode_seconds: float = 20.0
    """time limit of an episode (truncation, bootstrapped)"""
    action_scale: float = 0.7  # AMP: at ppo_mjx.py's 0.4 the knee can ask for 0.90 rad; the clips swing it to 1.14
    """servo target = default pose + action_scale · action (rad)"""
    domain_randomization: bool = True
    """per-episode friction, masses, joint friction/armature/damping, kp, force limit, default-pose offsets"""
    push: bool = True
    """random horizontal pushes on the pelvis: a force of 0 to --push-newtons for 0.06-0.2 s, every 2-5 s"""
    push_newtons: float = 15.0
    """the largest push force (N); magnitude and direction are drawn uniformly for each push"""
    rough_share: float = 0.5
    """on a scene with a flat floor and a heightfield (assets/scene_terrain.xml): share of episodes on the field"""
    obs_noise: bool = True
    """uniform noise on the actor's observations"""
    action_latency: bool = True
    """half of the episodes apply the action one control step late"""
    gait_clock: Literal["fixed", "command"] = "fixed"
    """the gait clock's rate: GAIT_FREQUENCY always, or the reference gait's cadence for the commanded speed"""
    reward_scales: tuple[str, ...] = ()
    """NAME=S sets a task term's scale in place of its REWARD_SCALES entry (e.g. feet_air_time=2; 0: the term is off)"""

    # Algorithm
    total_timesteps: int = 100_000_000
    """total environment steps of the experiment"""
    num_iterations: int | None = None
    """number of PPO iterations (overrides total_timesteps when given)"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 2048
    """the number of parallel environments"""
    num_steps: int = 20
    """the number of steps per environment per rollout"""
    anneal_lr: bool = True
    """linearly anneal the learning rate to zero"""
    gamma: float = 0.97
    """the discount factor"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 8
    """the number of minibatches per epoch"""
    update_epochs: int = 4
    """the number of epochs over each rollout"""
    norm_adv: bool = True
    """normalize advantages per minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """clip the value loss like the policy (PPO2)"""
    ent_coef: float = 0.005
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss"""
    max_grad_norm: float = 1.0
    """the maximum norm for gradient clipping"""
    target_kl: float | None = None
    """skip the remaining epochs of an iteration once the approximate KL exceeds this"""
    init_std: float = 0.114  # AMP: 0.08 rad (ppo_mjx.py 0.2): the discriminator sees every jitter
    """initial std of the Gaussian policy (actions are in [-1, 1], times --action-scale rad)"""
    min_std: float = 0.02857  # AMP: 0.02 rad, as ppo_mjx.py
    """floor of the policy's action standard deviation"""
    critic_warmup_iterations: int = 0
    """iterations at the start that train only the critic: the actor and its observation normalizer stay untouched"""

    # AMP: style reward from a discriminator trained on reference motions
    motion_file: str = "assets/motions/wildrobot_walk.npz"
    """reference motions: an .npz file or a folder of them (utils/motions.py format); the generator's gait by default"""
    amp_weight: float = 5.0
    """weight of the style reward (per step, times the 0.02 s control step like the task terms); 0 = plain PPO"""
    task_weight: float = 1.0
    """weight of the task reward"""
    stand_clock: Literal["run", "stop"] = "run"
    """the gait clock on a zero command: runs on (ppo_mjx.py's), or stops, so that nothing times steps in place"""
    shaping_terms: tuple[Literal["feet_phase", "feet_air_time", "feet_height", "stand_still", "stand_motion"], ...] = ()
    """SHAPING_TERMS kept with a style reward, which drops the others (feet_height and stand_motion are AMP's own)"""
    waist_weight: float = 20.0
    """waist yaw's `pose` weight with a style reward (ppo_mjx.py: 1.0): clips with a still waist hide it (1 if not)"""
    tilt_rate_weight: float = 0.05
    """pelvis roll/pitch rate penalty (ang_vel_xy) weight with a style reward (ppo_mjx.py: 0.05): clips hold it at 0"""
    track_seconds: float = 0.0
    """time constant (s) of the low-passed pelvis velocity tracking_lin_vel pays on (0: per step): the clips sway"""
    disc_loss: Literal["lsgan", "bce"] = "lsgan"
    """discriminator objective: least squares with targets +1 (reference) / -1 (policy), or binary cross-entropy"""
    disc_learning_rate: float = 1e-5
    """learning rate of the discriminator"""
    disc_grad_penalty: float = 10.0
    """weight of the gradient penalty on reference samples"""
    disc_logit_reg: float = 0.05
    """L2 weight on the discriminator's output layer"""
    disc_weight_decay: float = 1e-4
    """L2 weight on all discriminator weights"""
    disc_replay_size: int = 100_000
    """replay buffer of past policy (s, s') pairs (a ring: the oldest are overwritten)"""
    disc_replay_insert: int = 4096
    """policy pairs written to the replay buffer per iteration (a random subset): it spans 24 iterations at any size"""
    disc_batch_size: int = 4096
    """reference pairs (and as many policy pairs) per discriminator update"""
    disc_policy_share: float = 0.2
    """policy pairs the discriminator sees per iteration / batch: the updates (2 at 2048 envs, 8 at 8192, 1 at 256)"""
    disc_updates: int | None = None
    """discriminator updates per iteration (default: from --disc-policy-share)"""
    disc_history: int = 2
    """frames the discriminator sees per sample: 2 is AMP's (s, s') pair, k > 2 adds the k - 2 states before s"""
    reference_init: float = 0.5
    """share of training episodes that start from a random reference frame instead of `home` (evaluation: none)"""
    feature_min_std: float = 5e-3
    """features whose std over the reference clips is below this are hidden from the discriminator (0: none)"""
    disc_feature_weights: tuple[str, ...] = ()
    """NAME=W scales a feature's input to the discriminator (AMP_FEATURE_NAMES, e.g. left_foot_z=3): where it looks"""

    # to be filled in at runtime
    batch_size: int = 0
    """the batch size (num_envs · num_steps)"""
    minibatch_size: int = 0
    """the minibatch size (batch_size // num_minibatches)"""


VERIFY_SIZES = dict(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=2, num_iterations=2,
                    checkpoint_interval=1, eval_episodes=2, episode_seconds=0.2)  # fmt: skip
VERIFY_SIZES |= dict(disc_batch_size=32, disc_replay_size=40, disc_replay_insert=24)  # AMP: wraps in iteration 2


def finalize_args(args: Args) -> Args:
    """Apply --verify sizes, validate flag combinations (before any compile) and fill the derived fields."""
    args = replace(args, **VERIFY_SIZES) if args.verify else args
    devices = runs.num_devices(args.num_devices, args.coordinator_address, args.num_processes, args.process_id)
    args = replace(args, num_devices=devices)
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_interval", "eval_episodes"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    batch = args.num_envs * args.num_steps
    if batch % args.num_minibatches:
        fail(f"--num-envs × --num-steps ({batch}) is not divisible by --num-minibatches ({args.num_minibatches})")
    if args.num_envs % args.num_devices or batch % (args.num_minibatches * args.num_devices):
        fail(f"--num-envs {args.num_envs} does not split over {args.num_devices} devices (each needs as many envs, "
             f"and its share of the batch must split into --num-minibatches {args.num_minibatches})")  # fmt: skip
    if args.num_iterations is not None and args.num_iterations <= 0:
        fail(f"--num-iterations must be positive, got {args.num_iterations}")
    if args.num_iterations is None and args.total_timesteps < batch:
        fail(f"--total-timesteps ({args.total_timesteps}) is smaller than one batch (--num-envs × --num-steps = "
             f"{batch})")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        fail("--gamma must be in (0, 1] and --gae-lambda in [0, 1]")
    if min(args.learning_rate, args.episode_seconds, args.min_std, args.init_std) <= 0:
        fail("--learning-rate, --episode-seconds, --min-std and --init-std must be positive")
    if args.push_newtons < 0 or not 0 <= args.rough_share <= 1 or args.critic_warmup_iterations < 0:
        fail(f"--push-newtons must be >= 0, --rough-share in [0, 1] and --critic-warmup-iterations >= 0, got "
             f"{args.push_newtons}, {args.rough_share} and {args.critic_warmup_iterations}")  # fmt: skip
    if args.init_std < args.min_std:
        fail(f"--init-std {args.init_std} is below --min-std {args.min_std} (the floor would pin the std there)")
    if not (ROOT / args.scene).is_file():
        fail(f"--scene {args.scene}: no such file")
    name_values(args.reward_scales, REWARD_SCALES, "--reward-scales")  # one line here if an item is bad
    if args.init_policy and not args.resume:  # a resumed run has its actor in the checkpoint
        read_policy(args.init_policy, args)
    if args.capture_video:  # rendering is a tool: check it works here (headless too) before hours of training
        from utils.render import require_gl

        require_gl("--capture-video")
    # AMP: weights, discriminator sizes and the motion file are checked before any compile
    if min(args.amp_weight, args.task_weight, args.waist_weight, args.tilt_rate_weight) < 0:
        fail(f"--amp-weight, --task-weight, --waist-weight and --tilt-rate-weight must be >= 0, got {args.amp_weight}, "
             f"{args.task_weight}, {args.waist_weight} and {args.tilt_rate_weight}")  # fmt: skip
    if args.disc_updates is None:
        args = replace(args, disc_updates=max(1, round(args.disc_policy_share * batch / args.disc_batch_size)))
    if min(args.disc_batch_size, args.disc_replay_size, args.disc_replay_insert, args.disc_updates,
           args.disc_learning_rate, args.disc_policy_share) <= 0:  # fmt: skip
        fail("--disc-batch-size, --disc-replay-size, --disc-replay-insert, --disc-updates, --disc-learning-rate and "
             "--disc-policy-share must be positive")
    if args.disc_batch_size % args.num_devices or args.disc_replay_size % args.num_devices:
        fail(f"--disc-batch-size and --disc-replay-size must split evenly over the {args.num_devices} devices")
    if not 0 <= args.reference_init <= 1 or min(args.feature_min_std, args.track_seconds) < 0 or args.disc_history < 2:
        fail(f"--reference-init must be in [0, 1], --feature-min-std and --track-seconds >= 0, --disc-history >= 2, "
             f"got {args.reference_init}, {args.feature_min_std}, {args.track_seconds} and {args.disc_history}")
    motions = load_motions_or_exit(args.motion_file, "--motion-file")
    if abs(motions.fps * CTRL_DT - 1) > 1e-6:  # (s, s') pairs must be one control step apart
        fail(f"--motion-file {args.motion_file}: {motions.fps:g} fps, the policy acts at {1 / CTRL_DT:g} Hz")
    if max(motions.clip_lengths) < args.disc_history:
        fail(f"--disc-history {args.disc_history}: longer than the longest clip ({max(motions.clip_lengths)} frames)")
    iterations = args.num_iterations or args.total_timesteps // batch
    return replace(args, batch_size=batch, minibatch_size=batch // args.num_minibatches, num_iterations=iterations,
                   total_timesteps=iterations * batch)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> Args:
    """tyro on top of defaults from --resume CHECKPOINT, then --config FILE.yaml."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = tyro.cli(Args, default=runs.saved_defaults(Args(), argv, ALGO, WildRobotEnv.SIZES), args=argv)
    if any(a.startswith("--total-timesteps") for a in argv) and not any(a.startswith("--num-iterations") for a in argv):
        args = replace(args, num_iterations=None)  # a saved config's resolved num_iterations must not win
    return finalize_args(args)


# ---------------------------------------------------------------------------------------------------------------------
# ENV: the WildRobot walking task (Playground layout: config, reset, step, observation, named reward terms)
# ---------------------------------------------------------------------------------------------------------------------
CTRL_DT = 0.02  # 50 Hz control
GAIT_FREQUENCY = 1.5  # Hz, one left + one right step per cycle
JOINT_NAMES = ("left_hip_pitch", "left_hip_roll", "left_knee", "left_ankle_pitch", "left_foot_roll", "right_hip_pitch",
               "right_hip_roll", "right_knee", "right_ankle_pitch", "right_foot_roll", "waist_yaw")  # = actuators
FEET_SITES = ("left_foot", "right_foot")
SOLES = ("left_sole", "right_sole")
COMMAND_RANGE = np.array([[-0.3, 0.6], [-0.2, 0.2], [-0.5, 0.5]])  # vx (m/s), vy (m/s), yaw rate (rad/s)
COMMAND_SECONDS = 5.0  # a new command every 5 s; 10 % of commands are "stand still"
SWING_HEIGHT = 0.04  # m, target foot clearance at mid-swing
FALL_HEIGHT = 0.25  # m, pelvis height below which the robot has fallen (standing: 0.478)
NOMINAL_FRICTION = 0.8  # sliding friction of floor and soles without randomization
SUNK = 0.1  # m: on a scene with a floor and a heightfield, the one not in use this episode sinks this far
CONTACT_DIST = 1e-3  # m: a sole in a solver contact closer than this touches the ground (the simulated contact rule)
REWARD_SCALES = dict(  # Playground-style: reward = dt · Σ scale · term
    tracking_lin_vel=1.5,  # exp(-|v_xy - cmd_xy|² / 0.05): tight, so robustness is not bought with a slower walk
    tracking_ang_vel=1.0,  # exp(-(ω_z - cmd_yaw)² / 0.1): σ² 0.25 paid 37 % for not turning at all at 0.5 rad/s
    lin_vel_z=-0.5,  # v_z²
    ang_vel_xy=-0.05,  # |ω_xy|²
    orientation=-5.0,  # |gravity_xy|² in the torso frame
    torques=-2e-4,  # Σ τ²
    action_rate=-0.01,  # Σ (a - a_prev)²
    feet_air_time=1.0,  # Σ (air time - 0.2 s) at touchdown, only when commanded to move
    feet_slip=-0.25,  # Σ |v_foot_xy|² while in contact
    feet_height=10.0,  # AMP: Σ (min(swing apex / SWING_HEIGHT, 1) - 0.5) at touchdown while moving: < 2 cm costs
    feet_phase=1.0,  # exp(-Σ (z_foot - z_target(phase))² / 0.001): alternate swing feet to the gait clock
    pose=-0.5,  # Σ w (q - q_default)², strongest on hip roll and waist yaw
    stand_still=-1.0,  # Σ |q - q_default| when the command is zero
    stand_motion=-0.2,  # AMP: Σ |q̇| when the command is zero: stand still in the pose the clips stand in, not `home`
    alive=1.0,  # 1 per step not fallen
    termination=-10.0,  # 1 on a fall
)
# AMP: task terms that prescribe a gait (swing clock, air time, standing in `home`); here the reference motions do that
SHAPING_TERMS = ("feet_phase", "feet_air_time", "feet_height", "stand_still", "stand_motion")
# domain randomization, per episode: (low, high, how the draw applies to the nominal value)
RANDOMIZATION = dict(friction=(0.4, 1.0, "set"), mass_scale=(0.9, 1.1, "set"), torso_mass=(-0.2, 0.3, "set"),
                     frictionloss=(0.5, 2.0, "scale"), armature=(1.0, 1.1, "scale"), damping=(0.8, 1.2, "scale"),
                     kp=(0.9, 1.1, "scale"), force_limit=(0.9, 1.1, "scale"),
                     pose_offset=(-0.03, 0.03, "add"))  # fmt: skip
# uniform noise amplitudes on the actor's observations
NOISE = dict(gravity=0.05, gyro=0.2, joint_pos=0.03, joint_vel=1.5)
# the observations: name -> width, in order (the tools read observations by these names, see obs_slices)
OBS_LAYOUT = dict(gravity=3, gyro=3, command=3, joint_pos=11, joint_vel=11, last_action=11, phase=2)  # actor (O)
CRITIC_LAYOUT = dict(actor=sum(OBS_LAYOUT.values()), linvel=3, height=1, contact=2, feet_height=2, torque=11, push=3)
LOSSES = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl")  # checked each iteration
LOSSES += ("amp/disc_loss", "amp/grad_penalty")  # AMP: the discriminator's too


def gait_frequency(vx, clock: str):
    """Hz of the gait clock at forward command vx (--gait-clock): GAIT_FREQUENCY, or utils/gait.py's cadence (a step of
    0.4 s, shorter above 0.3 m/s so that no step exceeds 12 cm, at least 0.27 s: 1.25 to 1.85 Hz)."""
    return GAIT_FREQUENCY if clock == "fixed" else 0.5 / jp.clip(0.12 / jp.maximum(abs(vx), 1e-6), 0.27, 0.4)


def obs_slices(layout: dict) -> dict[str, slice]:
    """name -> slice of each part of an observation with this layout."""
    ends = np.cumsum(list(layout.values()))
    return {name: slice(int(end - size), int(end)) for (name, size), end in zip(layout.items(), ends)}


@struct.dataclass
class Randomization:
    """Per-episode physics parameters (sampled at reset; nominal values when domain randomization is off)."""

    friction: jax.Array  # ()  sliding friction of the floor and soles
    mass_scale: jax.Array  # (nbody,)
    torso_mass: jax.Array  # ()  added to the torso (kg)
    frictionloss: jax.Array  # (nv,)
    armature: jax.Array  # (nv,)
    damping: jax.Array  # (nv,)
    kp: jax.Array  # (A,)
    force_limit: jax.Array  # (A,)
    pose_offset: jax.Array  # (A,)  calibration error of the default pose
    rough: jax.Array  # ()  bool: this episode walks on the scene's heightfield (else on its flat floor)


@struct.dataclass
class EnvInfo:
    rng: jax.Array  # (2,)
    command: jax.Array  # (3,)  vx, vy, yaw rate
    last_action: jax.Array  # (A,)
    latency: jax.Array  # ()  bool: apply last step's action
    phase: jax.Array  # ()  gait clock (rad)
    feet_air_time: jax.Array  # (2,)
    swing_peak: jax.Array  # AMP: (2,)  the soles' highest point in this swing (lowest corner, m above the ground)
    vel_avg: jax.Array  # AMP: (2,)  pelvis velocity (xy, its frame) low-passed over --track-seconds
    last_contact: jax.Array  # (2,) bool
    step: jax.Array  # ()  control steps in this episode
    push_countdown: jax.Array  # ()  steps until the next push
    push_left: jax.Array  # ()  steps the current push still acts
    push_force: jax.Array  # (3,)  the force acting on the pelvis during the last step (N, world frame)
    episode_return: jax.Array  # ()
    rand: Randomization


@struct.dataclass
class EnvState:
    data: mjx.Data
    obs: jax.Array  # (O,)
    critic_obs: jax.Array  # (C,)
    reward: jax.Array  # ()
    done: jax.Array  # ()  terminated or truncated (the env has been reset)
    truncated: jax.Array  # ()
    reached_critic_obs: jax.Array  # (C,)  critic obs of the state the last step reached, before any auto-reset
    reached_qpos_qvel: jax.Array  # (nq + nv,)  # AMP: qpos, qvel of that same state: the s' of the policy's pair
    info: EnvInfo
    metrics: dict  # reward/<term> (), nan_reset (), episode_return (), episode_length () — at done


class WildRobotEnv:
    """Velocity-command walking on MJX. All methods are pure and jit/vmap-able (self is static)."""

    OBS_SIZE = sum(OBS_LAYOUT.values())  # 44
    CRITIC_OBS_SIZE = sum(CRITIC_LAYOUT.values())  # 66
    ACTION_SIZE = 11
    SIZES = dict(obs_size=OBS_SIZE, critic_obs_size=CRITIC_OBS_SIZE, action_size=ACTION_SIZE)  # checkpoints' meta

    def __init__(self, args: Args):
        self.args = args
        # AMP: a style reward takes over the gait-shaping terms that --shaping-terms does not keep (without: PPO's)
        kept = args.shaping_terms if args.amp_weight > 0 else set(SHAPING_TERMS) - {"feet_height", "stand_motion"}
        self.reward_scales = REWARD_SCALES | {k: 0.0 for k in SHAPING_TERMS if k not in kept} | (
            dict(ang_vel_xy=-args.tilt_rate_weight) if args.amp_weight > 0 else {}) | name_values(
            args.reward_scales, REWARD_SCALES, "--reward-scales")
        self.mj_model = mujoco.MjModel.from_xml_path(str(ROOT / args.scene))
        self.n_substeps = round(CTRL_DT / self.mj_model.opt.timestep)
        device = jax.local_devices()[0]  # this process's (MJX's default is jax.devices()[0], another host's)
        self.model = mjx.put_model(self.mj_model, device, impl="jax")  # MJX's JAX implementation (no warp)
        m = self.mj_model
        assert m.nu == self.ACTION_SIZE, f"{args.scene}: expected {self.ACTION_SIZE} actuators, found {m.nu}"
        self.joint_names = [m.joint(m.actuator_trnid[i, 0]).name for i in range(m.nu)]
        if tuple(self.joint_names) != JOINT_NAMES:
            raise ValueError(f"{args.scene}: actuated joints {self.joint_names} are not the WildRobot's {JOINT_NAMES}")
        self.home_qpos = jp.asarray(m.key_qpos[m.keyframe("home").id])
        self.default_pose = self.home_qpos[7:]  # qpos order == actuator order
        self.ctrl_range = jp.asarray(m.actuator_ctrlrange)
        self.episode_steps = round(args.episode_seconds / CTRL_DT)
        self.imu = m.site("imu").id
        self.torso = m.body("torso").id
        self.pelvis = m.body("waist").id
        self.feet = jp.array([m.site(s).id for s in FEET_SITES])
        self.soles = np.array([m.geom(g).id for g in SOLES])
        self.sole_size = jp.asarray(m.geom_size[self.soles])  # AMP: half-sizes of the sole boxes
        self.gyro_adr = m.sensor_adr[m.sensor("gyro").id]
        self.linvel_adr = m.sensor_adr[m.sensor("local_linvel").id]
        # the ground (world geoms): a floor plane and/or a heightfield, its elevations (nrow, ncol) row = y, col = x
        ground, kind = {int(m.geom_type[g]): g for g in range(m.ngeom) if m.geom_bodyid[g] == 0}, mujoco.mjtGeom
        self.plane, self.hfield = ground.get(int(kind.mjGEOM_PLANE)), ground.get(int(kind.mjGEOM_HFIELD))
        if self.hfield is not None:
            h = m.geom_dataid[self.hfield]
            adr, shape = m.hfield_adr[h], (m.hfield_nrow[h], m.hfield_ncol[h])
            self.hfield_data = jp.asarray(m.hfield_data[adr : adr + shape[0] * shape[1]].reshape(shape))
            self.hfield_size = jp.asarray(m.hfield_size[h])
        # pose penalty weights: hip roll and waist yaw drift most without it
        w = {"hip_pitch": 0.1, "hip_roll": 1.0, "knee": 0.05, "ankle_pitch": 0.1, "foot_roll": 0.5, "waist_yaw": 1.0}
        # AMP: the discriminator does not see a waist the clips hold still: a heavier pose weight holds it instead
        w["waist_yaw"] = args.waist_weight if args.amp_weight > 0 else w["waist_yaw"]
        self.pose_weights = jp.array([next(v for k, v in w.items() if n.endswith(k)) for n in self.joint_names])
        # the data every reset starts from (forward kinematics of `home` done once, here)
        data = mjx.put_data(m, mujoco.MjData(m), device, impl="jax").replace(qpos=self.home_qpos)
        self.init_data = jax.jit(mjx.forward)(self.model, data)  # jitted: ~5x faster than eager on a CPU
        # AMP: reference state initialization: the clip frames (pelvis over home's xy) with their sites and sensors,
        # clip command and gait clock (reset then needs no forward pass)
        self.reference_data = None
        if args.amp_weight > 0 and args.reference_init > 0:
            motions = load_motions(args.motion_file)
            states, command, phase = reference_states(m, motions, np.asarray(self.default_pose), GAIT_FREQUENCY)
            self.reference_command, self.reference_phase = jp.asarray(command, jp.float32), jp.asarray(phase)
            shape = lambda k: (len(phase), *getattr(self.init_data, k).shape)  # noqa: E731  MJX: site_xmat (3, 3)
            self.reference_data = {k: jp.asarray(v).reshape(shape(k)) for k, v in states.items()}

    # --- randomization -------------------------------------------------------------------------------------------
    def sample_randomization(self, rng) -> Randomization:
        """Nominal values times (or plus, for offsets) a uniform draw from RANDOMIZATION, one per episode."""
        m = self.mj_model
        nominal = Randomization(
            jp.float32(NOMINAL_FRICTION), jp.ones(m.nbody), jp.float32(0.0), jp.asarray(m.dof_frictionloss),
            jp.asarray(m.dof_armature), jp.asarray(m.dof_damping), jp.asarray(m.actuator_gainprm[:, 0]),
            jp.asarray(m.actuator_forcerange[:, 1]), jp.zeros(m.nu), jp.bool_(True))  # fmt: skip
        # the ground is the task, not a physics error: drawn with domain randomization on or off
        k_rough, rng = jax.random.split(rng)
        if self.hfield is not None and self.plane is not None:
            nominal = nominal.replace(rough=jax.random.uniform(k_rough) < self.args.rough_share)
        if not self.args.domain_randomization:
            return nominal
        keys = dict(zip(RANDOMIZATION, jax.random.split(rng, len(RANDOMIZATION))))
        draw = {k: jax.random.uniform(keys[k], getattr(nominal, k).shape, minval=lo, maxval=hi)
                for k, (lo, hi, _) in RANDOMIZATION.items()}  # fmt: skip
        return nominal.replace(**{k: draw[k] if mode == "set" else getattr(nominal, k) * draw[k] if mode == "scale"
                                  else getattr(nominal, k) + draw[k] for k, (_, _, mode) in RANDOMIZATION.items()})

    def randomized_model(self, r: Randomization) -> mjx.Model:
        mass = self.model.body_mass * r.mass_scale
        mass = mass.at[self.torso].add(r.torso_mass)
        inertia = self.model.body_inertia * (mass / jp.maximum(self.model.body_mass, 1e-9))[:, None]
        return self.model.replace(
            geom_friction=self.model.geom_friction.at[:, 0].set(r.friction),
            body_mass=mass, body_inertia=inertia,
            dof_frictionloss=r.frictionloss, dof_armature=r.armature, dof_damping=r.damping,
            actuator_gainprm=self.model.actuator_gainprm.at[:, 0].set(r.kp),
            actuator_biasprm=self.model.actuator_biasprm.at[:, 1].set(-r.kp),
            actuator_forcerange=jp.stack([-r.force_limit, r.force_limit], axis=-1),
            geom_pos=self.ground_pos(r),
        )  # fmt: skip

    # --- the ground: on a scene with both, the floor or the heightfield is sunk by SUNK each episode -----------------
    def ground_pos(self, r: Randomization) -> jax.Array:  # geom_pos (ngeom, 3)
        if self.plane is None or self.hfield is None:
            return self.model.geom_pos
        return self.model.geom_pos.at[self.plane, 2].add(-SUNK * r.rough).at[self.hfield, 2].add(-SUNK * ~r.rough)

    def ground_height(self, r: Randomization, xy: jax.Array) -> jax.Array:
        """Height (...,) of the ground under points xy (..., 2) this episode: the higher of floor and heightfield."""
        pos = self.ground_pos(r)
        height = jp.full(xy.shape[:-1], -1.0 if self.plane is None else pos[self.plane, 2])
        if self.hfield is not None:  # (the field's geom is not rotated in the scenes)
            local = xy - pos[self.hfield, :2]
            field = pos[self.hfield, 2] + terrain.heightfield_surface(self.hfield_data, self.hfield_size, local)
            inside = (jp.abs(local) <= self.hfield_size[:2]).all(-1)  # beyond its edge: nothing (1 m down)
            height = jp.maximum(height, jp.where(inside, field, -1.0))
        return height

    def feet_height(self, data, r: Randomization) -> jax.Array:
        """(2,) height of the foot sites above the ground under them."""
        feet = data.site_xpos[self.feet]
        return feet[:, 2] - self.ground_height(r, feet[:, :2])

    def sole_height(self, data, r: Randomization) -> jax.Array:  # AMP: what the swing apex measures
        """(2,) height of each sole's lowest corner above the ground under it (compare_gaits' clearance)"""
        low = data.geom_xpos[self.soles, 2] - jp.sum(jp.abs(data.geom_xmat[self.soles, 2]) * self.sole_size, -1)
        return low - self.ground_height(r, data.geom_xpos[self.soles, :2])

    # --- reset / step --------------------------------------------------------------------------------------------
    def sample_command(self, rng):
        k1, k2 = jax.random.split(rng)
        lo, hi = COMMAND_RANGE[:, 0], COMMAND_RANGE[:, 1]
        cmd = jax.random.uniform(k1, (3,), minval=lo, maxval=hi)
        cmd = jp.where(jp.abs(cmd) < 0.05, 0.0, cmd)  # tiny commands are noise: make them exactly zero
        return jp.where(jax.random.uniform(k2) < 0.1, jp.zeros(3), cmd)

    def reset(self, rng) -> EnvState:
        """A fresh episode at `home` (+ small joint noise). Positions only: obs read the init data's sensors."""
        rng, k_q, k_v, k_cmd, k_rand, k_lat, k_push = jax.random.split(rng, 7)
        qpos = self.home_qpos.at[7:].add(jax.random.uniform(k_q, (11,), minval=-0.05, maxval=0.05))
        qvel = jax.random.uniform(k_v, (self.mj_model.nv,), minval=-0.05, maxval=0.05)
        # no forward pass here: the first obs reads gravity/gyro of `home`, stale by the noise only (saves one
        # forward per env per step inside the auto-reset, where both branches are computed)
        data = self.init_data.replace(qpos=qpos, qvel=qvel, ctrl=self.default_pose)
        info = EnvInfo(
            rng=rng, command=self.sample_command(k_cmd), last_action=jp.zeros(11),
            latency=self.args.action_latency & (jax.random.uniform(k_lat) < 0.5),
            phase=jp.float32(0.0), feet_air_time=jp.zeros(2), last_contact=jp.ones(2, bool), step=jp.int32(0),
            push_countdown=jax.random.randint(k_push, (), 100, 250), push_left=jp.int32(0), push_force=jp.zeros(3),
            episode_return=jp.float32(0.0), rand=self.sample_randomization(k_rand), swing_peak=jp.zeros(2),  # AMP: apex
            vel_avg=jp.zeros(2),  # AMP: --track-seconds
        )  # fmt: skip
        # AMP: reference state initialization: a share of episodes starts from a random frame, its clip's command
        if self.reference_data is not None:
            k_ref, k_frame = jax.random.split(jax.random.fold_in(rng, 0xA4))  # PPO's splits stay as in ppo_mjx.py
            frame = jax.random.randint(k_frame, (), 0, len(self.reference_command))
            from_ref = jax.random.uniform(k_ref) < self.args.reference_init
            data = data.replace(**{k: jp.where(from_ref, v[frame], getattr(data, k))
                                   for k, v in self.reference_data.items()})  # fmt: skip
            info = info.replace(command=jp.where(from_ref, self.reference_command[frame], info.command),
                                phase=jp.where(from_ref, self.reference_phase[frame], info.phase))  # its frame's clock
        obs, critic_obs = self.observe(data, info, jp.ones(2, bool), jax.random.fold_in(rng, 1))
        zero = jp.float32(0.0)
        metrics = {f"reward/{k}": zero for k in REWARD_SCALES} | dict(nan_reset=zero, episode_return=zero,
                                                                       episode_length=zero)  # fmt: skip
        return EnvState(data, obs, critic_obs, zero, jp.bool_(False), jp.bool_(False), critic_obs,  # AMP: qpos, qvel
                        jp.concatenate([data.qpos, data.qvel]), info, metrics)  # fmt: skip

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        info = state.info
        rng, k_push, k_gap, k_cmd, k_noise, k_reset = jax.random.split(info.rng, 6)
        action = jp.clip(action, -1.0, 1.0)
        applied = jp.where(info.latency, info.last_action, action)  # 0-1 step action latency
        target = self.default_pose + info.rand.pose_offset + self.args.action_scale * applied
        data = state.data.replace(ctrl=jp.clip(target, self.ctrl_range[:, 0], self.ctrl_range[:, 1]))
        # push: a horizontal force on the pelvis, 0-push_newtons N in a random direction, for 3-10 control steps
        # (0.06-0.2 s; the evaluation's push is 10 N for 0.2 s), every 100-250 steps (2-5 s)
        k_dir, k_size, k_len = jax.random.split(k_push, 3)
        angle, new_push = jax.random.uniform(k_dir, (), maxval=2 * jp.pi), info.push_countdown <= 0
        size = jax.random.uniform(k_size, (), maxval=self.args.push_newtons)
        force = size * jp.stack([jp.cos(angle), jp.sin(angle), 0.0])
        push_left = jp.where(new_push, jax.random.randint(k_len, (), 3, 11), info.push_left)
        push_force = jp.where(self.args.push & (push_left > 0), jp.where(new_push, force, info.push_force), 0.0)
        if self.args.push:  # else xfrc_applied is the caller's (utils.evaluate applies its own pushes)
            data = data.replace(xfrc_applied=data.xfrc_applied.at[self.pelvis, :3].set(push_force))
        countdown = jp.where(new_push, jax.random.randint(k_gap, (), 100, 250), info.push_countdown - 1)

        model = self.randomized_model(info.rand)
        feet_before = data.site_xpos[self.feet]
        data = jax.lax.fori_loop(0, self.n_substeps, lambda _, d: mjx.step(model, d), data)

        # NaN guard: a non-finite state ends the episode (counted) and never reaches the update
        finite = jp.isfinite(data.qpos).all() & jp.isfinite(data.qvel).all()
        data = jax.tree.map(lambda new, old: jp.where(finite, new, old), data, state.data)

        contact = self.feet_contact(data)
        feet_vel = (data.site_xpos[self.feet] - feet_before) / CTRL_DT  # (2, 3)
        first_contact = contact & ~info.last_contact
        air_time = info.feet_air_time + CTRL_DT
        rate = gait_frequency(info.command[0], self.args.gait_clock)  # Hz
        if self.args.stand_clock == "stop":  # AMP: a zero command stops the clock (--stand-clock)
            rate = rate * (jp.linalg.norm(info.command) > 0.05)
        phase = jp.mod(info.phase + 2 * jp.pi * rate * CTRL_DT, 2 * jp.pi)
        upright = -self.gravity(data)[2]
        fallen = (data.qpos[2] < FALL_HEIGHT) | (upright < 0.5)
        terminated = fallen | ~finite
        vel, tau = data.sensordata[self.linvel_adr : self.linvel_adr + 2], max(self.args.track_seconds, CTRL_DT)  # AMP:
        info = info.replace(vel_avg=vel + (1 - CTRL_DT / tau) * (info.vel_avg - vel))  # low-passed: exact at tau = dt
        terms = self.reward_terms(data, info, action, contact, first_contact, air_time, feet_vel, phase, fallen)
        terms = {k: v * self.reward_scales[k] for k, v in terms.items()}
        reward = jp.where(finite, CTRL_DT * sum(terms.values()), 0.0)

        step = info.step + 1
        truncated = (step >= self.episode_steps) & ~terminated
        done = terminated | truncated
        new_cmd = jp.mod(step, round(COMMAND_SECONDS / CTRL_DT)) == 0
        info = info.replace(
            rng=rng, command=jp.where(new_cmd, self.sample_command(k_cmd), info.command), last_action=action,
            phase=phase, feet_air_time=jp.where(contact, 0.0, air_time), last_contact=contact, step=step,
            swing_peak=jp.where(contact, 0.0, jp.maximum(info.swing_peak, self.sole_height(data, info.rand))),  # AMP:
            push_countdown=countdown, push_left=jp.maximum(push_left - 1, 0), push_force=push_force,
            episode_return=info.episode_return + reward,
        )  # fmt: skip
        obs, critic_obs = jax.tree.map(lambda x: jp.where(finite, x, 0.0), self.observe(data, info, contact, k_noise))
        terms = jax.tree.map(lambda x: jp.where(finite, x, 0.0), terms)
        metrics = {f"reward/{k}": v for k, v in terms.items()} | dict(
            nan_reset=(~finite).astype(jp.float32),
            episode_return=info.episode_return, episode_length=step.astype(jp.float32))  # fmt: skip
        amp_reached = jp.concatenate([data.qpos, data.qvel])  # AMP: survive the auto-reset, like the critic obs
        stepped = EnvState(data, obs, critic_obs, reward, done, truncated, critic_obs, amp_reached, info, metrics)
        # auto-reset: a done env continues from a fresh episode; the reached critic obs stays for the bootstrap
        fresh = self.reset(k_reset)
        after = jax.tree.map(lambda a, b: jp.where(done, a, b), fresh, stepped)
        return after.replace(reward=reward, done=done, truncated=truncated, reached_critic_obs=critic_obs,
                             reached_qpos_qvel=amp_reached, metrics=metrics)  # AMP: the reached qpos and qvel too

    # --- observation / reward ------------------------------------------------------------------------------------
    def gravity(self, data) -> jax.Array:
        """Gravity direction in the IMU frame (3,): (0, 0, -1) when upright."""
        return -data.site_xmat[self.imu][2]

    # AMP: the one feature path for policy states (the clips go through amp_features too); feet by fresh kinematics
    # (site_xpos lags qpos by a substep, or is home's after a reset), in the training loop: env.step stays ppo_mjx.py's
    def amp_observation(self, qpos, qvel) -> jax.Array:  # (nq,), (nv,) -> (D,)
        data = mjx.kinematics(self.model, self.init_data.replace(qpos=qpos, qvel=qvel))
        return amp_features(qpos, qvel, data.site_xpos[self.feet])

    def feet_contact(self, data) -> jax.Array:
        """(2,) bool: a sole touches the ground. MJX keeps a fixed contact list; unused slots have dist > 0."""
        c = data._impl.contact
        touching = c.dist < CONTACT_DIST
        return jp.array([jp.any(touching & ((c.geom1 == g) | (c.geom2 == g))) for g in self.soles])

    def observe(self, data, info: EnvInfo, contact, rng):
        """Actor obs (O,) with noise and the clean critic obs (C,) with privileged terms."""
        gyro = data.sensordata[self.gyro_adr : self.gyro_adr + 3]
        joint_pos = data.qpos[7:] - self.default_pose
        parts = dict(gravity=self.gravity(data), gyro=gyro, joint_pos=joint_pos, joint_vel=data.qvel[6:])
        noisy = dict(parts)
        if self.args.obs_noise:
            for i, (k, v) in enumerate(parts.items()):
                noisy[k] = v + NOISE[k] * jax.random.uniform(jax.random.fold_in(rng, i), v.shape, minval=-1, maxval=1)

        def actor(p):  # gravity (IMU frame), gyro, command, joint pos - default, joint vel / 10, last action, clock
            p = p | dict(command=info.command, joint_vel=p["joint_vel"] * 0.1, last_action=info.last_action,
                         phase=jp.stack([jp.cos(info.phase), jp.sin(info.phase)]))  # fmt: skip
            return jp.hstack([p[k] for k in OBS_LAYOUT])

        critic = dict(
            actor=actor(parts),  # clean
            linvel=data.sensordata[self.linvel_adr : self.linvel_adr + 3],  # local linear velocity
            height=data.qpos[2:3],  # pelvis height
            contact=contact.astype(jp.float32),
            feet_height=self.feet_height(data, info.rand),  # above the ground under them
            torque=data.actuator_force / 4.0,
            push=info.push_force / 10.0,  # the push acting now
        )
        return actor(noisy), jp.hstack([critic[k] for k in CRITIC_LAYOUT])

    def reward_terms(self, data, info, action, contact, first_contact, air_time, feet_vel, phase, fallen) -> dict:
        cmd = info.command
        linvel = data.sensordata[self.linvel_adr : self.linvel_adr + 3]
        angvel = data.qvel[3:6]  # pelvis angular velocity, pelvis frame
        moving = jp.linalg.norm(cmd) > 0.05
        # gait clock: left foot swings in the first half of the cycle, right in the second; both down when standing
        swing = jp.array([jp.sin(phase), -jp.sin(phase)])
        feet_target = SWING_HEIGHT * jp.clip(swing, 0.0, 1.0) * moving
        deviation = data.qpos[7:] - self.default_pose
        return dict(
            tracking_lin_vel=jp.exp(-jp.sum((cmd[:2] - info.vel_avg) ** 2) / 0.05),  # AMP: low-passed (--track-seconds)
            tracking_ang_vel=jp.exp(-((cmd[2] - angvel[2]) ** 2) / 0.1),
            lin_vel_z=linvel[2] ** 2,
            ang_vel_xy=jp.sum(angvel[:2] ** 2),
            orientation=jp.sum(self.gravity(data)[:2] ** 2),
            torques=jp.sum(data.actuator_force**2),
            action_rate=jp.sum((action - info.last_action) ** 2),
            feet_air_time=jp.sum((air_time - 0.2) * first_contact) * moving,
            feet_slip=jp.sum(jp.sum(feet_vel[:, :2] ** 2, axis=-1) * contact),
            feet_phase=jp.exp(-jp.sum((self.feet_height(data, info.rand) - feet_target) ** 2) / 0.001),
            feet_height=jp.sum((jp.minimum(info.swing_peak / SWING_HEIGHT, 1) - 0.5) * first_contact) * moving,  # AMP:
            pose=jp.sum(self.pose_weights * deviation**2),
            stand_still=jp.sum(jp.abs(deviation)) * ~moving,
            stand_motion=jp.sum(jp.abs(data.qvel[6:])) * ~moving,  # AMP: joint speeds
            alive=(~fallen).astype(jp.float32),
            termination=fallen.astype(jp.float32),
        )


# ---------------------------------------------------------------------------------------------------------------------
# ALGO LOGIC: networks, containers, GAE, PPO loss, observation normalizer
# ---------------------------------------------------------------------------------------------------------------------
AXIS = "envs"  # the device mesh's one axis: each device steps, and computes gradients on, its own slice of the envs


def moments(x, axis_name=None):
    """Mean and variance over axis 0; with axis_name (inside shard_map), pooled exactly over all devices' slices."""
    mean, var = x.mean(0), x.var(0)
    if axis_name is None:
        return mean, var
    pooled = jax.lax.pmean(mean, axis_name)  # the slices are equally large
    return pooled, jax.lax.pmean(var + (mean - pooled) ** 2, axis_name)


def own_rows(x):  # (N, ...) drawn alike on every device -> this device's slice (N / devices, ...)
    n = x.shape[0] // jax.lax.axis_size(AXIS)
    return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(AXIS) * n, n)


def own_key(key):  # this device's own stream of a key (shuffles and draws among its own envs' rows)
    return jax.random.fold_in(key, jax.lax.axis_index(AXIS))


def dense(features, scale):
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale), bias_init=nn.initializers.zeros)


def mlp(x, hidden, activation):  # hidden layers, called inside a compact module (params Dense_0, Dense_1, ...)
    for h in hidden:
        x = activation(dense(h, math.sqrt(2))(x))
    return x


class Actor(nn.Module):
    action_size: int
    min_std: float
    init_std: float = 0.5
    hidden: tuple = (256, 128, 128)

    @nn.compact
    def __call__(self, obs):  # (..., O) normalized
        x = mlp(obs, self.hidden, nn.swish)  # hidden layers first: they are Dense_0.. in the checkpoints
        mean = dense(self.action_size, 0.01)(x)  # (..., A)
        log_std = self.param("log_std", nn.initializers.constant(math.log(self.init_std)), (self.action_size,))
        std = jp.maximum(jp.exp(log_std), self.min_std)  # floored: exploration never collapses
        return mean, jp.broadcast_to(std, mean.shape)


class Critic(nn.Module):
    hidden: tuple = (256, 256, 128)

    @nn.compact
    def __call__(self, critic_obs):  # (..., C) normalized
        x = mlp(critic_obs, self.hidden, nn.swish)
        return dense(1, 1.0)(x)[..., 0]  # (...,)


@struct.dataclass
class Normalizer:
    """Running mean/variance (parallel Welford), applied inside jit."""

    mean: jax.Array  # (D,)
    var: jax.Array  # (D,)
    count: jax.Array  # ()

    @classmethod
    def create(cls, size):
        return cls(jp.zeros(size), jp.ones(size), jp.float32(1e-4))

    def update(self, x, axis_name=None):  # x (..., D); with axis_name, the statistics of all devices' x together
        x = x.reshape(-1, x.shape[-1])
        b_mean, b_var = moments(x, axis_name)
        b_count = x.shape[0] * (1 if axis_name is None else jax.lax.axis_size(axis_name))
        delta = b_mean - self.mean
        total = self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        return Normalizer(mean, m2 / total, total)

    def __call__(self, x):
        return jp.clip((x - self.mean) / jp.sqrt(self.var + 1e-8), -10.0, 10.0)


def gaussian_log_prob(mean, std, x):  # (..., A) -> (...,)
    return jp.sum(-0.5 * ((x - mean) / std) ** 2 - jp.log(std) - 0.5 * jp.log(2 * jp.pi), axis=-1)


def gaussian_entropy(std):  # (..., A) -> (...,)
    return jp.sum(0.5 + 0.5 * jp.log(2 * jp.pi) + jp.log(std), axis=-1)


class Transition(NamedTuple):
    obs: jax.Array  # (T, N, O)
    critic_obs: jax.Array  # (T, N, C)
    action: jax.Array  # (T, N, A)
    log_prob: jax.Array  # (T, N)
    value: jax.Array  # (T, N)
    next_value: jax.Array  # (T, N)  V of the state reached, before any reset (bootstraps truncation)
    reward: jax.Array  # (T, N)
    terminated: jax.Array  # (T, N)
    done: jax.Array  # (T, N)  terminated or truncated


@struct.dataclass
class RunnerState:
    params: dict  # {"actor": ..., "critic": ...}
    opt_state: optax.OptState
    obs_norm: Normalizer  # (O,)
    critic_norm: Normalizer  # (C,)
    env_state: EnvState  # batched (N, ...)
    rng: jax.Array  # (2,)
    iteration: jax.Array  # ()  completed iterations
    # AMP: discriminator, its optimizer, feature normalizer, replay of policy pairs, its own RNG stream
    disc_params: dict
    disc_opt_state: optax.OptState
    amp_norm: Normalizer  # (D,)
    replay: jax.Array  # (R, kD)  a ring
    replay_next: jax.Array  # ()  the slot the next pair goes to
    replay_stored: jax.Array  # ()  filled slots (saturates at R)
    amp_rng: jax.Array  # (2,)  separate, so --amp-weight 0 consumes PPO's stream exactly like ppo_mjx.py
    amp_hist: jax.Array  # (N, k - 2, D)  each env's states before its current one, for --disc-history k (2: none)


def state_specs(rs: RunnerState) -> RunnerState:  # how the runner state lies on the mesh
    """The env state is split over the devices along its env axis; everything else is replicated on each."""
    specs = jax.tree.map(lambda _: P(), rs).replace(env_state=jax.tree.map(lambda _: P(AXIS), rs.env_state))
    return specs.replace(replay=P(AXIS), amp_hist=P(AXIS))  # AMP: each device keeps its own envs' pairs, history


def compute_gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """Generalized advantage estimation with bootstrap on truncation.

    All inputs are [T, N]. `next_values[t]` is V(s_{t+1}) of the state the env reached at step t, before any
    auto-reset, so a truncated step bootstraps from it while a terminated step does not (`terminated` = 1). `dones`
    (terminated or truncated) cuts the recursion at episode ends. Returns (advantages, returns), both [T, N].
    """

    def backward(gae, t):
        reward, value, next_value, term, done = t
        delta = reward + gamma * next_value * (1.0 - term) - value
        gae = delta + gamma * gae_lambda * (1.0 - done) * gae
        return gae, gae

    inputs = (rewards, values, next_values, terminated.astype(jp.float32), dones.astype(jp.float32))
    _, advantages = jax.lax.scan(backward, jp.zeros_like(rewards[0]), inputs, reverse=True)
    return advantages, advantages + values


def ppo_loss(new_log_prob, entropy, new_value, mb, clip_coef, clip_vloss, ent_coef, vf_coef, norm_adv, axis_name=None):
    """Clipped PPO objective on one minibatch; all inputs are [M] (mb: old log_prob, value, advantages, returns).

    Returns (loss, metrics) with CleanRL's metric names. With axis_name, advantages are normalized over the minibatch
    of all devices together.
    """
    log_ratio = new_log_prob - mb["log_prob"]
    ratio = jp.exp(log_ratio)
    adv = mb["advantages"]
    if norm_adv:
        adv_mean, adv_var = moments(adv, axis_name)
        adv = (adv - adv_mean) / (jp.sqrt(adv_var) + 1e-8)
    pg_loss = jp.maximum(-adv * ratio, -adv * jp.clip(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    v_unclipped = (new_value - mb["returns"]) ** 2
    if clip_vloss:
        v_clipped = mb["value"] + jp.clip(new_value - mb["value"], -clip_coef, clip_coef)
        v_loss = 0.5 * jp.maximum(v_unclipped, (v_clipped - mb["returns"]) ** 2).mean()
    else:
        v_loss = 0.5 * v_unclipped.mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + vf_coef * v_loss
    approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance estimator (http://joschu.net/blog/kl-approx.html)
    metrics = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy_loss, approx_kl=approx_kl,
                   clipfrac=(jp.abs(ratio - 1) > clip_coef).mean())  # fmt: skip
    return loss, metrics


def explained_variance(values, returns, axis_name=None):
    var = moments(returns.ravel(), axis_name)[1]
    return jp.where(var == 0, jp.nan, 1 - moments((returns - values).ravel(), axis_name)[1] / var)


# AMP: features, discriminator, its loss and the style reward
def amp_features(qpos, qvel, feet_pos):
    """AMP features of states (…, 18), (…, 17), feet sites (…, 2, 3) -> (…, D = 41). Used for BOTH reference and policy.

    Root height (1), root orientation as the tangent and normal columns of its rotation (6), root linear and angular
    velocity in the heading frame (3 + 3), joint positions (11) and velocities (11), feet relative to the root in the
    heading frame (6). The heading frame (yaw only) makes the features invariant to where the robot faces.
    """
    rot = Rotation.from_quat(jp.roll(qpos[..., 3:7], -1, -1)).as_matrix()  # (…, 3, 3) root to world (wxyz -> xyzw)
    yaw = jp.arctan2(rot[..., 1, 0], rot[..., 0, 0])
    c, s = jp.cos(yaw), jp.sin(yaw)
    zero, one = jp.zeros_like(c), jp.ones_like(c)
    heading = jp.stack([jp.stack([c, s, zero], -1), jp.stack([-s, c, zero], -1), jp.stack([zero, zero, one], -1)], -2)
    rot = jp.einsum("...ij,...jk->...ik", heading, rot)  # root to heading frame: no yaw left in the features
    to_heading = lambda v: jp.einsum("...ij,...j->...i", heading, v)  # world -> heading frame  # noqa: E731
    ang_heading = jp.einsum("...ij,...j->...i", rot, qvel[..., 3:6])  # free-joint angular velocity: body frame
    feet = jp.einsum("...ij,...kj->...ki", heading, feet_pos - qpos[..., None, :3])  # (…, 2, 3)
    return jp.concatenate([
        qpos[..., 2:3],  # 1
        rot[..., :, 0], rot[..., :, 2],  # 6 tangent, normal (heading frame)
        to_heading(qvel[..., :3]), ang_heading,  # 3 + 3
        qpos[..., 7:], qvel[..., 6:],  # 11 + 11
        feet.reshape(feet.shape[:-2] + (6,)),  # 6
    ], -1)  # fmt: skip


AMP_FEATURE_NAMES = ("root_z", *(f"{a}_{c}" for a in ("tangent", "normal", "lin_vel", "ang_vel") for c in "xyz"),
                     *(f"{j}_pos" for j in JOINT_NAMES), *(f"{j}_vel" for j in JOINT_NAMES),
                     *(f"{side}_foot_{c}" for side in ("left", "right") for c in "xyz"))  # fmt: skip


def disc_input_weights(args: Args, ref_frames) -> np.ndarray:  # (P, D) reference features -> (D,)
    """Each feature's input scale: 0 (hidden) if constant in the clips (it only tells kinematics from physics), else
    its --disc-feature-weights weight, 1 if not named: where the discriminator looks and the style reward pulls."""
    w = ((np.asarray(ref_frames).std(0) > args.feature_min_std) | (args.feature_min_std == 0)).astype(np.float32)
    named = name_values(args.disc_feature_weights, AMP_FEATURE_NAMES, "--disc-feature-weights", positive=True)
    w[[AMP_FEATURE_NAMES.index(name) for name in named]] *= list(named.values())
    return w


class Discriminator(nn.Module):
    hidden: tuple = (512, 256)

    @nn.compact
    def __call__(self, pairs):  # (..., kD) normalized windows ((s, s') at k = 2) -> logits (...,)
        return nn.Dense(1, name="logit")(mlp(pairs, self.hidden, nn.relu))[..., 0]


def gradient_penalty(disc_fn, x):
    """mean ||∂D/∂x||² over samples x [M, F]; disc_fn maps one sample (F,) to a scalar logit."""
    grads = jax.vmap(jax.grad(disc_fn))(x)  # (M, F)
    return jp.mean(jp.sum(grads**2, axis=-1))


def ring_insert(buffer, next_slot, stored, rows):  # AMP: the replay buffer
    """Rows (K, ...) into the ring (R, ...) from next_slot on, wrapping -> the ring, next slot, filled count (≤ R)."""
    size, k = buffer.shape[0], rows.shape[0]
    buffer = buffer.at[(next_slot + jp.arange(k)) % size].set(rows)
    return buffer, (next_slot + k) % size, jp.minimum(stored + k, size)


def discriminator_loss(params, disc_apply, ref, pol, loss_type, grad_penalty, logit_reg, weight_decay):
    """Discriminator objective on normalized pairs ref, pol [M, kD]. Returns (loss, metrics named amp/...)."""
    d_ref, d_pol = disc_apply(params, ref), disc_apply(params, pol)  # (M,), (M,)
    if loss_type == "lsgan":  # least squares towards +1 (reference) and -1 (policy)
        main = 0.5 * (jp.mean((d_ref - 1) ** 2) + jp.mean((d_pol + 1) ** 2))
    else:  # binary cross-entropy with logits: -log σ(d_ref) - log(1 - σ(d_pol))
        main = jp.mean(jax.nn.softplus(-d_ref)) + jp.mean(jax.nn.softplus(d_pol))
    gp = gradient_penalty(lambda x: disc_apply(params, x), ref)
    l2 = sum(jp.sum(w**2) for path, w in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path[-1]))
    loss = main + 0.5 * grad_penalty * gp + logit_reg * jp.sum(params["logit"]["kernel"] ** 2) + weight_decay * l2
    accuracy = 0.5 * (jp.mean(d_ref > 0) + jp.mean(d_pol < 0))
    return loss, {"amp/disc_loss": main, "amp/grad_penalty": gp, "amp/expert_logit": d_ref.mean(),
                  "amp/policy_logit": d_pol.mean(), "amp/disc_accuracy": accuracy}  # fmt: skip


def style_reward(logits, loss_type="lsgan"):
    """Style reward per pair from discriminator logits: LSGAN max(0, 1 - 0.25 (d - 1)²), BCE -log(1 - σ(d))."""
    lsgan = jp.maximum(0.0, 1.0 - 0.25 * (logits - 1.0) ** 2)
    return lsgan if loss_type == "lsgan" else -jp.log(jp.maximum(1.0 - jax.nn.sigmoid(logits), 1e-4))


def reference_pairs(env, motions, k=2) -> np.ndarray:
    """Windows of k consecutive frames inside each clip [P, kD], (s, s') pairs at k = 2; feet by MuJoCo kinematics."""
    feet = feet_kinematics(env.mj_model, motions.qpos)[0]  # (T, 2, 3) the same foot sites as env.feet
    feats = np.asarray(amp_features(jp.asarray(motions.qpos), jp.asarray(motions.qvel), jp.asarray(feet)))
    idx = np.concatenate([np.arange(s, s + n - k + 1) for s, n in zip(motions.clip_starts, motions.clip_lengths)])
    return np.concatenate([feats[idx + i] for i in range(k)], axis=-1).astype(np.float32)


def push_history(hist, s, s_next, fresh):  # (N, k - 2, D), (N, D), (N, D), (N,) -> (N, kD), (N, k - 2, D)
    """The policy's window (the k - 2 states before s, s, s') and the next history; a new episode repeats its s."""
    hist = jp.where(fresh[:, None, None], s[:, None], hist)
    return jp.concatenate([hist.reshape(len(s), -1), s, s_next], -1), jp.concatenate([hist, s[:, None]], 1)[:, 1:]


def normalize_pairs(norm, pairs):  # (..., kD): every frame with the same feature statistics
    frames = pairs.reshape(pairs.shape[:-1] + (-1, norm.mean.shape[-1]))  # (..., k, D)
    return norm(frames).reshape(pairs.shape)


# ---------------------------------------------------------------------------------------------------------------------
# TRY NOT TO MODIFY: checkpoints (the file format, logging sinks and the rest of a run's plumbing: utils/runs.py)
# ---------------------------------------------------------------------------------------------------------------------
ALGO = "amp"  # AMP: checkpoints say which file trains them


def env_leaves(rs: RunnerState) -> list[bool]:  # which of jax.tree.leaves(rs) are the envs' state
    envs = jax.tree.map(lambda _: True, (rs.env_state, rs.amp_hist))  # AMP: + their feature history
    return jax.tree.leaves(jax.tree.map(lambda _: False, rs).replace(env_state=envs[0], amp_hist=envs[1]))


def write_checkpoint(path: Path, runner_state: RunnerState, args: Args, global_step: int) -> RunnerState:
    """Everything to resume (the runner state; the envs' part unless --no-checkpoint-env-state) plus the policy alone
    for the tools. Every process gathers the devices' slices; process 0 writes. Returns the state on the host."""
    state = multihost_utils.process_allgather(runner_state, tiled=True)
    if jax.process_index() == 0:
        meta = dict(algo=ALGO, args=asdict(args), global_step=global_step, iteration=int(state.iteration),
                    joint_names=list(JOINT_NAMES), env_state=args.checkpoint_env_state, **WildRobotEnv.SIZES)
        policy = {"actor": state.params["actor"], "obs_norm": serialization.to_state_dict(state.obs_norm)}
        leaves = {str(i): np.asarray(x) for i, (x, env) in enumerate(zip(jax.tree.leaves(state), env_leaves(state)))
                  if args.checkpoint_env_state or not env}  # fmt: skip
        runs.write_checkpoint(path, meta, policy, leaves)
    return state


def read_checkpoint(path) -> dict:
    """The checkpoint as nested dicts of numpy arrays; one clear error line if it is not one this file can resume."""
    return runs.read_checkpoint(path, ALGO, WildRobotEnv.SIZES)


def read_policy(path, args: Args) -> tuple[dict, Normalizer]:
    """(actor params, observation normalizer) of any checkpoint's policy entry (a run's or a policy-only file, of
    either training file), checked against this file's Actor; one clear error line if it does not fit."""
    actor, norm = runs.read_policy(path, args.action_scale)
    norm = Normalizer(**{k: jp.asarray(v, jp.float32) for k, v in norm.items()})
    template = jax.eval_shape(Actor(WildRobotEnv.ACTION_SIZE, args.min_std).init, jax.random.PRNGKey(0),
                              jp.zeros(WildRobotEnv.OBS_SIZE))["params"]  # fmt: skip
    shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)  # noqa: E731
    if shapes(actor) != shapes(template) or norm.mean.shape != (WildRobotEnv.OBS_SIZE,):
        fail(f"--init-policy {path}: its actor {shapes(actor)} does not fit this file's {shapes(template)}")
    return jax.tree.map(lambda x: jp.asarray(x, jp.float32), actor), norm


def restore_runner_state(payload: dict, template: RunnerState, path, args=None) -> RunnerState:
    """The saved runner state on the host, shaped like `template`; a checkpoint without the envs' state takes the
    template's envs (fresh episodes)."""
    leaves, treedef = jax.tree.flatten(template)
    return jax.tree.unflatten(treedef, runs.restore_leaves(payload, leaves, env_leaves(template), path, args))


# ---------------------------------------------------------------------------------------------------------------------
# main: build state, one jitted train_iteration, a host loop that logs
# ---------------------------------------------------------------------------------------------------------------------
def make_train(args: Args, env: WildRobotEnv):
    """Returns (init(rng) -> RunnerState, train_iteration(RunnerState) -> (RunnerState, metrics), policy, lr).

    train_iteration is written for one device's slice of the envs (its runner state holds num_envs / num_devices of
    them): main runs it on every device with shard_map; gradients, normalizer statistics and metrics are combined over
    the devices with collectives over AXIS (on one device, they return their input).
    """
    actor, critic = Actor(env.ACTION_SIZE, args.min_std, args.init_std), Critic()
    num_updates = args.num_iterations * args.update_epochs * args.num_minibatches
    lr = optax.linear_schedule(args.learning_rate, 0.0 if args.anneal_lr else args.learning_rate, num_updates)
    optimizer = optax.chain(optax.clip_by_global_norm(args.max_grad_norm), optax.adam(lr, eps=1e-5))
    v_reset, v_step = jax.vmap(env.reset), jax.vmap(env.step)
    # one device's part of the batch: B and M below count the rows of its own envs
    batch_size, minibatch_size = args.batch_size // args.num_devices, args.minibatch_size // args.num_devices
    # AMP: reference pairs (a constant of the compiled iteration), discriminator and its optimizer
    motions = load_motions(args.motion_file)
    ref_pairs = jp.asarray(reference_pairs(env, motions, args.disc_history))  # (P, kD)
    feat_dim = ref_pairs.shape[-1] // args.disc_history
    weights = np.tile(disc_input_weights(args, ref_pairs[:, :feat_dim]), args.disc_history)  # AMP: (kD,) every frame
    if not weights.any():
        fail(f"--motion-file {args.motion_file}: no feature varies by over --feature-min-std {args.feature_min_std:g}")
    seen = weights > 0  # only these reach the discriminator, scaled by their weights
    disc_inputs = lambda norm, pairs: normalize_pairs(norm, pairs)[..., seen] * weights[seen]  # noqa: E731
    disc_apply = lambda p, x: Discriminator().apply({"params": p}, x)  # noqa: E731
    disc_optimizer = optax.adam(args.disc_learning_rate)
    hidden = ", ".join(np.array(AMP_FEATURE_NAMES)[~seen[:feat_dim]]) or "none"
    print(f"reference: {len(motions.clip_names)} clips, {len(ref_pairs)} windows of {args.disc_history} frames; hidden "
          f"from the discriminator (constant in clips): {hidden}")

    def init(rng) -> RunnerState:
        rng, k_actor, k_critic, k_env = jax.random.split(rng, 4)
        params = {"actor": actor.init(k_actor, jp.zeros(env.OBS_SIZE))["params"],
                  "critic": critic.init(k_critic, jp.zeros(env.CRITIC_OBS_SIZE))["params"]}  # fmt: skip
        env_state = v_reset(jax.random.split(k_env, args.num_envs))
        # AMP: discriminator state from a key folded off the seed, leaving PPO's splits untouched
        amp_rng, k_disc = jax.random.split(jax.random.fold_in(rng, 0xA3))
        disc_params = Discriminator().init(k_disc, jp.zeros(int(seen.sum())))["params"]
        return RunnerState(params, optimizer.init(params), Normalizer.create(env.OBS_SIZE),
                           Normalizer.create(env.CRITIC_OBS_SIZE), env_state, rng, jp.int32(0),
                           disc_params, disc_optimizer.init(disc_params), Normalizer.create(feat_dim),  # AMP: + these
                           jp.zeros((args.disc_replay_size, ref_pairs.shape[-1])), jp.int32(0), jp.int32(0), amp_rng,
                           jp.zeros((args.num_envs, args.disc_history - 2, feat_dim)))  # fmt: skip

    def policy(params, obs_norm, obs):  # (..., O) raw -> mean, std (..., A)
        return actor.apply({"params": params["actor"]}, obs_norm(obs))

    def value(params, critic_norm, critic_obs):  # (..., C) raw -> (...,)
        return critic.apply({"params": params["critic"]}, critic_norm(critic_obs))

    def train_iteration(rs: RunnerState):
        def env_step(carry, _):
            env_state, rng, hist = carry  # AMP: + the envs' feature history
            rng, k = jax.random.split(rng)
            mean, std = policy(rs.params, rs.obs_norm, env_state.obs)  # (N, A)
            noise = own_rows(jax.random.normal(k, (args.num_envs, env.ACTION_SIZE)))  # the same on any device count
            action = mean + std * noise
            next_state = v_step(env_state, action)
            tr = Transition(env_state.obs, env_state.critic_obs, action, gaussian_log_prob(mean, std, action),
                            value(rs.params, rs.critic_norm, env_state.critic_obs),
                            value(rs.params, rs.critic_norm, next_state.reached_critic_obs),
                            next_state.reward, next_state.done & ~next_state.truncated, next_state.done)  # fmt: skip
            # AMP: the policy's (s, s') pair of this step, (N, 2D), after the k - 2 states before s (N, kD)
            s = jax.vmap(env.amp_observation)(env_state.data.qpos, env_state.data.qvel)
            s_next = jax.vmap(env.amp_observation)(*jp.split(next_state.reached_qpos_qvel, [env.mj_model.nq], -1))
            pair, hist = push_history(hist, s, s_next, env_state.info.step == 0)
            return (next_state, rng, hist), (tr, next_state.metrics, pair)

        (env_state, rng, amp_hist), (traj, env_metrics, pol_pairs) = jax.lax.scan(  # AMP: + history, pairs (T, N, kD)
            env_step, (rs.env_state, rs.rng, rs.amp_hist), None, args.num_steps)  # fmt: skip
        # AMP: style reward from the discriminator as it was before this iteration's update
        style = style_reward(disc_apply(rs.disc_params, disc_inputs(rs.amp_norm, pol_pairs)), args.disc_loss)
        task_reward = traj.reward  # (T, N)
        style_part = args.amp_weight * CTRL_DT * style if args.amp_weight > 0 else 0.0  # at 0: the task reward exactly
        traj = traj._replace(reward=args.task_weight * task_reward + style_part)
        advantages, returns = compute_gae(traj.reward, traj.value, traj.next_value, traj.terminated, traj.done,
                                          args.gamma, args.gae_lambda)  # fmt: skip
        batch = dict(obs=traj.obs, critic_obs=traj.critic_obs, action=traj.action, log_prob=traj.log_prob,
                     value=traj.value, advantages=advantages, returns=returns)  # fmt: skip
        batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch)  # (B, ...)

        def loss_fn(params, mb):
            mean, std = policy(params, rs.obs_norm, mb["obs"])  # (M, A)
            new_value = value(params, rs.critic_norm, mb["critic_obs"])  # (M,)
            return ppo_loss(gaussian_log_prob(mean, std, mb["action"]), gaussian_entropy(std), new_value, mb,
                            args.clip_coef, args.clip_vloss, args.ent_coef, args.vf_coef, args.norm_adv, AXIS)

        warmup = rs.iteration < args.critic_warmup_iterations  # critic only: the actor's updates are dropped

        def update_minibatch(carry, mb):
            params, opt_state = carry
            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            grads, metrics = jax.lax.pmean((grads, metrics), AXIS)  # every device takes the same step
            updates, opt_state = optimizer.update(grads, opt_state, params)  # Adam's moments see the actor's grads
            updates["actor"] = jax.tree.map(lambda u: jp.where(warmup, 0.0, u), updates["actor"])
            return (optax.apply_updates(params, updates), opt_state), metrics

        def update_epoch(carry, _):
            params, opt_state, rng, stop = carry
            rng, k = jax.random.split(rng)  # each device shuffles its own rows: a minibatch has M / devices of each
            perm = jax.random.permutation(own_key(k), batch_size)
            shuffled = jax.tree.map(lambda x: x[perm.reshape(args.num_minibatches, minibatch_size)], batch)
            (new_params, new_opt), metrics = jax.lax.scan(update_minibatch, (params, opt_state), shuffled)
            # target KL: once exceeded, the remaining epochs leave params untouched (a scan cannot `break`)
            keep = jax.tree.map(lambda new, old: jp.where(stop, old, new), (new_params, new_opt), (params, opt_state))
            metrics = jax.tree.map(lambda x: x.mean(), metrics) | dict(skipped=stop.astype(jp.float32))
            if args.target_kl is not None:
                stop = stop | (metrics["approx_kl"] > args.target_kl)
            return (*keep, rng, stop), metrics

        carry = (rs.params, rs.opt_state, rng, jp.bool_(False))
        (params, opt_state, rng, _), metrics = jax.lax.scan(update_epoch, carry, None, args.update_epochs)
        done_epochs = jp.maximum(args.update_epochs - metrics["skipped"].sum(), 1.0)
        ran = 1 - metrics.pop("skipped")  # (update_epochs,) averages over the epochs that ran, all their minibatches
        metrics = {f"losses/{k}": (v * ran).sum() / done_epochs for k, v in metrics.items()}
        metrics["losses/explained_variance"] = explained_variance(traj.value, returns, AXIS)
        # normalizer statistics move after the update, so rollout and update of one iteration use the same ones
        obs_norm = rs.obs_norm.update(traj.obs, AXIS)
        obs_norm = jax.tree.map(lambda a, b: jp.where(warmup, a, b), rs.obs_norm, obs_norm)
        rs = rs.replace(params=params, opt_state=opt_state, obs_norm=obs_norm,
                        critic_norm=rs.critic_norm.update(traj.critic_obs, AXIS), env_state=env_state, rng=rng,
                        iteration=rs.iteration + 1)  # fmt: skip
        # AMP: discriminator updates: reference vs half current, half replayed policy pairs (per device; grads averaged)
        pol_flat = pol_pairs.reshape(batch_size, -1)  # (B, kD)
        amp_rng, k_norm, k_upd, k_ins = jax.random.split(rs.amp_rng, 4)
        ref_draw = lambda k: ref_pairs[own_rows(jax.random.randint(k, (args.disc_batch_size,), 0, len(ref_pairs)))]  # noqa: E731
        amp_norm = rs.amp_norm.update(jp.concatenate([pol_flat[:, :feat_dim], ref_draw(k_norm)[:, :feat_dim]]), AXIS)
        stored, disc_batch = rs.replay_stored, args.disc_batch_size // args.num_devices

        def update_disc(carry, key):
            disc_params, disc_opt = carry
            k_ref, k_cur, k_rep = jax.random.split(key, 3)
            cur = pol_flat[jax.random.randint(own_key(k_cur), (disc_batch - disc_batch // 2,), 0, batch_size)]
            rep = rs.replay[jax.random.randint(own_key(k_rep), (disc_batch // 2,), 0, jp.maximum(stored, 1))]
            rep = jp.where(stored > 0, rep, cur[: disc_batch // 2])  # an empty replay buffer: current samples only
            pol = jp.concatenate([cur, rep])  # (disc_batch, kD)
            (_, m), grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
                disc_params, disc_apply, disc_inputs(amp_norm, ref_draw(k_ref)), disc_inputs(amp_norm, pol),
                args.disc_loss, args.disc_grad_penalty, args.disc_logit_reg, args.disc_weight_decay)  # fmt: skip
            grads, m = jax.lax.pmean((grads, m), AXIS)
            updates, disc_opt = disc_optimizer.update(grads, disc_opt)
            return (optax.apply_updates(disc_params, updates), disc_opt), m

        (disc_params, disc_opt), disc_metrics = jax.lax.scan(update_disc, (rs.disc_params, rs.disc_opt_state),
                                                             jax.random.split(k_upd, args.disc_updates))  # fmt: skip
        n_insert = min(args.batch_size, args.disc_replay_size, args.disc_replay_insert) // args.num_devices
        new = pol_flat[jax.random.permutation(own_key(k_ins), batch_size)[:n_insert]]
        replay, nxt, stored = ring_insert(rs.replay, rs.replay_next, rs.replay_stored, new)
        rs = rs.replace(disc_params=disc_params, disc_opt_state=disc_opt, amp_norm=amp_norm, replay=replay,
                        replay_next=nxt, replay_stored=stored, amp_rng=amp_rng, amp_hist=amp_hist)  # fmt: skip
        metrics |= {k: v.mean() for k, v in disc_metrics.items()}
        done = traj.done.astype(jp.float32)
        total, mean = (lambda x: jax.lax.psum(x.sum(), AXIS)), (lambda x: jax.lax.pmean(x.mean(), AXIS))  # all envs
        metrics |= {"amp/style_reward": mean(style), "charts/task_reward": mean(task_reward)}  # AMP: the two rewards
        n_done = total(done)
        metrics |= {k: mean(v) for k, v in env_metrics.items() if k.startswith("reward/")}
        metrics |= {"charts/episodic_return": total(env_metrics["episode_return"] * done) / n_done,
                    "charts/episodic_length": total(env_metrics["episode_length"] * done) / n_done,
                    "charts/episodes": n_done, "charts/nan_resets": total(env_metrics["nan_reset"]),
                    "charts/step_reward": mean(traj.reward)}  # fmt: skip
        return rs, metrics

    return init, train_iteration, policy, lr


def main(args: Args):
    # TRY NOT TO MODIFY: run folder, seeding, logging
    lead = jax.process_index() == 0  # with several processes, only process 0 prints, logs and writes
    sys.stdout = sys.stdout if lead else open(os.devnull, "w")
    env = WildRobotEnv(args)
    init, train_iteration, policy, lr = make_train(args, env)
    key, runner_state, global_step = jax.random.PRNGKey(args.seed), None, 0
    # the device mesh: the envs split over num_devices devices (equally many of each process), all else replicated
    mesh, shapes = runs.device_mesh(args.num_devices, AXIS), jax.eval_shape(init, key)  # shapes: traced once
    devices, specs = mesh.devices.ravel(), state_specs(shapes)
    shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
    if args.resume:
        payload = read_checkpoint(args.resume)
        fresh = not payload["meta"].get("env_state", True)  # the envs were left out: new episodes take their place
        template = jax.jit(init)(key) if fresh else shapes
        runner_state = restore_runner_state(payload, template, args.resume, args)
        run_dir, global_step = Path(args.resume).resolve().parent.parent, int(payload["meta"]["global_step"])
        if payload["meta"]["args"].get("num_devices", 1) != args.num_devices:  # AMP: the rings were per device
            runner_state = runner_state.replace(replay_next=np.int32(0), replay_stored=np.int32(0))  # start empty
        print(f"resuming {run_dir.name} at iteration {int(runner_state.iteration)}, step {global_step}")
    else:
        run_dir = Path("runs") / f"{args.exp_name}__{args.seed}__{int(time.time())}"  # CleanRL: under the cwd
    logger = runs.Logger(run_dir, args, resume=bool(args.resume))  # the run folder, args.yaml and the sinks
    print(f"run folder: {run_dir}" + (f" (defaults from {args.config})" if args.config else ""))
    print(f"{args.num_envs} envs × {args.num_steps} steps = batch {args.batch_size}, {args.num_iterations} iterations, "
          f"obs {env.OBS_SIZE}, critic obs {env.CRITIC_OBS_SIZE}, actions {env.ACTION_SIZE}, {env.n_substeps} physics "
          f"steps of {env.mj_model.opt.timestep} s per control step, on {len(devices)} × {devices[0]}")  # fmt: skip

    # ALGO LOGIC: compile once (timed separately), then iterate
    start = time.time()
    runner_state = jax.jit(init, out_shardings=shardings)(key) if runner_state is None else runner_state
    if args.init_policy and not args.resume:  # fine-tuning: the actor and its normalizer from a policy, a new critic
        actor_params, obs_norm = read_policy(args.init_policy, args)
        runner_state = runner_state.replace(params=runner_state.params | {"actor": actor_params}, obs_norm=obs_norm)
        print(f"actor, obs normalizer: {args.init_policy}; critic only for {args.critic_warmup_iterations} iterations")
    runner_state = jax.device_put(runner_state, shardings)  # every array where the mesh wants it
    # train_iteration on each device's envs; check_vma=False: MJX's internal lax.cond fails shard_map's type check
    sharded = jax.shard_map(train_iteration, mesh=mesh, in_specs=(specs,), out_specs=(specs, P()), check_vma=False)
    replicated = NamedSharding(mesh, P())  # out_shardings stated: XLA hands zero-size arrays back replicated otherwise
    step_fn = jax.jit(sharded, out_shardings=(shardings, replicated), donate_argnums=0).lower(runner_state).compile()
    compile_seconds = time.time() - start
    print(f"compiled in {compile_seconds:.1f} s")
    logger.log(global_step, {"charts/compile_seconds": compile_seconds}, csv_row=False)
    first, start, start_step, last_ckpt = int(runner_state.iteration), time.time(), global_step, None
    bar = tqdm(range(first + 1, args.num_iterations + 1), initial=first, total=args.num_iterations, file=sys.stdout)
    for iteration in bar:
        runner_state, metrics = step_fn(runner_state)
        metrics = {k: float(v) for k, v in runs.local_copy(metrics).items()}
        global_step += args.batch_size
        metrics["charts/SPS"] = (global_step - start_step) / (time.time() - start)
        metrics["charts/learning_rate"] = float(lr(iteration * args.update_epochs * args.num_minibatches))
        # every loss is finite before anything is logged or a checkpoint written (explained variance may be NaN)
        if bad := [k for k in LOSSES if not math.isfinite(metrics[k])]:
            logger.close()
            fail(f"non-finite {', '.join(bad)} at iteration {iteration}; last checkpoint: {last_ckpt}", 1)
        logger.log(global_step, metrics)
        if iteration == first + 1:  # the rate measured on the first iteration after the compile
            steps_left = args.total_timesteps - global_step
            if hint := runs.cpu_hint(jax.default_backend(), args.num_envs, metrics["charts/SPS"], steps_left):
                bar.write(hint)
        bar.write(f"it {iteration:5d} | step {global_step:>11,} | SPS {metrics['charts/SPS']:>8,.0f} | "
                  f"return {metrics['charts/episodic_return']:7.3f} | "
                  f"length {metrics['charts/episodic_length']:6.1f} | "
                  f"pg {metrics['losses/policy_loss']:+.4f} | v {metrics['losses/value_loss']:.4f} | "
                  f"ent {metrics['losses/entropy']:.2f} | kl {metrics['losses/approx_kl']:.4f} | "
                  f"disc {metrics['amp/disc_accuracy']:.2f} | style {metrics['amp/style_reward']:.3f}")  # AMP: +2
        if args.save_model and (iteration % args.checkpoint_interval == 0 or iteration == args.num_iterations):
            last_ckpt = run_dir / "checkpoints" / f"ckpt_{iteration:06d}.msgpack"
            written = write_checkpoint(last_ckpt, runner_state, args, global_step)  # (keeps the latest three)
    bar.close()
    if not lead:  # process 0 evaluates and renders
        return runner_state, run_dir
    if args.verify and args.save_model:  # the checkpoint round trip the resume path relies on
        runs.check_round_trip(restore_runner_state(read_checkpoint(last_ckpt), written, last_ckpt), written, last_ckpt)

    params, obs_norm = runs.local_copy((runner_state.params, runner_state.obs_norm))
    eval_rng = jax.random.PRNGKey(args.seed + 1)
    # AMP: evaluation episodes start at `home`, as in ppo_mjx.py
    env = WildRobotEnv(replace(args, reference_init=0.0)) if env.reference_data is not None else env
    linvel = obs_slices(CRITIC_LAYOUT)["linvel"]  # the deterministic policy on fresh episodes (utils/runs.py)
    rollout = runs.make_rollout(env, policy, args.eval_episodes, env.episode_steps, linvel)
    eval_metrics = runs.evaluate(rollout, params, obs_norm, eval_rng)
    logger.log(global_step, eval_metrics, csv_row=False)
    (run_dir / "eval.json").write_text(json.dumps(eval_metrics, indent=2))
    print("eval: " + ", ".join(f"{k} {v:.3f}" for k, v in eval_metrics.items()))
    if args.capture_video:  # rendering is a tool (utils/render.py), headless without a display
        from utils.render import render_qpos, write_frames

        qpos = rollout(params, obs_norm, eval_rng)["qpos"][:, 0]  # (T, nq) the first evaluation episode, no recompile
        path = write_frames(render_qpos(env.mj_model, np.asarray(qpos)), run_dir / "videos" / "final.mp4", 1 / CTRL_DT)
        print(f"video: {path}")
    logger.close()
    return runner_state, run_dir


if __name__ == "__main__":
    main(parse_args())
