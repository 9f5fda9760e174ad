"""utils.rescale_actions: a checkpoint moved to another --action-scale drives the same servo targets, and resumes."""

import importlib
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from utils import rescale_actions
from utils.checkpoint import load_policy

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path) -> dict:
    return serialization.msgpack_restore(path.read_bytes())


# each verify run at its file's default scale (PPO 0.4, AMP 0.7) moved to a wider one (the actions shrink: none
# reaches the bound), and the noise floor that keeps the std in radians (0.05 at 0.4 is 0.02857 at 0.7)
@pytest.mark.parametrize("run, file, old_scale, scale, min_std", [("ppo_verify_run", "ppo_mjx", 0.4, 0.7, "0.02857"),
                                                                  ("amp_verify_run", "ppo_amp_mjx", 0.7, 1.0, "0.02")])
def test_rescaled_run_drives_the_same_targets_and_resumes(run, file, old_scale, scale, min_std, request, tmp_path,
                                                          capsys):  # fmt: skip
    module = importlib.import_module(file)
    src = request.getfixturevalue(run)[0] / "checkpoints" / "ckpt_000002.msgpack"
    out = tmp_path / "moved" / "ckpt_000002.msgpack"
    rescale_actions.main([str(src), "--action-scale", str(scale), "--out", str(out)])
    assert f"resume with --min-std {min_std} to keep" in capsys.readouterr().out
    k = old_scale / scale
    a, b = load(src), load(out)
    paths = rescale_actions.state_paths(module, src)
    leaf = lambda payload, name: np.asarray(payload["leaves"][str(paths.index(name))])  # noqa: E731
    la = module.obs_slices(module.OBS_LAYOUT)["last_action"]
    # the envs' observations: the last action in the new units, the rest as it was
    obs_a, obs_b = leaf(a, ".env_state.obs"), leaf(b, ".env_state.obs")  # (N, O)
    assert np.abs(obs_a[:, la]).max() > 0.05  # the verify run acted: the check below can fail
    np.testing.assert_allclose(obs_b[:, la], k * obs_a[:, la], rtol=1e-6)
    np.testing.assert_array_equal(np.delete(obs_b, np.r_[la], 1), np.delete(obs_a, np.r_[la], 1))
    # the same servo targets from the same state: old · a_old == new · a_new (no action is near ±1 this early)
    old, new = load_policy(src), load_policy(out)
    assert (old.args.action_scale, new.args.action_scale) == (old_scale, scale)
    act_a, act_b = old.act(obs_a), new.act(obs_b)  # (N, A)
    assert np.abs(act_a).max() < 1 and np.abs(act_a).max() > 1e-3
    np.testing.assert_allclose(scale * act_b, old_scale * act_a, rtol=1e-4, atol=1e-6)
    # the output layer, its Adam moments (second × k²) and the std
    out_layer, log_std = "['actor']['Dense_3']", "['actor']['log_std']"
    for name, factor in ((f".params{out_layer}['kernel']", k), (f".opt_state[1][0].nu{out_layer}['bias']", k * k)):
        np.testing.assert_allclose(leaf(b, name), factor * leaf(a, name), rtol=1e-6)
    np.testing.assert_allclose(leaf(b, f".params{log_std}"), leaf(a, f".params{log_std}") + np.log(k), rtol=1e-6)
    # it resumes: every array fits this file's runner state at the new scale
    args = module.parse_args(["--resume", str(out)])
    template = jax.eval_shape(module.make_train(args, module.WildRobotEnv(args))[0], jax.random.PRNGKey(0))
    module.restore_runner_state(module.read_checkpoint(out), template, out, args)
    # resuming the original at another scale without the conversion: one error line that names the tool
    args = module.parse_args(["--resume", str(src), "--action-scale", str(scale)])
    with pytest.raises(SystemExit) as e:
        module.restore_runner_state(module.read_checkpoint(src), template, src, args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    assert f"--action-scale {scale} differs from the checkpoint's {old_scale}" in err, err
    assert "utils.rescale_actions" in err, err


def test_rescaled_policy_file_and_bad_input(tmp_path, capsys):
    """A policy-only file (no runner state) converts its actor and normalizer; the shipped PPO policy's targets stay
    where its actions were inside [-1, 1]. Bad input: one error line, exit 2, nothing written."""
    src = ROOT / "assets" / "policies" / "ppo_walk_h100.msgpack"
    out = tmp_path / "wide.msgpack"
    rescale_actions.main([str(src), "--action-scale", "0.8", "--out", str(out)])
    old, new = load_policy(src), load_policy(out)
    assert "leaves" not in load(out) and new.args.action_scale == 0.8
    k = old.args.action_scale / 0.8
    la = old.module.obs_slices(old.module.OBS_LAYOUT)["last_action"]
    obs = old.obs_mean + np.sqrt(old.obs_var) * np.random.default_rng(0).standard_normal((256, len(old.obs_mean)))
    obs_new = obs.copy()
    obs_new[:, la] *= k
    act_old, act_new = old.act(obs), new.act(obs_new)
    inside = np.abs(act_old) < 1
    assert 0.5 < inside.mean() < 1  # typical observations: most actions inside, some at the bound
    np.testing.assert_allclose(0.8 * act_new[inside], old.args.action_scale * act_old[inside], rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    for argv, says in (([str(src), "--action-scale", str(old.args.action_scale)], "must be > 0 and differ from"),
                       ([str(src), "--action-scale", "-1"], "must be > 0 and differ from"),
                       ([str(src), "--action-scale", "0.7", "--out", str(out)], "exists"),
                       ([str(tmp_path / "nope.msgpack"), "--action-scale", "0.7"], "no such checkpoint")):  # fmt: skip
        before = sorted(tmp_path.iterdir())
        with pytest.raises(SystemExit) as e:
            rescale_actions.main(argv + ([] if "--out" in argv else ["--out", str(tmp_path / "new.msgpack")]))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err and says in err, err
        assert sorted(tmp_path.iterdir()) == before
