"""utils.compare_gaits: the touchdown counter, the reference's step frequency, the style distance, the CLI.

Two compiled MJX rollouts in all (the end-to-end run on the shipped policy; one more to check that policies share
it); the rest is numpy on the reference clips."""

import json
from dataclasses import replace

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from test_tools import error_line, run_module
from utils import compare_gaits as cg
from utils import evaluate
from utils.checkpoint import load_policy
from utils.cli import COMMANDS
from utils.evaluate import rollout_mjx
from utils.gait import GaitParams
from utils.motions import load_motions
from utils.robot import JOINT_NAMES, SCENE_FLAT, WALK_MOTIONS, load_model

SHIPPED_POLICY = ROOT / "assets" / "policies" / "ppo_walk_h100.msgpack"


@pytest.fixture(scope="module")
def motions():
    return load_motions(WALK_MOTIONS)


@pytest.fixture(scope="module")
def reference(motions):
    """The windows (all clips, first 2 s dropped) and their measures."""
    windows = cg.reference_windows(motions, list(motions.clip_names), 2.0, load_model(SCENE_FLAT))
    return windows, cg.measure(windows, 1.0 / motions.fps, dict(zip(motions.clip_names, motions.clip_commands)))


def test_feature_names_follow_amp_features():
    """41 names, in amp_features' order: spot-check one feature of each group against the state it comes from."""
    rng = np.random.default_rng(0)
    qpos = np.concatenate([rng.normal(size=3), [1, 0, 0, 0], rng.normal(size=11)]).astype(np.float32)  # upright
    qvel, feet = rng.normal(size=17).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    feats = np.asarray(cg.amp_features(jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(feet)))
    assert feats.shape == (len(cg.FEATURE_NAMES),) == (41,) == cg.STD_FLOOR.shape
    assert len(set(cg.FEATURE_NAMES)) == 41
    f = dict(zip(cg.FEATURE_NAMES, feats))
    # identity orientation: tangent = x axis, normal = z axis, velocities and feet unrotated
    expected = dict(root_z=qpos[2], tangent_x=1.0, normal_z=1.0, normal_x=0.0, lin_vel_y=qvel[1], ang_vel_z=qvel[5],
                    left_knee_pos=qpos[7 + 2], waist_yaw_pos=qpos[7 + 10], right_hip_roll_vel=qvel[6 + 6],
                    left_foot_x=feet[0, 0] - qpos[0], right_foot_z=feet[1, 2] - qpos[2])  # fmt: skip
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, abs=1e-5), name


def test_policy_colours_are_distinct_and_never_the_reference_grey():
    """Eight policies once got tab10's grey, the reference's colour in the plot; 18 are told apart before repeating."""
    colours = cg.policy_colors(18)
    assert len(set(colours)) == 18
    assert not any(r == g == b for r, g, b in colours)
    assert cg.policy_colors(19)[18] == colours[0]


def test_touchdown_counter_on_a_synthetic_gait():
    """Left foot 0.4 s down / 0.4 s up, right foot in antiphase: 2.5 steps/s at 50 Hz, whatever the window's phase;
    a 1-frame lift in stance is flicker, not a step."""
    dt, period = 0.02, 40  # frames per stride (two steps)
    t = np.arange(1000)
    left = (t % period) < 20
    contact = np.stack([left, ~left], axis=-1)  # (1000, 2)
    flicker = contact.copy()
    flicker[5, 0] = False  # left stance is frames 0-19: frame 5 in the air, frame 6 down again
    assert len(cg.touchdowns(flicker)) == len(cg.touchdowns(contact))
    assert len(cg.touchdowns(flicker, min_air=1)) == len(cg.touchdowns(contact)) + 1
    for start in (0, 7, 13, 31):  # windows of 6 s starting anywhere in the stride
        assert cg.step_frequency([contact[start : start + 300]], dt) == pytest.approx(2.5)
    assert cg.step_frequency([np.ones((300, 2), bool)], dt) == 0.0  # standing
    few = np.ones((300, 2), bool)
    few[100:110, 0] = False  # one step in 6 s: counted over the whole window
    assert cg.step_frequency([few], dt) == pytest.approx(1 / 6)
    # a foot in the air at the window's start lands after 3 frames: a step
    assert cg.touchdowns(np.array([[0, 1], [0, 1], [0, 1], [1, 1]], bool)).tolist() == [3]


def test_reference_step_frequency_stride_and_clearance_match_the_generator(reference, motions):
    """The foot-site contact of the kinematic clips gives the generator's step time: 0.4 s, shorter at speed; each
    swing carries the foot two steps of |v| · step time, and lifts the sole to about the generator's apex. The 2 s
    means of the pelvis velocity follow the command; its per-frame velocity sways off it by more than 0.1 m/s."""
    _, ref = reference
    p = GaitParams()
    assert ref["step_freq"]["stand"] == 0.0 and ref["clearance"]["stand"] is None is ref["stride"]["stand"]
    for name, (vx, vy, _) in zip(motions.clip_names, motions.clip_commands):
        if name == "stand":
            continue
        step_time = np.clip(p.max_step / max(abs(vx), 1e-9), p.min_step_time, p.step_time)  # as utils.gait.plan
        assert 1.5 < ref["step_freq"][name] < 4.0, name
        assert ref["step_freq"][name] == pytest.approx(1 / step_time, abs=0.05), name
        if "turn" not in name:  # turning in place: the feet pivot, 2.6 cm
            assert ref["stride"][name] == pytest.approx(2 * np.hypot(vx, vy) * step_time, abs=0.005), name
        assert p.clearance - 0.006 < ref["clearance"][name] < p.clearance + 0.001, name
        # the pelvis sways sideways with every step (the LIPM's centre of mass over each stance foot), on the command
        assert ref["vel_error"][name] > 0.1 and ref["vel_error_2s"][name] < min(0.05, ref["vel_error"][name] / 4), name
    assert ref["vel_error"]["stand"] < 1e-3 and ref["vel_error_2s"]["stand"] < 1e-3


def test_swing_measures_on_a_synthetic_swing():
    """Two swings of the left foot: a 3 cm and a 5 cm apex, 0.2 m and 0.1 m forward; a swing already in the air at
    the window's start and one not landed by its end are left out; a 1-frame blip is not a swing."""
    n = 60
    contact, sole_z, feet = np.ones((n, 2), bool), np.zeros((n, 2)), np.zeros((n, 2, 3))
    contact[:4, 0] = False  # in the air from the start: left out
    sole_z[:4, 0] = 0.09
    for (a, b), apex, dx in (((10, 20), 0.03, 0.2), ((30, 40), 0.05, 0.1)):
        contact[a:b, 0] = False
        sole_z[a:b, 0] = apex * np.sin(np.linspace(0, np.pi, b - a + 2)[1:-1])
        feet[a:, 0, 0] += dx * np.minimum(1.0, (np.arange(a, n) - a + 1) / (b - a))  # lands at frame b
    contact[45, 1] = False  # a blip of the right foot
    contact[55:, 0] = False  # lifts off, never lands: left out
    sole_z[55:, 0] = 0.2
    clearance, stride = cg.swing_measures([dict(contact=contact, sole_z=sole_z, feet=feet)])
    assert clearance == pytest.approx((0.03 * np.sin(5 * np.pi / 11) + 0.05 * np.sin(5 * np.pi / 11)) / 2)
    assert stride == pytest.approx(0.15)
    assert cg.swing_measures([dict(contact=np.ones((n, 2), bool), sole_z=sole_z, feet=feet)]) == (None, None)


def test_reference_against_itself_and_a_shifted_copy(reference):
    """Itself: style distance 0. A copy with the left knee bent 0.1 rad more: only that feature moves, by W1 = 0.1
    (a shift's Wasserstein-1 distance is the shift) over the reference's knee std."""
    windows, ref = reference
    commands = {n: COMMANDS[n] for n in windows}
    again = cg.measure(windows, 0.02, commands)
    assert cg.style_distance(again["features"], ref["features"])[0] == 0.0
    assert again["step_freq"] == ref["step_freq"] and again["joints"] == ref["joints"]
    knee = 7 + JOINT_NAMES.index("left_knee")
    bent = {n: [w | dict(qpos=w["qpos"] + 0.1 * (np.arange(18) == knee)) for w in ws] for n, ws in windows.items()}
    dist, per_feature = cg.style_distance(cg.measure(bent, 0.02, commands)["features"], ref["features"])
    i = cg.FEATURE_NAMES.index("left_knee_pos")
    std = ref["features"][:, i].std()
    assert per_feature[i] == pytest.approx(0.1 / std, rel=1e-3) and std > cg.STD_FLOOR[i]
    assert np.delete(per_feature, i).max() < 1e-3  # the root and the feet come from the unchanged qpos and feet
    assert dist == pytest.approx(per_feature[i] / 41, rel=1e-2)


def test_missing_checkpoint_exits_2_with_one_line(tmp_path):
    proc = run_module("utils.compare_gaits", str(tmp_path / "nope.msgpack"), "--out", str(tmp_path / "g.png"),
                      "--json", str(tmp_path / "g.json"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "nope.msgpack: no such checkpoint file or run folder" in error_line(proc)
    assert not list(tmp_path.iterdir())


def test_bad_flags_exit_2(tmp_path, capsys):
    for argv, message in ((["--clips", "moonwalk"], "--clips: unknown moonwalk"),
                          (["--motion-file", str(tmp_path / "none.npz")], "none.npz: missing file"),
                          (["--labels", "a", "b"], "--labels: need 1 distinct labels")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cg.main([str(SHIPPED_POLICY), *argv, "--out", str(tmp_path / "g.png")])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_end_to_end_on_the_shipped_policy(tmp_path, reference, capsys):
    """2 commands × 1 episode × 3 s (the first second dropped): the table, the JSON and a readable PNG (in-process:
    test_missing_checkpoint_exits_2_with_one_line runs the CLI as a user does)."""
    out, js = tmp_path / "figs" / "gait.png", tmp_path / "gait.json"
    cg.main([str(SHIPPED_POLICY), "--clips", "stand", "forward_0.3", "--episodes", "1", "--seconds", "3", "--skip", "1",
             "--out", str(out), "--json", str(js)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "steps/s" in printed and "most different features" in printed
    report = json.loads(js.read_text())
    assert report["feature_names"] == list(cg.FEATURE_NAMES)
    assert report["reference"]["step_freq"] == {"stand": 0.0, "forward_0.3": pytest.approx(2.5)}
    assert report["reference"]["stride"] == {"stand": None, "forward_0.3": pytest.approx(0.24, abs=0.01)}  # start-up
    assert "clearance cm" in printed and "stride cm" in printed and "vel err 2 s cm/s" in printed
    assert set(report["reference"]["vel_error_2s"]) == {"stand", "forward_0.3"}
    pol = report["policies"]["ppo_walk_h100"]
    assert pol["falls"] == {"stand": 0, "forward_0.3": 0, "overall": 0} and pol["episodes"] == 2
    assert pol["step_freq"]["stand"] < 1.0 and 1.5 < pol["step_freq"]["forward_0.3"] < 4.0  # it stands, it walks
    assert 0.01 < pol["clearance"]["forward_0.3"] < 0.1 and 0.05 < pol["stride"]["forward_0.3"] < 0.5
    assert 0.0 < pol["style_distance"] < 5.0 and len(pol["style_top"]) == 5
    assert set(pol["style_top"]) <= set(cg.FEATURE_NAMES) and min(pol["style_top"].values()) > 0
    assert set(pol["joints"]) == {"stand", "forward_0.3", "overall"}
    assert set(pol["joints"]["overall"]) == set(JOINT_NAMES) and 0 <= pol["range_diff"]["mean"] < 1.0
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 500 and image.std() > 10
    assert not list(tmp_path.rglob(".*tmp*"))


@pytest.mark.slow
def test_policies_of_one_shape_share_the_compiled_rollout(motions, capsys, monkeypatch):
    """The weights are an input of the compiled MJX rollout: a second policy of the same shape, from another run (its
    name, seed and length differ), reuses the compile and rolls out exactly what a compile of its own gives (the CLI
    test's shapes: the first rollout reuses its compile)."""
    shipped = load_policy(SHIPPED_POLICY)
    run = replace(shipped.args, exp_name="other", seed=7, num_iterations=shipped.args.num_iterations + 1)
    other = replace(shipped, actor_params=jax.tree.map(lambda w: 1.1 * np.asarray(w), shipped.actor_params), args=run)
    cmds = np.array([motions.clip_commands[motions.clip_names.index(n)] for n in ("stand", "forward_0.3")], np.float32)
    first = rollout_mjx(shipped, cmds, None, 150)
    compiled = dict(evaluate._ROLLOUTS)
    capsys.readouterr()
    shared = rollout_mjx(other, cmds, None, 150)
    assert evaluate._ROLLOUTS == compiled and "compiling" not in capsys.readouterr().out  # no second compile
    assert not np.allclose(shared["qpos"], first["qpos"])  # the other weights were used ...
    monkeypatch.setattr(evaluate, "_ROLLOUTS", {})
    own = rollout_mjx(other, cmds, None, 150)  # ... exactly as if compiled in
    assert "compiling" in capsys.readouterr().out
    for k in ("qpos", "qvel", "contact", "valid"):
        np.testing.assert_array_equal(shared[k], own[k])
