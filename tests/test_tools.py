"""The tools on a `ppo_mjx.py --verify` checkpoint: evaluate (MJX + MuJoCo), obs parity, ONNX, video, benchmark,
and bad input. The expensive ones run in-process (one MJX env build and compile each); the CLIs' exit codes and
messages are checked as subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from flax import serialization

from conftest import ROOT
from utils import evaluate, export_onnx
from utils.checkpoint import CheckpointError, load_policy


def run_module(module: str, *argv: str, cwd) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGV...` from `cwd`, as a user runs the tools."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    env |= dict(PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))  # headless, nothing exported
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The failed CLI's stderr, which must be exactly one `error: ...` line (exit code 2: bad input)."""
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def eval_report(ppo_verify_run, tmp_path_factory):
    """evaluate on the verify run folder: 2 commands × 1 episode × 1 s with a push, and the rough scenario (20 s on
    scene_rough), MJX and MuJoCo."""
    run_dir, _ = ppo_verify_run
    out = tmp_path_factory.mktemp("eval") / "report.json"
    argv = [str(run_dir), "--scenario", "commands", "rough", "--episodes", "1", "--seconds", "1", "--commands",
            "stand", "forward_0.3", "--mujoco", "--out", str(out)]  # fmt: skip
    returned = evaluate.main(argv)
    return json.loads(out.read_text()), returned


def test_evaluate_writes_complete_report_in_both_simulators(eval_report, ppo_verify_run):
    report, returned = eval_report
    assert report == json.loads(json.dumps(returned))  # the file is the whole report
    assert report["checkpoint"].endswith("ckpt_000002.msgpack")  # a run folder means its latest checkpoint
    assert set(report["scenarios"]) == {"commands", "rough"}
    result = report["scenarios"]["commands"]
    assert result["settings"]["episodes"] == 1 and result["settings"]["seconds"] == pytest.approx(1.0)
    assert set(result["simulators"]) == {"mjx", "mujoco"} and "bar" not in result
    for sim, rows in result["simulators"].items():
        assert set(rows) == {"stand", "forward_0.3", "overall"}, sim
        for name, row in rows.items():
            assert row["episodes"] == (2 if name == "overall" else 1)
            assert set(evaluate.METRICS) <= set(row)
            # a barely trained policy stands for 1 s: every metric that needs no swing is defined
            for k in ("falls", "distance_m", "vel_error_mps", "yaw_error_radps", "torque_nm", "power_w", "flight_pct",
                      "push_recovery"):  # fmt: skip
                assert row[k] is not None and np.isfinite(row[k]), (sim, name, k)
            assert 0 <= row["torque_nm"] < 4.0 and 0 <= row["flight_pct"] <= 100 and 0 <= row["push_recovery"] <= 1
    # the same policy from the same start in both simulators stays close over 1 s of standing
    mjx_row, mj_row = result["simulators"]["mjx"]["stand"], result["simulators"]["mujoco"]["stand"]
    assert abs(mjx_row["torque_nm"] - mj_row["torque_nm"]) < 0.2


def test_rough_scenario_runs_on_the_rough_scene(eval_report):
    """20 s at 0.3 m/s on scene_rough in both simulators, with its bar; foot heights are above the bumpy ground."""
    rough = eval_report[0]["scenarios"]["rough"]
    assert rough["settings"]["scene"] == "assets/scene_rough.xml" and rough["settings"]["seconds"] == pytest.approx(20)
    assert rough["settings"]["commands"] == {"forward_0.3": [0.3, 0.0, 0.0]} and rough["settings"]["push_starts_s"] == []
    for sim, (text, met) in rough["bar"].items():
        row = rough["simulators"][sim]["overall"]
        assert text == "no falls" and met == (row["falls"] == 0)
        assert row["push_recovery"] is None and row["distance_m"] >= 0


def test_numpy_obs_equals_mjx_actor_obs(eval_report):
    """MujocoRunner.observe_data (numpy, from MjData) == WildRobotEnv.observe (MJX) at the MJX rollout's last states."""
    for result in eval_report[0]["scenarios"].values():  # flat and rough ground
        assert result["obs_max_abs_diff_numpy_vs_mjx"] is not None
        assert result["obs_max_abs_diff_numpy_vs_mjx"] < 1e-5


def test_numpy_obs_layout(ppo_verify_run):
    """At `home`, at rest: gravity (0, 0, -1), the command, zero joint offsets, phase (cos, sin) = (1, 0)."""
    policy = load_policy(ppo_verify_run[0])
    runner = evaluate.MujocoRunner(policy)
    d = runner.data
    d.qpos[:], d.qvel[:] = runner.home, 0.0
    import mujoco

    mujoco.mj_forward(runner.model, d)
    obs = runner.observe_data(d, np.array([0.3, -0.1, 0.5]), np.full(11, 0.25), 0.0)
    at = policy.module.obs_slices(policy.module.OBS_LAYOUT)
    assert obs.shape == (44,) and at["gravity"] == slice(0, 3) and at["phase"] == slice(42, 44)
    np.testing.assert_allclose(obs[at["gravity"]], [0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(obs[at["command"]], [0.3, -0.1, 0.5], atol=1e-7)
    np.testing.assert_allclose(obs[at["joint_pos"]], 0.0, atol=1e-7)
    np.testing.assert_allclose(obs[at["joint_vel"]], 0.0, atol=1e-7)
    np.testing.assert_allclose(obs[at["last_action"]], 0.25)
    np.testing.assert_allclose(obs[at["phase"]], [1.0, 0.0])


def test_numpy_clock_follows_the_policys_gait_clock(ppo_verify_run):
    """MujocoRunner advances the clock like WildRobotEnv.step: 2π · gait_frequency(vx) · dt per control step, at the
    --gait-clock the policy was trained with."""
    from dataclasses import replace
    from types import SimpleNamespace

    policy = load_policy(ppo_verify_run[0])
    assert policy.args.gait_clock == "fixed"
    for clock, vx, hz in (("fixed", 0.5, 1.5), ("command", 0.5, 0.5 / 0.27), ("command", -0.2, 1.25)):
        runner = evaluate.MujocoRunner(replace(policy, args=replace(policy.args, gait_clock=clock)))
        runner.reset(np.random.default_rng(0), (vx, 0.0, 0.0))
        runner.step()
        runner.step()
        assert runner.phase == pytest.approx(2 * 2 * np.pi * hz * 0.02, rel=1e-5), (clock, vx)
    # an AMP policy trained with --stand-clock stop: the clock stands still on a zero command only
    stop = SimpleNamespace(**vars(policy.args), stand_clock="stop")  # (PPO's Args has no such field: its clock runs)
    for command, moves in (((0.0, 0.0, 0.0), False), ((0.0, 0.0, 0.3), True)):
        runner = evaluate.MujocoRunner(replace(policy, args=stop))
        runner.reset(np.random.default_rng(0), command)
        runner.step()
        assert runner.phase == pytest.approx(2 * np.pi * 1.5 * 0.02 * moves, abs=1e-9), command


def test_shipped_policies_load_and_walk_a_second():
    """Every policy in assets/policies loads for the tools (its training file's Actor and settings) and walks 1 s at
    0.3 m/s in plain MuJoCo without falling."""
    shipped = sorted((ROOT / "assets" / "policies").glob("*.msgpack"))
    assert {"ppo_walk_h100.msgpack", "amp_walk.msgpack"} <= {p.name for p in shipped}
    for path in shipped:
        policy = load_policy(path)
        runner = evaluate.MujocoRunner(policy)
        runner.reset(np.random.default_rng(0), (0.3, 0.0, 0.0))
        start = runner.data.qpos[0]
        assert not any(runner.step() for _ in range(50)), path.name
        assert runner.data.qpos[0] > start + 0.05, path.name  # it moved forward
    amp_walk = load_policy(ROOT / "assets" / "policies" / "amp_walk.msgpack").args  # session 22's: stands still
    assert amp_walk.shaping_terms == ("feet_phase", "feet_height", "stand_motion") and amp_walk.stand_clock == "stop"
    assert amp_walk.action_scale == 0.7  # the knee reaches the clips' swing (the default since session 22)
    assert amp_walk.motion_file == "assets/motions/wildrobot_walk_lean.npz"  # its reference ships
    assert (ROOT / amp_walk.motion_file).is_file()


def test_onnx_export_parity_and_latency(ppo_verify_run, tmp_path, capsys):
    run_dir, _ = ppo_verify_run
    out = tmp_path / "policy.onnx"
    result = export_onnx.main([str(run_dir), "--out", str(out), "--latency-runs", "50"])
    printed = capsys.readouterr().out
    assert result["max_abs_diff"] < 1e-5 and "max abs diff" in printed and "median" in printed
    assert result["latency_us"] > 0
    import onnxruntime as ort

    policy = load_policy(run_dir)
    obs = export_onnx.random_observations(policy, 3, seed=5)
    action = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["action"], {"obs": obs})[0]
    assert action.shape == (3, 11)
    np.testing.assert_allclose(action, policy.act(obs), atol=1e-5)  # the numpy path of the tools agrees too
    assert not list(tmp_path.glob(".*tmp*"))


def test_video_has_frames(ppo_verify_run, tmp_path):
    run_dir, _ = ppo_verify_run
    out = tmp_path / "walk.mp4"
    proc = run_module("utils.video", str(run_dir), "--out", str(out), "--seconds", "0.5", "--width", "128",
                      "--height", "96", "--gif", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = iio.imread(out)
    assert frames.shape == (26, 96, 128, 3)  # reset + 25 control steps of 0.02 s
    assert frames.std() > 1.0  # not a blank image
    assert iio.imread(tmp_path / "walk.gif").shape == (13, 48, 64, 3)  # every second frame, half size


@pytest.mark.slow
def test_benchmark_writes_table_and_plots(ppo_verify_run, tmp_path):
    # ppo_mjx.py --verify's sizes: its compiled programs come from the session's compilation cache (ppo_verify_run)
    variant = ("ppo_mjx.py:--num-steps 8 --num-minibatches 2 --update-epochs 2 --eval-episodes 2 --episode-seconds 0.2"
               " --checkpoint-interval 1 --critic-warmup-iterations 1")  # fmt: skip
    brax = "brax:" + variant.split(":", 1)[1].split(" --checkpoint-interval")[0]  # Brax's PPO on the same env
    proc = run_module("utils.benchmark", "--variants", variant, brax, "--seeds", "1", "--num-envs", "4", "--iterations",
                      "2", "--out", "bench", "--min-time", "0.1", "--control-steps", "5", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "| variant | num_envs | seeds | SPS | compile (s) | return @ 64 steps |" in table
    for name in ("ppo_mjx.py:", "brax:"):  # both in one table
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:3] == ["4", "1"] and float(cells[3].replace(",", "")) > 0 and float(cells[4]) > 0
        assert cells[-1].endswith("%")
    for png in ("return_vs_steps.png", "return_vs_time.png"):
        assert iio.imread(tmp_path / "bench" / png).ndim == 3
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [r["steps"] for r in results["runs"]] == [[32, 64], [32, 64]] and "4" in results["ceilings"]
    assert (tmp_path / "runs").is_dir()  # the training file ran as a user runs it, runs/ under the cwd
    # Brax's run: its episodes were cut by our env's time limit (0.2 s = 10 steps) and reached Brax's episode logger
    # as truncations; its final policy went through ppo_mjx.py's own evaluation
    brax_run = Path(results["runs"][1]["run_dir"])
    assert results["runs"][1]["variant"] == brax and brax_run.name.startswith("bench1_brax_ppo__1__")
    assert results["runs"][1]["ret"][-1] > 0 and json.loads((tmp_path / brax_run / "eval.json").read_text()).keys() == {
        "eval/episodic_return", "eval/falls", "eval/vel_error"}
    lengths = [row.split(",") for row in (tmp_path / brax_run / "metrics.csv").read_text().splitlines()]
    assert float(lengths[-1][lengths[0].index("charts/episodic_length")]) == 10.0


def test_brax_bad_input_one_clear_line(tmp_path):
    # Brax missing (a module named brax that fails to import stands in): the line says how to install it
    shadow = tmp_path / "shadow" / "brax"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('this stands in for a missing Brax')")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    env |= dict(JAX_PLATFORMS="cpu", PYTHONPATH=f"{shadow.parent}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "utils.brax_ppo", "--verify"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "Brax is not installed" in error_line(proc) and "pip install brax==0.14.2" in proc.stderr
    # Brax's minibatches are whole unrolls: the envs must split into them
    proc = run_module("utils.brax_ppo", "--num-envs", "6", "--num-minibatches", "4", cwd=tmp_path)
    assert "brax: --num-envs 6 must be divisible by --num-minibatches 4" in error_line(proc)
    proc = run_module("utils.brax_ppo", "--critic-warmup-iterations", "1", cwd=tmp_path)  # no Brax meaning: refused
    assert "brax: --critic-warmup-iterations is ppo_mjx.py's only" in error_line(proc)
    assert not (tmp_path / "runs").exists()


def test_bad_input_one_clear_line(ppo_verify_run, tmp_path, capsys):
    run_dir, _ = ppo_verify_run
    # missing checkpoint, as a user meets it
    proc = run_module("utils.evaluate", str(tmp_path / "nope.msgpack"), "--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert "nope.msgpack: no such checkpoint file or run folder" in error_line(proc)
    assert not (tmp_path / "r.json").exists()
    # a checkpoint of another robot (its meta says 50 observations)
    payload = serialization.msgpack_restore((run_dir / "checkpoints" / "ckpt_000002.msgpack").read_bytes())
    payload["meta"]["obs_size"] = 50
    foreign = tmp_path / "foreign.msgpack"
    foreign.write_bytes(serialization.msgpack_serialize(payload))
    proc = run_module("utils.export_onnx", str(foreign), "--out", str(tmp_path / "p.onnx"), cwd=tmp_path)
    assert "another robot: obs/action sizes (50, 11)" in error_line(proc)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))
    # not a checkpoint; a folder without checkpoints; an unknown flag value
    (tmp_path / "junk.msgpack").write_bytes(b"\x00 not msgpack")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_policy(tmp_path / "junk.msgpack")
    with pytest.raises(CheckpointError, match="a folder without checkpoints"):
        load_policy(tmp_path)
    for argv, message in ((["--commands", "jump"], "error: --commands: 'jump' is not a command name"),
                          (["--scenario", "rough", "dance"], "error: --scenario: unknown dance"),
                          (["--scenario", "rough", "--seconds", "3"], "error: --seconds set(s) the `commands`")):
        with pytest.raises(SystemExit) as e:
            evaluate.main([str(run_dir), *argv, "--out", str(tmp_path / "r.json")])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "r.json").exists()
    proc = run_module("utils.benchmark", "--variants", "nope.py", "--out", "b", cwd=tmp_path)
    assert "no training file nope.py" in error_line(proc) and not (tmp_path / "b").exists()


def test_policy_only_checkpoint_loads(ppo_verify_run, tmp_path):
    """Checkpoints brought back from a GPU may hold only meta + policy (no runner-state leaves)."""
    payload = serialization.msgpack_restore((ppo_verify_run[0] / "checkpoints" / "ckpt_000002.msgpack").read_bytes())
    small = tmp_path / "ckpt_000002.msgpack"
    small.write_bytes(serialization.msgpack_serialize({"meta": payload["meta"], "policy": payload["policy"]}))
    policy = load_policy(small)
    obs = np.random.default_rng(0).normal(size=(5, 44)).astype(np.float32)
    np.testing.assert_allclose(policy.act(obs), np.asarray(policy.act_jax(obs)), atol=1e-5)


def test_amp_checkpoint_loads_and_exports(amp_verify_run, tmp_path):
    """A `ppo_amp_mjx.py` checkpoint: the tools use that file's Actor and env; the ONNX export matches it."""
    run_dir, _ = amp_verify_run
    policy = load_policy(run_dir)
    assert policy.meta["algo"] == "amp" and policy.module.__name__ == "ppo_amp_mjx"
    assert policy.args.shaping_terms == ("feet_phase",)  # the fixture's tuple setting, a tuple again
    result = export_onnx.main([str(run_dir), "--out", str(tmp_path / "amp.onnx"), "--latency-runs", "10"])
    assert result["max_abs_diff"] < 1e-5
    runner = evaluate.MujocoRunner(policy)
    runner.reset(np.random.default_rng(0), (0.3, 0.0, 0.0))
    assert isinstance(runner.step(), bool) and runner.observe().shape == (44,)
