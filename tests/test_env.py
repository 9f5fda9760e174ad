"""The walking env of ppo_mjx.py: jit reset/step, declared obs sizes, finiteness, determinism, episode ends."""

from dataclasses import replace

import jax
import jax.numpy as jp
import numpy as np
import pytest

from ppo_mjx import CRITIC_LAYOUT, CTRL_DT, OBS_LAYOUT, REWARD_SCALES, Args, WildRobotEnv, gait_frequency, obs_slices

N = 3  # envs


@pytest.fixture(scope="module")
def env():
    # a 6-step time limit, so a short test sees truncations; the clock at the commanded cadence; else the default env
    env = WildRobotEnv(replace(Args(), episode_seconds=0.12, gait_clock="command"))
    env.v_reset = jax.jit(jax.vmap(env.reset))
    env.v_step = jax.jit(jax.vmap(env.step))
    return env


def rollout(env, seed, steps, actions=None):
    state = env.v_reset(jax.random.split(jax.random.PRNGKey(seed), N))
    states = [state]
    for t in range(steps):
        a = jp.zeros((N, 11)) if actions is None else actions[t]
        state = env.v_step(state, a)
        states.append(state)
    return states


def test_shapes_and_finite(env):
    actions = jax.random.uniform(jax.random.PRNGKey(0), (14, N, 11), minval=-1, maxval=1)
    states = rollout(env, 0, 14, actions)
    for s in states:
        assert s.obs.shape == (N, env.OBS_SIZE)
        assert s.critic_obs.shape == (N, env.CRITIC_OBS_SIZE)
        assert s.reached_critic_obs.shape == (N, env.CRITIC_OBS_SIZE)
        assert np.isfinite(np.asarray(s.obs)).all() and np.isfinite(np.asarray(s.critic_obs)).all()
        assert np.isfinite(np.asarray(s.reward)).all()
        for k in REWARD_SCALES:
            assert np.isfinite(np.asarray(s.metrics[f"reward/{k}"])).all(), k
    assert set(states[1].metrics) >= {f"reward/{k}" for k in REWARD_SCALES}
    # the robot stays up under zero actions (servos hold the default pose) for the 6 steps
    assert not any(np.asarray(s.done & ~s.truncated).any() for s in states)


def test_deterministic_per_seed(env):
    a, b, c = rollout(env, 7, 4), rollout(env, 7, 4), rollout(env, 8, 4)
    np.testing.assert_array_equal(np.asarray(a[-1].obs), np.asarray(b[-1].obs))
    assert not np.allclose(np.asarray(a[-1].obs), np.asarray(c[-1].obs))


def test_time_limit_truncates_and_keeps_reached_obs(env):
    states = rollout(env, 1, 7)
    limit = env.episode_steps  # 6
    for t, s in enumerate(states[1:], start=1):
        assert bool(s.done.all()) == (t == limit), t
        assert bool(s.truncated.all()) == (t == limit), t
    end = states[limit]
    assert int(end.info.step[0]) == 0  # auto-reset happened
    # the bootstrap sees the state reached at the limit, not the fresh episode's first observation
    assert not np.allclose(np.asarray(end.reached_critic_obs), np.asarray(end.critic_obs))
    assert float(end.metrics["episode_length"][0]) == limit


def test_fall_terminates(env):
    state = rollout(env, 2, 0)[0]
    low = state.data.qpos.at[:, 2].set(0.1)  # pelvis near the floor: fallen
    state = state.replace(data=state.data.replace(qpos=low))
    nxt = env.v_step(state, jp.zeros((N, 11)))
    assert np.asarray(nxt.done).all() and not np.asarray(nxt.truncated).any()
    assert (np.asarray(nxt.metrics["reward/termination"]) < 0).all()


def test_nan_state_is_reset_and_counted(env):
    state = rollout(env, 3, 0)[0]
    bad = state.data.qvel.at[0, 8].set(jp.nan)  # env 0 only
    state = state.replace(data=state.data.replace(qvel=bad))
    nxt = env.v_step(state, jp.zeros((N, 11)))
    assert np.asarray(nxt.metrics["nan_reset"]).tolist() == [1.0, 0.0, 0.0]
    assert bool(nxt.done[0]) and not bool(nxt.done[1])
    assert float(nxt.reward[0]) == 0.0
    for leaf in (nxt.obs, nxt.critic_obs, nxt.reached_critic_obs, nxt.data.qpos, nxt.data.qvel):
        assert np.isfinite(np.asarray(leaf)).all()


def test_randomization_changes_physics(env):
    r = jax.vmap(env.sample_randomization)(jax.random.split(jax.random.PRNGKey(0), 2))
    assert not np.allclose(np.asarray(r.kp[0]), np.asarray(r.kp[1]))
    m = env.randomized_model(jax.tree.map(lambda x: x[0], r))
    assert np.isclose(float(m.body_mass.sum()), float((env.model.body_mass * r.mass_scale[0]).sum() + r.torso_mass[0]))
    np.testing.assert_allclose(np.asarray(m.actuator_biasprm[:, 1]), -np.asarray(r.kp[0]), rtol=1e-6)


def test_observations_follow_the_layout(env):
    """Each named part sits where obs_slices(OBS_LAYOUT / CRITIC_LAYOUT) says (the tools read them there); the
    actor's command, last action and clock carry no noise, the critic's copy of the actor obs none at all."""
    state = rollout(env, 3, 2, jax.random.uniform(jax.random.PRNGKey(1), (2, N, 11), minval=-1, maxval=1))[-1]
    at, critic = obs_slices(OBS_LAYOUT), obs_slices(CRITIC_LAYOUT)
    phase = np.stack([np.cos(state.info.phase), np.sin(state.info.phase)], -1)
    np.testing.assert_array_equal(state.obs[:, at["command"]], state.info.command)
    np.testing.assert_array_equal(state.obs[:, at["last_action"]], state.info.last_action)
    np.testing.assert_allclose(state.obs[:, at["phase"]], phase, atol=1e-6)
    clean = state.critic_obs[:, critic["actor"]]
    np.testing.assert_array_equal(clean[:, at["command"]], state.info.command)
    np.testing.assert_allclose(clean[:, at["joint_pos"]], state.data.qpos[:, 7:] - env.default_pose, atol=1e-6)
    np.testing.assert_allclose(state.critic_obs[:, critic["height"]], state.data.qpos[:, 2:3], atol=1e-6)
    np.testing.assert_allclose(state.critic_obs[:, critic["push"]], state.info.push_force / 10.0, atol=1e-7)


def test_gait_clock_runs_at_the_commanded_cadence(env):
    """--gait-clock command: each step advances the clock by 2π · gait_frequency(vx) · dt, the reference gait's
    cadence for the episode's command (1.25 Hz up to 0.3 m/s, faster above); a new episode starts it at 0."""
    states = rollout(env, 5, 8)
    for before, after in zip(states, states[1:]):
        vx, fresh = np.asarray(after.info.command[:, 0]), np.asarray(after.info.step) == 0
        advance = np.mod(np.asarray(after.info.phase) - np.asarray(before.info.phase), 2 * np.pi)
        expected = 2 * np.pi * np.asarray(gait_frequency(vx, "command")) * CTRL_DT
        np.testing.assert_allclose(advance[~fresh], expected[~fresh], atol=1e-5)
        assert (np.asarray(after.info.phase)[fresh] == 0).all()
    assert np.ptp(np.asarray(states[0].info.command[:, 0])) > 0.05  # the envs' commands (and rates) differ
