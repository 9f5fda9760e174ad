"""Robustness in the env and the tools: force pushes, the ground under the feet (floor or turned heightfield),
fine-tuning from a policy (--init-policy, critic warm-up) and the evaluation's push schedule."""

from dataclasses import replace

import jax
import jax.numpy as jp
import mujoco
import numpy as np
import pytest
from flax import serialization
from mujoco import mjx

import ppo_mjx
from conftest import PPO_VERIFY_FLAGS, ROOT, run_script
from ppo_mjx import CTRL_DT, Args, WildRobotEnv
from utils import evaluate

QUIET = dict(domain_randomization=False, obs_noise=False, action_latency=False)
SHIPPED = ROOT / "assets" / "policies" / "ppo_walk_h100.msgpack"


@pytest.mark.slow
def test_force_push_gives_the_impulse():
    """Weightless and in the air, a push of F for D control steps changes the robot's CoM velocity by F·D·dt / m."""
    env = WildRobotEnv(replace(Args(), push=True, push_newtons=15.0, **QUIET))
    env.model = env.model.replace(opt=env.model.opt.replace(gravity=jp.zeros(3)))
    state = env.reset(jax.random.PRNGKey(3))
    data = state.data.replace(qpos=state.data.qpos.at[2].add(0.3), qvel=jp.zeros_like(state.data.qvel))
    state = state.replace(data=data, info=state.info.replace(push_countdown=jp.int32(0)))
    step = jax.jit(env.step)
    mass = float(env.mj_model.body_mass.sum())

    state = step(state, jp.zeros(11))  # the push starts in this step
    force, steps = np.asarray(state.info.push_force), int(state.info.push_left) + 1
    assert np.linalg.norm(force) > 0.5 and force[2] == 0 and 3 <= steps <= 10
    for _ in range(steps + 2):
        state = step(state, jp.zeros(11))
    assert not np.asarray(state.info.push_force).any()  # over
    com = [np.asarray(state.data.subtree_com[0])]
    for _ in range(5):
        state = step(state, jp.zeros(11))
        com.append(np.asarray(state.data.subtree_com[0]))
    velocity = (com[-1] - com[0]) / (5 * CTRL_DT)
    np.testing.assert_allclose(velocity, force * steps * CTRL_DT / mass, rtol=0.03, atol=2e-3)


@pytest.fixture(scope="module")
def terrain_env():
    return WildRobotEnv(replace(Args(), scene="assets/scene_terrain.xml", **QUIET))


def mujoco_ground(env, r, xy) -> np.ndarray:
    """The ground under xy by casting rays down in plain MuJoCo, with the episode's floor and field poses."""
    m, d = env.mj_model, mujoco.MjData(env.mj_model)
    mujoco.mj_forward(m, d)
    pos = np.asarray(env.ground_pos(r))
    for g in (env.plane, env.hfield):
        if g is not None:  # world geoms are static in MuJoCo: place them by hand
            d.geom_xpos[g] = pos[g]
    hit = np.zeros(1, np.int32)
    return np.array([1.0 - mujoco.mj_ray(m, d, np.array([x, y, 1.0]), np.array([0.0, 0.0, -1.0]), None, 1, -1, hit)
                     for x, y in xy])  # fmt: skip


@pytest.mark.parametrize("rough", [True, False])
def test_ground_height_is_mujocos_surface(terrain_env, rough):
    env = terrain_env
    r = env.sample_randomization(jax.random.PRNGKey(0)).replace(rough=jp.bool_(rough))
    xy = np.random.default_rng(1).uniform(-16, 16, (300, 2))  # the field is 30 m across: some points beyond it
    ours = np.asarray(env.ground_height(r, jp.asarray(xy)))
    np.testing.assert_allclose(ours, mujoco_ground(env, r, xy), atol=1e-6)
    on_field = (np.abs(xy) < 15).all(-1)
    if rough:
        assert ours[on_field].std() > 0.005 and np.abs(ours[on_field]).max() <= 0.02 + 1e-6  # uniform in ±2 cm
        np.testing.assert_allclose(ours[~on_field], -0.1, atol=1e-6)  # beyond the field: the sunk floor
        assert np.abs(np.asarray(env.ground_height(r, jp.zeros((1, 2))))).max() < 1e-4  # level (8-bit PNG) at the start
    else:
        assert not ours.any()


@pytest.mark.slow
def test_shipped_rough_scene_ground():
    env = WildRobotEnv(replace(Args(), scene="assets/scene_rough.xml", **QUIET))
    r = env.sample_randomization(jax.random.PRNGKey(0))
    xy = np.random.default_rng(2).uniform(-7.9, 7.9, (300, 2))
    np.testing.assert_allclose(np.asarray(env.ground_height(r, jp.asarray(xy))), mujoco_ground(env, r, xy), atol=1e-6)


def test_mjx_soles_stand_on_the_episodes_ground(terrain_env):
    """Dropped on a bumpy spot, the soles' MJX contacts lie on `ground_height` (the raised field), and on the floor in
    a flat episode; `feet_height` (rewards, critic) is then about zero, not the world z."""
    env = terrain_env
    base = env.sample_randomization(jax.random.PRNGKey(0))
    rands = jax.tree.map(lambda *x: jp.stack(x), base.replace(rough=jp.bool_(True)), base.replace(rough=jp.bool_(False)))
    spot = jp.array([1.9, -2.3])
    around = spot + jp.stack(jp.meshgrid(jp.linspace(-0.2, 0.2, 9), jp.linspace(-0.2, 0.2, 9)), -1).reshape(-1, 2)
    lift = float(jp.max(env.ground_height(jax.tree.map(lambda x: x[0], rands), around)))  # above every bump
    qpos = env.home_qpos.at[:2].set(spot).at[2].add(lift + 0.01)

    def settle(r):
        model = env.randomized_model(r)
        data = env.init_data.replace(qpos=qpos, ctrl=env.default_pose)
        data = jax.lax.fori_loop(0, 40, lambda _, d: mjx.step(model, d), data)  # 0.2 s
        c = data._impl.contact
        return c.pos, c.dist, c.geom1, c.geom2, env.feet_height(data, r), data.site_xpos[env.feet]

    pos, dist, g1, g2, feet_h, feet = jax.device_get(jax.jit(jax.vmap(settle))(rands))
    for e in range(2):
        r = jax.tree.map(lambda x: x[e], rands)
        on_sole = (dist[e] < 1e-3) & (np.isin(g1[e], env.soles) | np.isin(g2[e], env.soles))
        assert on_sole.sum() >= 2, e
        ground = np.asarray(env.ground_height(r, jp.asarray(pos[e][on_sole][:, :2])))
        np.testing.assert_allclose(pos[e][on_sole][:, 2], ground, atol=3e-3)
        assert np.all(np.abs(feet_h[e]) < 0.02), feet_h[e]
    world_z_gap = np.abs(feet[0][:, 2] - feet_h[0])  # the bumps under the feet, which world z would have hidden
    assert world_z_gap.max() > 2e-3


@pytest.mark.slow
def test_init_policy_and_critic_warmup(ppo_verify_run, tmp_path):
    """--init-policy: the first iteration (warm-up) leaves the actor and its normalizer bit-identical to the file's,
    the second trains the actor; the critic is new (66 inputs, the shipped policy's critic had 63). The same
    settings as ppo_verify_run (the compiled programs come from the cache), plus the policy to start from."""
    proc = run_script("ppo_mjx.py", "--verify", *PPO_VERIFY_FLAGS, "--init-policy", str(SHIPPED), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"actor, obs normalizer: {SHIPPED}; critic only for 1 iterations" in proc.stdout
    shipped = serialization.msgpack_restore(SHIPPED.read_bytes())["policy"]
    ckpts = sorted((tmp_path / "runs").glob("*/checkpoints/ckpt_*.msgpack"))
    first, second = (serialization.msgpack_restore(p.read_bytes())["policy"] for p in ckpts)
    for a, b in zip(jax.tree.leaves(shipped), jax.tree.leaves(first)):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(shipped["actor"]),
                                                        jax.tree.leaves(second["actor"]))]  # fmt: skip
    assert any(changed)


def test_bad_init_policy_fails_before_compile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.msgpack").write_bytes(b"\x00 not msgpack" * 4)
    payload = serialization.msgpack_restore(SHIPPED.read_bytes())
    payload["policy"]["actor"]["Dense_0"]["kernel"] = np.zeros((44, 64), np.float32)  # another network
    (tmp_path / "other.msgpack").write_bytes(serialization.msgpack_serialize(payload))
    cases = [("missing.msgpack", "--init-policy missing.msgpack: no such file"),
             ("junk.msgpack", "--init-policy junk.msgpack: not a policy checkpoint"),
             ("other.msgpack", "--init-policy other.msgpack: its actor")]  # fmt: skip
    (tmp_path / "shipped.msgpack").write_bytes(SHIPPED.read_bytes())  # trained at --action-scale 0.4
    cases += [("shipped.msgpack --action-scale 0.7", "--action-scale 0.7 differs from the checkpoint's 0.4 (its actions")]
    for name, message in cases:
        with pytest.raises(SystemExit) as e:
            ppo_mjx.parse_args(["--init-policy", *name.split()])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_push_windows_and_recovery():
    """Pushes every 5 s of a 30 s episode start at 5, 10, ... 25 s; an episode that falls 1 s after its third push
    recovered from two of three pushes it met (the fourth and fifth found it down)."""
    steps, dt = 1500, CTRL_DT
    windows = evaluate.push_windows(steps, dt, every_s=5.0)
    assert [w[0] for w in windows] == [250, 500, 750, 1000, 1250] and all(w[1] - w[0] == 10 for w in windows)
    table = evaluate.push_table(windows, np.zeros((1, 5)), 10.0, steps)
    assert table.shape == (steps, 1, 3) and table[:, 0, 0].sum() == pytest.approx(10.0 * 50)
    assert evaluate.push_windows(100, dt) == [(50, 60, 100)]  # one push midway, recovery window cut at the end
    valid = np.arange(steps) < 800
    tr = dict(valid=valid, fell=True, start=np.zeros(3), pos=np.zeros((steps, 3)), linvel=np.zeros((steps, 3)),
              yaw_rate=np.full(steps, 0.2), torque=np.zeros((steps, 11)), joint_vel=np.zeros((steps, 11)),
              foot_z=np.zeros((steps, 2)), contact=np.ones((steps, 2), bool))  # fmt: skip
    out = evaluate.episode_metrics(tr, np.array([0.3, 0.0, 0.25]), dt, windows)
    assert (out["pushed"], out["recovered"]) == (3, 2) and out["push_recovery"] == pytest.approx(2 / 3)
    assert out["yaw_rate_radps"] == pytest.approx(0.2) and out["yaw_error_pct"] == pytest.approx(20.0)


def test_velocity_error_over_2s_windows_ignores_the_sway():
    """A walk 0.05 m/s too slow that sways sideways at 1.5 Hz (0.2 m/s): the per-step error counts the sway, the error
    of the 2 s means (3 whole cycles each) only the 0.05 m/s; an episode shorter than one window has none."""
    steps, dt = 500, CTRL_DT
    t = np.arange(steps) * dt
    linvel = np.stack([np.full(steps, 0.25), 0.2 * np.sin(2 * np.pi * 1.5 * t), np.zeros(steps)], -1)
    tr = dict(valid=np.ones(steps, bool), fell=False, start=np.zeros(3), pos=np.zeros((steps, 3)), linvel=linvel,
              yaw_rate=np.zeros(steps), torque=np.zeros((steps, 11)), joint_vel=np.zeros((steps, 11)),
              foot_z=np.zeros((steps, 2)), contact=np.ones((steps, 2), bool))  # fmt: skip
    out = evaluate.episode_metrics(tr, np.array([0.3, 0.0, 0.0]), dt, [])
    assert out["vel_error_2s_mps"] == pytest.approx(0.05, abs=1e-6) and out["vel_error_mps"] > 0.12
    short = {k: v[:120] if isinstance(v, np.ndarray) and len(v) == steps else v for k, v in tr.items()}
    assert np.isnan(evaluate.episode_metrics(short, np.array([0.3, 0.0, 0.0]), dt, [])["vel_error_2s_mps"])


def test_scenarios_are_the_walking_bars():
    """The scenarios' settings are SPEC.md's bars; turning sweeps the yaw range the training file advertises."""
    from argparse import Namespace

    from utils.checkpoint import load_policy

    policy = load_policy(SHIPPED)
    spec = {name: evaluate.scenario(name, policy, Namespace()) for name in evaluate.SCENARIOS if name != "commands"}
    assert spec["long_walk"]["seconds"] >= 130 and spec["long_walk"]["commands"] == {"forward_0.4": (0.4, 0.0, 0.0)}
    assert (spec["pushes"]["seconds"], spec["pushes"]["push_every_s"], spec["pushes"]["push_newtons"]) == (30, 5, 10)
    assert spec["pushes"]["random_directions"] and spec["rough"]["scene"] == "assets/scene_rough.xml"
    assert spec["bumpy"]["scene"] == "assets/scene_bumpy.xml" and spec["bumpy"]["seconds"] == 20
    top = ppo_mjx.COMMAND_RANGE[2, 1]
    turns = list(spec["turning"]["commands"].values())
    assert max(c[2] for c in turns) == pytest.approx(top) and min(c[2] for c in turns) == pytest.approx(-top)
    assert any(c[0] > 0 for c in turns)  # also turning while walking
    standing = evaluate.BARS["pushes"][1]
    assert standing({"falls": 2, "episodes": 20}) and not standing({"falls": 3, "episodes": 20})
