"""Pure functions of ppo_mjx.py against plain-Python references and hand-worked numbers."""

import math

import jax.numpy as jp
import numpy as np
import pytest

from ppo_mjx import Normalizer, compute_gae, gaussian_entropy, gaussian_log_prob, ppo_loss


def gae_cleanrl_loop(rewards, values, last_value, dones_next, gamma, lam):
    """CleanRL's loop (no truncation handling): values[t+1] bootstraps unless the next step starts a new episode."""
    T = len(rewards)
    adv = np.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones_next[t]
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv


def test_gae_matches_cleanrl_loop_without_truncation():
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 16, 3, 0.97, 0.95
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    last_value = rng.normal(size=N)
    term = rng.random((T, N)) < 0.15
    # without truncation, V(state reached) is the next step's value unless the episode ended (then unused)
    next_values = np.concatenate([values[1:], last_value[None]], 0)
    adv, ret = compute_gae(jp.asarray(rewards), jp.asarray(values), jp.asarray(next_values), jp.asarray(term),
                           jp.asarray(term), gamma, lam)
    for n in range(N):
        expected = gae_cleanrl_loop(rewards[:, n], values[:, n], last_value[n], term[:, n].astype(float), gamma, lam)
        np.testing.assert_allclose(np.asarray(adv[:, n]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), np.asarray(adv) + values, rtol=1e-5, atol=1e-5)


def test_gae_bootstraps_truncation_but_not_termination():
    # one env, 3 steps: step 0 ordinary, step 1 ends the episode, step 2 starts a new one and runs on
    gamma, lam = 0.9, 0.5
    rewards = jp.array([[1.0], [2.0], [3.0]])
    values = jp.array([[0.5], [0.25], [1.0]])
    next_values = jp.array([[0.25], [4.0], [2.0]])  # V(state reached): step 1 reached a state worth 4
    done = jp.array([[False], [True], [False]])
    # truncated at step 1: delta1 = 2 + 0.9·4 - 0.25 = 5.35;  terminated: delta1 = 2 - 0.25 = 1.75
    # step 2: delta2 = 3 + 0.9·2 - 1 = 3.8 (its own episode); step 0: delta0 = 1 + 0.9·0.25 - 0.5 = 0.725
    # adv0 = delta0 + 0.9·0.5·adv1
    adv_trunc, _ = compute_gae(rewards, values, next_values, jp.zeros_like(done), done, gamma, lam)
    adv_term, _ = compute_gae(rewards, values, next_values, done, done, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv_trunc[:, 0]), [0.725 + 0.45 * 5.35, 5.35, 3.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adv_term[:, 0]), [0.725 + 0.45 * 1.75, 1.75, 3.8], rtol=1e-6)


def test_ppo_loss_hand_worked():
    mb = dict(log_prob=jp.zeros(2), advantages=jp.array([1.0, -1.0]), value=jp.array([0.0, 1.0]),
              returns=jp.array([1.0, 0.0]))
    new_log_prob = jp.log(jp.array([1.5, 0.5]))  # ratios 1.5 and 0.5
    new_value, entropy = jp.array([0.5, 0.5]), jp.array([1.0, 2.0])
    # policy: max(-1·1.5, -1·1.2) = -1.2 ; max(0.5, 0.8) = 0.8 -> mean -0.2
    # value (clipped): old 0 -> 0.2, (0.2-1)² = 0.64 > 0.25 ; old 1 -> 0.8, 0.64 > 0.25 -> 0.5·0.64 = 0.32
    # loss = -0.2 - 0.01·1.5 + 0.5·0.32 = -0.055
    loss, m = ppo_loss(new_log_prob, entropy, new_value, mb, 0.2, True, 0.01, 0.5, False)
    assert float(m["policy_loss"]) == pytest.approx(-0.2, abs=1e-6)
    assert float(m["value_loss"]) == pytest.approx(0.32, abs=1e-6)
    assert float(m["entropy"]) == pytest.approx(1.5)
    assert float(loss) == pytest.approx(-0.055, abs=1e-6)
    # approx_kl = mean((r - 1) - log r) = ((0.5 - ln 1.5) + (-0.5 - ln 0.5)) / 2
    assert float(m["approx_kl"]) == pytest.approx((0.5 - math.log(1.5) - 0.5 - math.log(0.5)) / 2, abs=1e-6)
    assert float(m["clipfrac"]) == 1.0
    # unclipped value loss: 0.5 · mean(0.25, 0.25)
    _, m = ppo_loss(new_log_prob, entropy, new_value, mb, 0.2, False, 0.01, 0.5, False)
    assert float(m["value_loss"]) == pytest.approx(0.125, abs=1e-6)
    # advantage normalization: [1, -1] -> [1, -1] / std(=1) unchanged here; scale invariance with [10, -10]
    mb10 = dict(mb, advantages=jp.array([10.0, -10.0]))
    _, m10 = ppo_loss(new_log_prob, entropy, new_value, mb10, 0.2, True, 0.01, 0.5, True)
    assert float(m10["policy_loss"]) == pytest.approx(-0.2, abs=1e-5)


def test_gaussian_log_prob_and_entropy():
    mean, std, x = jp.array([0.0, 1.0]), jp.array([1.0, 2.0]), jp.array([1.0, 1.0])
    # N(1; 0, 1): -0.5 - 0.5 ln 2π ; N(1; 1, 2): -ln 2 - 0.5 ln 2π
    expected = -0.5 - math.log(2) - math.log(2 * math.pi)
    assert float(gaussian_log_prob(mean, std, x)) == pytest.approx(expected, abs=1e-6)
    expected = 2 * (0.5 + 0.5 * math.log(2 * math.pi)) + math.log(2)  # per dim 0.5 + 0.5 ln 2π + ln σ
    assert float(gaussian_entropy(std)) == pytest.approx(expected, abs=1e-6)


def test_normalizer_matches_numpy_over_chunks():
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(5, 40, 4)).astype(np.float32)
    norm = Normalizer.create(4)
    for chunk in data:
        norm = norm.update(jp.asarray(chunk))
    flat = data.reshape(-1, 4)
    np.testing.assert_allclose(np.asarray(norm.mean), flat.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(norm.var), flat.var(0), rtol=1e-3)
    z = np.asarray(norm(jp.asarray(flat)))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)
