"""ppo_amp_mjx.py: one feature function for reference and policy, the discriminator, style reward, runs, bad input."""

import importlib.util
import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jp
import mujoco
import numpy as np
import optax
import pytest
from flax import serialization

import ppo_amp_mjx as amp
import ppo_mjx as ppo
from conftest import PPO_VERIFY_FLAGS, ROOT, assert_resume_matches, run_script
from utils.motions import load_motions
from utils.robot import WALK_MOTIONS


def load(path):
    return serialization.msgpack_restore(path.read_bytes())


@pytest.fixture(scope="module")
def env():  # the defaults but --stand-clock stop and --track-seconds 0.5 (which only their tests below see)
    return amp.WildRobotEnv(amp.Args(stand_clock="stop", track_seconds=0.5))


@pytest.fixture(scope="module")
def step2(env):  # env.step over 2 envs, compiled once for the tests that step
    return jax.jit(jax.vmap(env.step))


def test_reference_features_match_the_env_state_path(env):
    motions = load_motions(WALK_MOTIONS)
    pairs = amp.reference_pairs(env, motions)  # loader path: MuJoCo FK on the clip frames
    clip = motions.clip("forward_0.3")
    frames = np.arange(clip.start, clip.start + 40)

    @jax.jit
    @jax.vmap
    def env_path(qpos, qvel):  # the path the policy's states take: MJX kinematics -> env.amp_observation
        return env.amp_observation(qpos, qvel)

    feats = np.asarray(env_path(jp.asarray(motions.qpos[frames]), jp.asarray(motions.qvel[frames])))
    starts = np.concatenate([np.arange(s, s + n - 1) for s, n in zip(motions.clip_starts, motions.clip_lengths)])
    rows = np.searchsorted(starts, frames)
    d = feats.shape[-1]
    assert d == 41
    np.testing.assert_allclose(feats, pairs[rows, :d], atol=1e-4)
    np.testing.assert_allclose(feats[1:], pairs[rows[:-1], d:], atol=1e-4)  # s' of frame t is frame t+1
    assert pairs[rows, 0].min() > 0.3  # root height in metres: a standing/walking robot
    assert len(amp.AMP_FEATURE_NAMES) == d
    # the generated clips hold the pelvis level at one height and the waist still: hidden from the discriminator
    constant = np.array(amp.AMP_FEATURE_NAMES)[pairs[:, :d].std(0) <= amp.Args().feature_min_std]
    assert set(constant) == {"root_z", "tangent_x", "tangent_y", "tangent_z", "normal_x", "normal_y", "normal_z",
                             "ang_vel_x", "ang_vel_y", "waist_yaw_pos", "waist_yaw_vel"}  # fmt: skip
    # with a style reward the gait-shaping task terms are off; the rest of the task is ppo_mjx.py's
    assert {k for k, v in env.reward_scales.items() if v != amp.REWARD_SCALES[k]} == set(amp.SHAPING_TERMS)
    assert all(env.reward_scales[k] == 0 for k in amp.SHAPING_TERMS)


def test_reference_windows_are_consecutive_frames_inside_clips(env):
    """--disc-history k: the reference samples are k consecutive frames of one clip, never across a clip boundary."""
    motions = load_motions(WALK_MOTIONS)
    pairs, windows = amp.reference_pairs(env, motions), amp.reference_pairs(env, motions, 4)
    d = pairs.shape[-1] // 2
    assert windows.shape == (int(np.sum(motions.clip_lengths - 3)), 4 * d)
    starts = np.concatenate([np.arange(s, s + n - 3) for s, n in zip(motions.clip_starts, motions.clip_lengths)])
    pair_rows = np.concatenate([np.arange(s, s + n - 1) for s, n in zip(motions.clip_starts, motions.clip_lengths)])
    for i in range(3):  # frames 0-2 of every window: the pair table's s of frame start + i; frame 3: s' of start + 2
        rows = np.searchsorted(pair_rows, starts + i)
        assert (pair_rows[rows] == starts + i).all()
        np.testing.assert_array_equal(windows[:, i * d : (i + 1) * d], pairs[rows, :d])
    np.testing.assert_array_equal(windows[:, 3 * d :], pairs[rows, d:])


def test_push_history_hand_worked():
    """k = 4 over 1-feature states: env 0 starts fresh at t = 0, env 1 runs on from an older history, then starts a
    new episode at t = 2. k = 2 is the plain (s, s') pair."""
    hist = jp.array([[[0.0], [0.0]], [[-2.0], [-1.0]]])  # (N = 2, k - 2 = 2, D = 1)
    windows = []
    for t, fresh in enumerate([[True, False], [False, False], [False, True], [False, False]]):
        s = jp.array([[10.0 + t], [20.0 + t]])
        window, hist = amp.push_history(hist, s, s + 0.5, jp.array(fresh))
        windows.append(np.asarray(window))
    np.testing.assert_array_equal(windows[0], [[10, 10, 10, 10.5], [-2, -1, 20, 20.5]])
    np.testing.assert_array_equal(windows[1], [[10, 10, 11, 11.5], [-1, 20, 21, 21.5]])
    np.testing.assert_array_equal(windows[2], [[10, 11, 12, 12.5], [22, 22, 22, 22.5]])  # env 1: a new episode
    np.testing.assert_array_equal(windows[3], [[11, 12, 13, 13.5], [22, 22, 23, 23.5]])
    window, hist = amp.push_history(jp.zeros((2, 0, 1)), jp.ones((2, 1)), 2 * jp.ones((2, 1)), jp.array([True, False]))
    np.testing.assert_array_equal(window, [[1, 2], [1, 2]])
    assert hist.shape == (2, 0, 1)


def test_reference_state_initialization(env):
    motions = load_motions(WALK_MOTIONS)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 256))
    qpos, qvel, command = (np.asarray(x) for x in (states.data.qpos, states.data.qvel, states.info.command))
    # a reference start is a whole clip frame (joints, height, orientation, velocities) over the origin, with the
    # command of a clip holding that frame (the clips' standing starts are the same frames); the others start at home
    # with ±0.05 rad of joint noise
    ref = np.concatenate([motions.qpos[:, 2:], motions.qvel], -1)  # (frames, 33)
    match = np.abs(np.concatenate([qpos[:, 2:], qvel], -1)[:, None] - ref[None]).max(-1) < 1e-5  # (256, frames)
    from_ref = match.any(1)
    assert 0.4 < from_ref.mean() < 0.6  # --reference-init 0.5
    clip_of_frame = np.repeat(np.arange(len(motions.clip_names)), motions.clip_lengths)
    for e in np.flatnonzero(from_ref):
        clips = motions.clip_commands[clip_of_frame[match[e]]]
        assert np.abs(clips - command[e]).max(-1).min() < 1e-6, e
    assert len({tuple(c) for c in command[from_ref]}) > 5
    # and the gait clock of its frame (the frames' clocks: utils.motions.gait_phase), the others at 0
    phase, clocks = np.asarray(states.info.phase), np.asarray(env.reference_phase)
    for e in np.flatnonzero(from_ref):
        assert np.abs(clocks[match[e]] - phase[e]).min() < 1e-6, e
    assert (phase[~from_ref] == 0).all() and np.ptp(phase[from_ref]) > 3
    np.testing.assert_allclose(qpos[:, :2], 0.0, atol=1e-6)
    home = np.asarray(env.home_qpos)
    assert np.abs(qpos[~from_ref, 7:] - home[7:]).max() <= 0.05 + 1e-6
    # no forward pass in reset: a reference start carries its frame's sites and sensors (the first obs and the first
    # step's foot velocities read them), equal to a forward pass of that state
    some = np.flatnonzero(from_ref)[:8]
    data = jax.tree.map(lambda x: x[some], states.data)
    fresh = jax.jit(jax.vmap(lambda d: amp.mjx.forward(env.model, d)))(data)
    for field in ("site_xpos", "site_xmat"):
        np.testing.assert_allclose(getattr(data, field), getattr(fresh, field), atol=2e-4, err_msg=field)
    for adr in (env.gyro_adr, env.linvel_adr):  # the sensors the env reads (the accelerometer depends on the solver)
        np.testing.assert_allclose(data.sensordata[:, adr : adr + 3], fresh.sensordata[:, adr : adr + 3], atol=2e-4)


def test_default_action_scale_reaches_every_shipped_clip(env):
    """The servo target is home + action_scale · a with a in [-1, 1]: at the AMP default every joint position of every
    shipped clip is within reach (at ppo_mjx.py's 0.4 the knee could not follow the clips' swing, up to 0.69 rad past
    home)."""
    home = np.asarray(env.default_pose)
    for path in sorted((ROOT / "assets" / "motions").glob("*.npz")):
        reach = np.abs(np.load(path)["qpos"][:, 7:] - home).max(0)  # per joint, rad from home
        assert reach.max() <= amp.Args().action_scale, (path.name, reach.round(3))
        assert reach.max() > ppo.Args().action_scale, (path.name, reach.round(3))  # ppo_mjx.py's would not reach


def test_shaping_terms_flag_keeps_the_named_task_terms():
    """--shaping-terms keeps the named gait-shaping terms at their scale and only those; without a style reward the
    task is ppo_mjx.py's (this file's own feet_height off)."""
    swing = amp.WildRobotEnv(amp.Args(shaping_terms=("feet_phase",))).reward_scales
    assert {k for k, v in swing.items() if v != amp.REWARD_SCALES[k]} == set(amp.SHAPING_TERMS) - {"feet_phase"}
    assert swing["feet_phase"] == amp.REWARD_SCALES["feet_phase"] > 0
    assert amp.WildRobotEnv(amp.Args(shaping_terms=amp.SHAPING_TERMS)).reward_scales == amp.REWARD_SCALES
    plain = amp.WildRobotEnv(amp.Args(amp_weight=0.0, tilt_rate_weight=3.0)).reward_scales
    assert plain == ppo.REWARD_SCALES | {"feet_height": 0.0, "stand_motion": 0.0}


def test_reward_scales_flag_sets_the_named_terms_last():
    """--reward-scales overrides REWARD_SCALES in both files, after --shaping-terms and --tilt-rate-weight (a term a
    style reward switched off comes back when named), and changes nothing else."""
    plain = ppo.WildRobotEnv(ppo.Args(reward_scales=("feet_air_time=2", "stand_still=0"))).reward_scales
    assert plain == ppo.REWARD_SCALES | {"feet_air_time": 2.0, "stand_still": 0.0}
    base = amp.WildRobotEnv(amp.Args(shaping_terms=("feet_height",), tilt_rate_weight=1.0)).reward_scales
    scales = ("feet_height=30", "feet_phase=0.5", "ang_vel_xy=-2")
    scaled = amp.WildRobotEnv(amp.Args(shaping_terms=("feet_height",), tilt_rate_weight=1.0, reward_scales=scales))
    scaled = scaled.reward_scales
    assert scaled == base | {"feet_height": 30.0, "feet_phase": 0.5, "ang_vel_xy": -2.0} and base["feet_phase"] == 0
    assert amp.parse_args(["--reward-scales", "feet_height=30"]).reward_scales == ("feet_height=30",)


def test_tilt_rate_weight_scales_the_pelvis_rate_penalty_with_a_style_reward():
    steady = amp.WildRobotEnv(amp.Args(tilt_rate_weight=1.0)).reward_scales
    assert steady["ang_vel_xy"] == -1.0 and amp.Args().tilt_rate_weight == -ppo.REWARD_SCALES["ang_vel_xy"]
    assert {k for k, v in steady.items() if v != amp.WildRobotEnv(amp.Args()).reward_scales[k]} == {"ang_vel_xy"}


def test_feet_height_pays_the_swing_apex_at_touchdown_and_stand_motion_the_joint_speeds(env):
    """Hand-worked: apexes of 5 cm (capped at SWING_HEIGHT, 4 cm) and 1 cm landing together pay (1 - 0.5) + (0.25 -
    0.5) = 0.25; a foot that does not land pays nothing, and nothing is paid on a zero command. stand_motion is the
    joints' summed speed, on a zero command only."""
    info = env.reset(jax.random.PRNGKey(0)).info.replace(swing_peak=jp.array([0.05, 0.01]))
    walk, stand = info.replace(command=jp.array([0.3, 0.0, 0.0])), info.replace(command=jp.zeros(3))

    def term(info, first_contact, name="feet_height", data=env.init_data):
        return float(env.reward_terms(data, info, jp.zeros(11), jp.ones(2, bool), jp.array(first_contact),
                                      jp.zeros(2), jp.zeros((2, 3)), jp.float32(0.0), jp.bool_(False))[name])

    assert term(walk, [True, True]) == pytest.approx(0.25, abs=1e-6)
    assert term(walk, [False, True]) == pytest.approx(-0.25, abs=1e-6)
    assert term(stand, [True, True]) == 0.0
    # stand_motion: the joints' speeds, Σ |q̇| = 11 × 0.5 (the free joint's 6 velocities not counted), only standing
    speeds = jp.tile(jp.array([0.5, -0.5]), 6)[:11]
    moving = env.init_data.replace(qvel=env.init_data.qvel.at[:6].set(3.0).at[6:].set(speeds))
    assert term(stand, [False, False], "stand_motion", moving) == pytest.approx(5.5, abs=1e-5)
    assert term(walk, [False, False], "stand_motion", moving) == 0.0 == term(stand, [False, False], "stand_motion")


def test_stand_clock_stops_the_gait_clock_on_a_zero_command_only(env, step2):
    """--stand-clock stop: a stand command leaves the clock where it was, any other advances it as before (run: the
    clock always advances, ppo_mjx.py's rule, tested in test_env)."""
    assert env.args.stand_clock == "stop"
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    info = state.info.replace(command=jp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]), phase=jp.array([1.0, 1.0]))
    phase = np.asarray(step2(state.replace(info=info), jp.zeros((2, 11))).info.phase)
    np.testing.assert_allclose(phase, [1.0, 1.0 + 2 * np.pi * amp.GAIT_FREQUENCY * amp.CTRL_DT], atol=1e-6)


def test_tracking_pays_on_the_low_passed_velocity(env, step2):
    """--track-seconds 0.5: each step moves the kept velocity 0.02 / 0.5 of the way to the pelvis's, and
    tracking_lin_vel pays on that (the clips' pelvis sways sideways by 0.12-0.25 m/s with every step)."""
    assert env.args.track_seconds == 0.5
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
    kept = jp.array([[0.3, 0.1], [0.0, 0.0]])
    info = state.info.replace(command=jp.array([[0.3, 0.0, 0.0], [0.3, 0.0, 0.0]]), vel_avg=kept)
    nxt = step2(state.replace(info=info), jp.zeros((2, 11)))
    assert not nxt.done.any()
    vel = nxt.data.sensordata[:, env.linvel_adr : env.linvel_adr + 2]
    np.testing.assert_allclose(nxt.info.vel_avg, vel + (1 - amp.CTRL_DT / 0.5) * (kept - vel), atol=1e-6)
    error = np.array([0.3, 0.0]) - np.asarray(nxt.info.vel_avg)
    paid = env.reward_scales["tracking_lin_vel"] * np.exp(-np.sum(error**2, -1) / 0.05)
    np.testing.assert_allclose(nxt.metrics["reward/tracking_lin_vel"], paid, rtol=1e-5)
    assert float(nxt.metrics["reward/tracking_lin_vel"][0]) > 2 * float(nxt.metrics["reward/tracking_lin_vel"][1])


def test_sole_height_is_the_lowest_corner_of_the_sole(env):
    """The swing apex measures a sole's lowest corner (the 8 corners of the box, enumerated here in plain MuJoCo), not
    the foot site: with the ankle pitched 0.3 rad the toe hangs about 7.4 cm · sin 0.3 = 2.2 cm below the site."""
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = m.key_qpos[m.keyframe("home").id]
    d.qpos[2] += 0.05
    d.qpos[7 + amp.JOINT_NAMES.index("left_ankle_pitch")] += 0.3
    mujoco.mj_forward(m, d)
    state = SimpleNamespace(geom_xpos=jp.asarray(d.geom_xpos), geom_xmat=jp.asarray(d.geom_xmat.reshape(-1, 3, 3)),
                            site_xpos=jp.asarray(d.site_xpos))
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T  # (8, 3)
    corners = [d.geom_xpos[g] + (signs * m.geom_size[g]) @ d.geom_xmat[g].reshape(3, 3).T for g in env.soles]
    rand = env.sample_randomization(jax.random.PRNGKey(0))
    sole, site = np.asarray(env.sole_height(state, rand)), np.asarray(env.feet_height(state, rand))
    np.testing.assert_allclose(sole, [c[:, 2].min() for c in corners], atol=1e-6)
    assert site[0] - sole[0] > 0.015 and abs(site[1] - sole[1]) < 1e-3, (site, sole)


def test_swing_peak_tracks_the_apex_and_clears_on_contact(env, step2):
    """A robot held 5 cm above the floor (no sole in contact) keeps the larger of its old peak and its soles' height
    now (the lowest corners: a few mm under 5 cm, the reset's joint noise tilts the feet); standing clears it."""
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(3), 2))
    state = state.replace(info=state.info.replace(swing_peak=jp.array([[0.02, 0.02], [0.09, 0.09]]),
                                                  command=jp.array([[0.3, 0.0, 0.0]] * 2)))  # fmt: skip
    lifted = state.replace(data=state.data.replace(qpos=state.data.qpos.at[:, 2].add(0.05), qvel=0 * state.data.qvel))
    after = step2(lifted, jp.zeros((2, 11)))
    peak, now = np.asarray(after.info.swing_peak), np.asarray(jax.vmap(env.sole_height)(after.data, after.info.rand))
    assert (peak[0] == now[0]).all() and (0.04 < peak[0]).all() and (peak[0] < 0.05).all() and (peak[1] == 0.09).all()
    grounded = step2(state, jp.zeros((2, 11)))  # standing in `home`
    contact = np.asarray(jax.vmap(env.feet_contact)(grounded.data))
    assert contact.sum() >= 3 and (np.asarray(grounded.info.swing_peak)[contact] == 0).all()


def test_waist_weight_scales_the_waist_in_the_pose_term(env):
    """With a style reward the waist's pose weight is --waist-weight (default 20), without one ppo_mjx.py's 1; only the
    waist changes, and the pose term of a waist-only deviation of 0.2 rad is 20 · 0.04 against 1 · 0.04."""
    light, plain = amp.WildRobotEnv(amp.Args(waist_weight=1.0)), amp.WildRobotEnv(amp.Args(amp_weight=0.0))
    waist = amp.JOINT_NAMES.index("waist_yaw")
    for other in (light, plain):
        np.testing.assert_array_equal(np.delete(other.pose_weights, waist), np.delete(env.pose_weights, waist))
        assert other.pose_weights[waist] == 1.0
    assert env.pose_weights[waist] == 20.0
    data = env.init_data.replace(qpos=env.init_data.qpos.at[7 + waist].add(0.2))  # the waist turned by 0.2 rad
    info = env.reset(jax.random.PRNGKey(0)).info
    terms = [e.reward_terms(data, info, jp.zeros(11), jp.ones(2, bool), jp.zeros(2, bool), jp.zeros(2), jp.zeros((2, 3)),
                            jp.float32(0.0), jp.bool_(False))["pose"] for e in (env, light)]  # fmt: skip
    assert float(terms[0]) == pytest.approx(0.8, rel=1e-4) and float(terms[1]) == pytest.approx(0.04, rel=1e-4)


def test_a_done_step_pairs_the_state_reached_before_the_reset(env, step2):
    """A step that ends in a fall returns the fresh episode's state, but its (s, s') pair ends in the fallen state."""
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(3), 2))
    state = state.replace(data=state.data.replace(qpos=state.data.qpos.at[:, 2].set(0.1)))  # pelvis on the floor
    nxt = step2(state, jp.zeros((2, 11)))
    assert np.asarray(nxt.done).all() and not np.asarray(nxt.truncated).any()
    nq = env.mj_model.nq
    assert (np.asarray(nxt.reached_qpos_qvel[:, 2]) < amp.FALL_HEIGHT).all()  # the pair's s': fallen
    assert (np.asarray(nxt.data.qpos[:, 2]) > 0.4).all()  # the next step's s: a fresh, standing episode
    observe = jax.vmap(env.amp_observation)
    fallen = observe(nxt.reached_qpos_qvel[:, :nq], nxt.reached_qpos_qvel[:, nq:])
    assert not np.allclose(fallen, observe(nxt.data.qpos, nxt.data.qvel))


def test_amp_features_heading_invariant():
    motions = load_motions(WALK_MOTIONS)
    q, v = motions.qpos[100:110].copy(), motions.qvel[100:110].copy()
    feet = np.zeros((10, 2, 3)) + q[:, None, :3] + np.array([[0.05, 0.06, -0.45], [0.02, -0.06, -0.45]])
    a = np.asarray(amp.amp_features(jp.asarray(q), jp.asarray(v), jp.asarray(feet)))
    # rotate the whole scene by 90° about z: root quaternion, world velocities, positions
    yaw = np.array([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    w0, x0, y0, z0 = yaw
    q2, v2 = q.copy(), v.copy()
    for i in range(10):
        w1, x1, y1, z1 = q[i, 3:7]
        q2[i, 3:7] = [w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1, w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
                      w0 * y1 - x0 * z1 + y0 * w1 + z0 * x1, w0 * z1 + x0 * y1 - y0 * x1 + z0 * w1]  # fmt: skip
    q2[:, :3] = q[:, :3] @ rz.T
    v2[:, :3] = v[:, :3] @ rz.T
    feet2 = feet @ rz.T
    b = np.asarray(amp.amp_features(jp.asarray(q2), jp.asarray(v2), jp.asarray(feet2)))
    np.testing.assert_allclose(a, b, atol=1e-5)  # every feature, orientation columns included


def test_amp_features_orientation_hand_worked():
    """A root pitched by θ about y (wxyz quaternion (cos θ/2, 0, sin θ/2, 0)) has the rotation [[c, 0, s], [0, 1, 0],
    [-s, 0, c]]: its tangent column is (c, 0, -s), its normal column (s, 0, c); a yaw on top changes neither."""
    theta, yaw = 0.3, 1.2
    pitch = np.array([math.cos(theta / 2), 0, math.sin(theta / 2), 0])
    turn = np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)])
    turned = np.array([turn[0] * pitch[0], -turn[3] * pitch[2], turn[0] * pitch[2], turn[3] * pitch[0]])  # turn ⊗ pitch
    for quat in (pitch, turned):
        qpos = np.zeros(18, np.float32)
        qpos[2], qpos[3:7] = 0.45, quat
        f = np.asarray(amp.amp_features(jp.asarray(qpos), jp.zeros(17), jp.zeros((2, 3))))
        c, s = math.cos(theta), math.sin(theta)
        np.testing.assert_allclose(f[1:7], [c, 0, -s, s, 0, c], atol=1e-6)


def test_disc_input_weights_hide_constant_features_and_scale_named_ones(capsys):
    names = list(amp.AMP_FEATURE_NAMES)
    frames = np.random.default_rng(0).normal(size=(50, len(names)))
    frames[:, names.index("waist_yaw_pos")] = 0.1  # constant in the clips: hidden by the default --feature-min-std
    args = amp.Args(disc_feature_weights=("left_foot_z=3", "right_knee_pos=0.5"))
    expected = np.ones(len(names))
    expected[[names.index("waist_yaw_pos"), names.index("left_foot_z"), names.index("right_knee_pos")]] = 0, 3, 0.5
    np.testing.assert_array_equal(amp.disc_input_weights(args, frames), expected)
    assert amp.disc_input_weights(amp.Args(feature_min_std=0), frames).min() == 1  # every feature shown, at 1
    assert amp.parse_args(["--disc-feature-weights", "left_foot_z=3", "right_foot_z=3"]).disc_feature_weights == (
        "left_foot_z=3", "right_foot_z=3")
    for bad in ("left_foot=3", "left_foot_z", "left_foot_z=-1", "left_foot_z=0", "left_foot_z=x", "=2"):
        with pytest.raises(SystemExit) as e:
            amp.disc_input_weights(amp.Args(disc_feature_weights=(bad,)), frames)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith(f"error: --disc-feature-weights {bad}: expected NAME=VALUE with "
                                                    "NAME one of root_z, tangent_x, ") and "\n" not in err, err
        assert err.endswith("right_foot_z and VALUE > 0"), err


def test_style_reward_hand_worked():
    d = jp.array([1.0, -1.0, 0.0, 2.0, 3.0])
    # 1 - 0.25 (d - 1)²: d=1 -> 1; d=-1 -> 0; d=0 -> 0.75; d=2 -> 0.75; d=3 -> max(0, 0) = 0
    np.testing.assert_allclose(np.asarray(amp.style_reward(d)), [1.0, 0.0, 0.75, 0.75, 0.0], atol=1e-6)
    # BCE: -log(1 - σ(0)) = log 2
    assert float(amp.style_reward(jp.array(0.0), "bce")) == pytest.approx(math.log(2), abs=1e-6)


def test_gradient_penalty_matches_finite_differences():
    disc = amp.Discriminator(hidden=(16, 16))
    params = disc.init(jax.random.PRNGKey(0), jp.zeros(6))["params"]
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 6)), dtype=np.float64)
    f = lambda v: float(disc.apply({"params": params}, jp.asarray(v, jp.float32)))  # noqa: E731
    eps, sq = 1e-3, []
    for sample in x:
        g = [(f(sample + eps * e) - f(sample - eps * e)) / (2 * eps) for e in np.eye(6)]
        sq.append(np.sum(np.square(g)))
    gp = amp.gradient_penalty(lambda v: disc.apply({"params": params}, v), jp.asarray(x, jp.float32))
    assert float(gp) == pytest.approx(np.mean(sq), rel=2e-2)


def test_discriminator_separates_toy_data():
    rng = np.random.default_rng(0)
    ref = jp.asarray(rng.normal(1.0, 0.3, (256, 8)), jp.float32)
    pol = jp.asarray(rng.normal(-1.0, 0.3, (256, 8)), jp.float32)
    disc = amp.Discriminator(hidden=(64, 64))
    apply = lambda p, x: disc.apply({"params": p}, x)  # noqa: E731
    params = disc.init(jax.random.PRNGKey(0), jp.zeros(8))["params"]
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        (_, m), g = jax.value_and_grad(amp.discriminator_loss, has_aux=True)(params, apply, ref, pol, "lsgan", 10.0,
                                                                              0.05, 1e-4)
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state, m

    for _ in range(400):
        params, state, m = step(params, state)
    assert float(m["amp/expert_logit"]) == pytest.approx(1.0, abs=0.15)
    assert float(m["amp/policy_logit"]) == pytest.approx(-1.0, abs=0.15)
    assert float(m["amp/disc_accuracy"]) == 1.0
    style_pol, style_ref = amp.style_reward(apply(params, pol)).mean(), amp.style_reward(apply(params, ref)).mean()
    assert float(style_pol) < 0.1 and float(style_ref) > 0.9


def test_verify_run_logs_amp_metrics(amp_verify_run):
    run_dir, proc = amp_verify_run
    assert "verify: checkpoint round trip ok" in proc.stdout and "reference: 11 clips" in proc.stdout
    assert "windows of 3 frames" in proc.stdout
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("amp/disc_loss", "amp/grad_penalty", "amp/expert_logit", "amp/policy_logit", "amp/disc_accuracy",
                 "amp/style_reward", "charts/task_reward", "charts/episodic_return", "losses/policy_loss"):
        assert name in header, name
    ckpt = load(run_dir / "checkpoints" / "ckpt_000002.msgpack")
    assert ckpt["meta"]["algo"] == "amp"


def test_disc_probe_on_a_run_checkpoint(amp_verify_run, tmp_path, capsys):
    """scripts/amp_disc_probe.py reads the discriminator, normalizer and replay back from a run's checkpoint: it hides
    the features the run hid (as its start-up line names them) and measures the rest."""
    spec = importlib.util.spec_from_file_location("amp_disc_probe", ROOT / "scripts" / "amp_disc_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    ckpt = amp_verify_run[0] / "checkpoints" / "ckpt_000002.msgpack"
    (r,) = probe.main([str(ckpt), "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text()) == [r]
    hidden = amp_verify_run[1].stdout.split("constant in clips): ")[1].splitlines()[0].split(", ")
    assert r["hidden"] == hidden and len(hidden) == 11 and r["windows"] == 40  # the ring's 40 slots, full
    assert set(r["saliency"]) == set(r["swap_gain"]) == set(amp.AMP_FEATURE_NAMES) - set(hidden)
    assert min(r["saliency"].values()) > 0 and math.isclose(sum(r["saliency"].values()), 1.0, rel_tol=1e-6)
    assert 0 <= r["style_reward_policy"] <= 1 and 0 <= r["style_reward_reference"] <= 1
    assert "saliency: " in capsys.readouterr().out


def test_resume_matches_uninterrupted(amp_verify_run, tmp_path):
    """The discriminator, its optimizer, the feature normalizer and the replay ring are leaves too; --verify's sizes
    (24 pairs written per iteration into 40 slots) wrap the ring in the resumed iteration."""
    leaves = load(amp_verify_run[0] / "checkpoints" / "ckpt_000002.msgpack")["leaves"]
    last = len(leaves) - 1  # RunnerState ends with replay, replay_next, replay_stored, amp_rng, amp_hist
    assert int(leaves[str(last - 3)]) == 8 and int(leaves[str(last - 2)]) == 40  # next slot 48 % 40, ring full
    assert leaves[str(last - 4)].shape == (40, 3 * 41)  # the ring holds windows of --disc-history 3 frames
    assert leaves[str(last)].shape == (4, 1, 41) and np.abs(leaves[str(last)]).max() > 0.1  # each env's last state
    assert_resume_matches("ppo_amp_mjx.py", amp_verify_run[0], tmp_path)
    resumed = amp.parse_args(["--resume", str(amp_verify_run[0] / "checkpoints" / "ckpt_000002.msgpack")])
    assert resumed.shaping_terms == ("feet_phase",)  # a tuple setting comes back a tuple (msgpack stores a list)
    assert resumed.disc_feature_weights == ("left_foot_z=3", "right_knee_pos=0.5")


def test_ring_insert_wraps_and_saturates():
    buffer, nxt, stored = jp.zeros((5, 2)), jp.int32(0), jp.int32(0)
    for start in (0, 3, 6):  # rows 0-2, 3-5, 6-8 into 5 slots
        rows = jp.arange(start, start + 3, dtype=jp.float32)[:, None] * jp.ones(2)
        buffer, nxt, stored = amp.ring_insert(buffer, nxt, stored, rows)
    np.testing.assert_array_equal(buffer[:, 0], [5, 6, 7, 8, 4])  # the oldest (0-3) overwritten in order
    assert int(nxt) == 4 and int(stored) == 5  # saturated at the size: no counter that can overflow


@pytest.mark.parametrize("envs, updates", [(256, 1), (2048, 2), (8192, 8)])
def test_discriminator_budget_scales_with_the_batch(envs, updates, tmp_path, monkeypatch):
    """0.2 of each iteration's policy pairs pass through the discriminator: the updates follow the batch (8 at 8192
    envs is the setting that made amp_walk_h100); an explicit --disc-updates wins."""
    monkeypatch.chdir(tmp_path)
    assert amp.parse_args(["--num-envs", str(envs)]).disc_updates == updates
    assert amp.parse_args(["--num-envs", str(envs), "--disc-updates", "3"]).disc_updates == 3


def test_amp_weight_zero_reproduces_ppo(ppo_verify_run, tmp_path):
    # ppo_mjx.py's action scale and action std (the AMP file moves the knee further and starts quieter)
    proc = run_script("ppo_amp_mjx.py", "--verify", "--amp-weight", "0", "--init-std", "0.5", "--min-std", "0.05",
                      "--action-scale", "0.4", "--exp-name", "zero", *PPO_VERIFY_FLAGS, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ppo_dir, _ = ppo_verify_run
    amp_dir = next((tmp_path / "runs").iterdir())
    a = load(ppo_dir / "checkpoints" / "ckpt_000002.msgpack")["policy"]
    b = load(amp_dir / "checkpoints" / "ckpt_000002.msgpack")["policy"]
    # same rollouts, losses and updates; equal to float rounding only, because XLA fuses the AMP file's larger program
    # differently (after 2 iterations they differ by < 1e-9; one iteration of updates moves them by ~4e-4)
    for (pa, x), (pb, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)):
        assert pa == pb
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8, err_msg=str(pa))


@pytest.fixture
def bad_motion_files(tmp_path):
    src = dict(np.load(ROOT / "assets" / "motions" / "wildrobot_walk.npz", allow_pickle=False))
    cases = {}

    def write(name, **changes):
        path = tmp_path / name
        np.savez(path, **{**src, **changes})
        cases[name] = path

    qpos = src["qpos"].copy()
    qpos[5, 9] = np.nan
    write("nan.npz", qpos=qpos)
    write("shape.npz", qpos=src["qpos"][:, :17])
    write("robot.npz", joint_names=np.array([f"joint_{i}" for i in range(11)]))
    write("pickled.npz", clip_names=np.array([{"a": 1}] * len(src["clip_names"]), dtype=object))
    write("fps.npz", fps=np.array(30.0))  # pairs would not be one control step apart
    return cases


@pytest.mark.parametrize("name, message", [
    ("nan.npz", "non-finite"), ("shape.npz", "shape"), ("robot.npz", "joint names"), ("pickled.npz", "pickle"),
    ("fps.npz", "30 fps, the policy acts at 50 hz"),
])  # fmt: skip
def test_bad_motion_files_fail_before_compile(bad_motion_files, name, message, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        amp.parse_args(["--motion-file", str(bad_motion_files[name])])
    text = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in text
    assert text.startswith(f"error: --motion-file {bad_motion_files[name]}") and message in text.lower(), text
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_bad_flags_one_line(tmp_path, monkeypatch, capsys):
    src = dict(np.load(ROOT / "assets" / "motions" / "wildrobot_walk.npz", allow_pickle=False))
    n = int(src["clip_lengths"][0])  # the "stand" clip alone: nothing moves, every feature is constant
    assert src["clip_names"][0] == "stand"
    np.savez(tmp_path / "still.npz", **{**src, "qpos": src["qpos"][:n], "qvel": src["qvel"][:n],
                                         "clip_names": src["clip_names"][:1], "clip_starts": src["clip_starts"][:1],
                                         "clip_lengths": src["clip_lengths"][:1],
                                         "clip_commands": src["clip_commands"][:1]})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for argv, message in [(["--init-std", "0.01"], "error: --init-std 0.01 is below --min-std 0.02857"),
                          (["--amp-weight", "-1"], "error: --amp-weight, --task-weight, --waist-weight and "
                                                   "--tilt-rate-weight must be >= 0"),
                          (["--waist-weight", "-2"], "got 5.0, 1.0, -2.0 and 0.05"),
                          (["--tilt-rate-weight", "-1"], "got 5.0, 1.0, 20.0 and -1.0"),
                          (["--motion-file", "missing.npz"], "error: --motion-file missing.npz"),
                          (["--reference-init", "1.5"], "error: --reference-init must be in [0, 1]"),
                          (["--disc-history", "1"], "--disc-history >= 2, got 0.5, 0.005, 0.0 and 1"),
                          (["--track-seconds", "-0.5"], "--track-seconds >= 0, --disc-history >= 2, "
                                                     "got 0.5, 0.005, -0.5 and 2"),
                          (["--disc-history", "900"], "error: --disc-history 900: longer than the longest clip")]:
        with pytest.raises(SystemExit) as e:  # in-process: what parse_args stops with
            amp.parse_args(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and "\n" not in err, err
    # as a user runs it (this one is found when the env is built, still before any compile): exit code 2, one line
    proc = run_script("ppo_amp_mjx.py", "--verify", "--motion-file", "still.npz", cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "no feature varies by over" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_every_args_field_is_read():
    import ast
    from dataclasses import fields

    tree = ast.parse((ROOT / "ppo_amp_mjx.py").read_text() + (ROOT / "utils" / "runs.py").read_text())  # + the Logger's
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and (
        (isinstance(n.value, ast.Name) and n.value.id == "args") or
        (isinstance(n.value, ast.Attribute) and n.value.attr == "args"))}  # fmt: skip
    assert not [f.name for f in fields(amp.Args) if f.name not in read]


def test_diff_with_ppo_is_only_amp_hunks():
    """Every block of lines that differs from ppo_mjx.py carries `# AMP:` in its own lines (a removed block: on the
    line before the gap). Only the module docstring, prose, is exempt."""
    import difflib

    ppo = (ROOT / "ppo_mjx.py").read_text().splitlines()
    amp_lines = (ROOT / "ppo_amp_mjx.py").read_text().splitlines()
    docstring_end = amp_lines.index('"""', 1)
    matcher = difflib.SequenceMatcher(None, ppo, amp_lines, autojunk=False)
    hunks = [h for h in matcher.get_opcodes() if h[0] != "equal" and h[4] > docstring_end + 1]
    assert len(hunks) > 20  # the AMP file adds a discriminator, its features, data and updates
    for tag, i1, i2, j1, j2 in hunks:
        own = amp_lines[j1:j2] if j2 > j1 else amp_lines[j1 - 1 : j1]
        assert any("# AMP:" in line for line in own), f"unmarked difference at ppo_amp_mjx.py:{j1 + 1}: {own[:3]}"


@pytest.mark.slow
def test_non_finite_discriminator_loss_stops_before_the_checkpoint(tmp_path):
    """A discriminator that blows up (learning rate 1e30) makes its loss non-finite in the second iteration: the run
    stops with exit code 1 naming the loss, and that iteration's checkpoint is never written."""
    proc = run_script("ppo_amp_mjx.py", "--verify", "--disc-learning-rate", "1e30", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: non-finite ") and "amp/disc_loss" in error and "ckpt_000001" in error, error
    ckpts = sorted(p.name for p in tmp_path.glob("runs/*/checkpoints/*.msgpack"))
    assert ckpts == ["ckpt_000001.msgpack"], ckpts
