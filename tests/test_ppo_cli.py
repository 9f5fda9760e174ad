"""ppo_mjx.py as a user runs it: --verify, resume == uninterrupted, --config, bad input, no dead flags."""

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from flax import serialization

import ppo_mjx
from conftest import ROOT, assert_resume_matches, run_script
from utils import runs
from utils.checkpoint import saved_settings


def load(path: Path) -> dict:
    return serialization.msgpack_restore(path.read_bytes())


def test_verify_run_writes_everything(ppo_verify_run):
    run_dir, proc = ppo_verify_run
    assert "verify: checkpoint round trip ok" in proc.stdout
    assert "compiled in" in proc.stdout and "eval: eval/episodic_return" in proc.stdout
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"ckpt_000001.msgpack", "ckpt_000002.msgpack"}
    assert list(run_dir.glob("events.out.tfevents.*"))
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for name in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                 "charts/nan_resets", "losses/policy_loss", "losses/value_loss", "losses/entropy",
                 "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "reward/tracking_lin_vel"):
        assert name in header, name
    assert len(rows) == 3  # header + 2 iterations
    saved = yaml.safe_load((run_dir / "args.yaml").read_text())
    assert saved["num_envs"] == 4 and saved["batch_size"] == 32 and saved["num_iterations"] == 2
    ckpt = load(run_dir / "checkpoints" / "ckpt_000002.msgpack")
    assert ckpt["meta"]["algo"] == "ppo" and ckpt["meta"]["global_step"] == 64
    assert "obs_norm" in ckpt["policy"] and "actor" in ckpt["policy"]
    # --capture-video in a shell without MUJOCO_GL or a display: the first evaluation episode, 0.2 s at 50 Hz
    frames = iio.imread(run_dir / "videos" / "final.mp4")
    assert frames.shape[0] == 10 and frames.std() > 1.0 and "videos/final.mp4" in proc.stdout


def test_resume_matches_uninterrupted(ppo_verify_run, tmp_path):
    copy = assert_resume_matches("ppo_mjx.py", ppo_verify_run[0], tmp_path)
    assert len((copy / "metrics.csv").read_text().splitlines()) == 4  # appended to the same run's log


def test_config_reproduces_and_flags_override(ppo_verify_run):
    run_dir, _ = ppo_verify_run
    args = ppo_mjx.parse_args(["--config", str(run_dir / "args.yaml")])
    saved = saved_settings(yaml.safe_load((run_dir / "args.yaml").read_text()))  # YAML lists -> Args' tuples
    assert args.reward_scales == ("feet_slip=-0.3",)  # a tuple flag of the fixture's comes back
    for f in fields(ppo_mjx.Args):
        if f.name not in ("config", "verify", "resume"):
            assert getattr(args, f.name) == saved[f.name], f.name
    args = ppo_mjx.parse_args(["--config", str(run_dir / "args.yaml"), "--seed", "5", "--num-envs", "8"])
    assert args.seed == 5 and args.num_envs == 8 and args.batch_size == 8 * saved["num_steps"]


@pytest.mark.parametrize("argv, message", [
    (["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "2"], "(15) is not divisible by --num-minibatches"),
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--update-epochs", "-1"], "--update-epochs must be positive"),
    (["--num-iterations", "0"], "--num-iterations must be positive"),
    (["--total-timesteps", "10"], "--total-timesteps (10) is smaller than one batch"),
    (["--config", "missing.yaml"], "--config missing.yaml: cannot read"),
    (["--resume", "missing.msgpack"], "--resume missing.msgpack: no such file"),
    (["--scene", "nope.xml"], "--scene nope.xml: no such file"),
    (["--num-devices", "2"], "--num-devices 2: 1 process(es) with 1 cpu device(s) each"),
    (["--num-devices", "0"], "--num-devices 0: 1 process(es)"),
    (["--reward-scales", "feet_slip=-1", "feet=2"], "--reward-scales feet=2: expected NAME=VALUE with NAME one of "
                                                    "tracking_lin_vel, tracking_ang_vel, "),
])  # fmt: skip
def test_bad_flags_fail_before_compile(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        ppo_mjx.parse_args(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_files_one_line_nonzero_exit_nothing_written(ppo_verify_run, tmp_path, monkeypatch, capsys):
    run_dir, _ = ppo_verify_run
    (tmp_path / "corrupt.yaml").write_text("num_envs: [1, 2\n")
    (tmp_path / "unknown.yaml").write_text("num_envs: 4\nbogus_flag: 1\n")
    (tmp_path / "garbage.msgpack").write_bytes(b"\x00not a checkpoint" * 10)
    ckpt = load(run_dir / "checkpoints" / "ckpt_000001.msgpack")
    ckpt["meta"]["obs_size"] = 99  # a checkpoint of an env with another observation
    (tmp_path / "other.msgpack").write_bytes(serialization.msgpack_serialize(ckpt))
    cases = [
        (["--config", "corrupt.yaml"], "error: --config corrupt.yaml: cannot read"),
        (["--config", "unknown.yaml"], "error: --config unknown.yaml: unknown settings bogus_flag"),
        (["--resume", "garbage.msgpack"], "error: --resume garbage.msgpack: not a readable checkpoint"),
        (["--resume", "other.msgpack"], "do not match this env's (44, 66, 11)"),
    ]
    monkeypatch.chdir(tmp_path)
    for argv, message in cases:  # in-process: what parse_args stops with
        with pytest.raises(SystemExit) as e:
            ppo_mjx.parse_args(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and "\n" not in err, err
    # a checkpoint of a runner state with another number of arrays (an older version of the file): nothing is guessed
    n = len(ckpt["leaves"])
    with pytest.raises(SystemExit) as e:
        runs.restore_leaves(ckpt, [np.zeros(1)] * (n + 1), [False] * (n + 1), "old.msgpack")
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and f"--resume old.msgpack: {n} arrays where this run has {n + 1}" in err, err
    # an array of another shape: the settings changed since the checkpoint are named, not guessed at
    leaves = [np.zeros(np.shape(ckpt["leaves"][str(i)])) for i in range(n)]
    leaves[-1] = np.zeros((7,) + leaves[-1].shape)
    args = argparse.Namespace(**ckpt["meta"]["args"] | dict(num_envs=7, num_iterations=9, resume="x.msgpack"))
    saved = ckpt["meta"]["args"]["num_envs"]
    for given, says in ((args, f"settings changed since the checkpoint: --num-envs {saved} -> 7, --num-iterations "),
                        (None, "another version of the file?")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            runs.restore_leaves(ckpt, leaves, [False] * n, "x.msgpack", given)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and f"--resume x.msgpack: array {n - 1} does not fit" in err and says in err, err
        assert "--resume" not in err.partition("since the checkpoint")[2], err  # per-invocation settings: not named
    # and once as a user runs it: exit code 2, one line, no traceback
    proc = run_script("ppo_mjx.py", *cases[2][0], cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(cases[2][1]), proc.stderr
    assert not (tmp_path / "runs").exists()


def test_every_args_field_is_read():
    """Read in the file or in the run plumbing it hands its Args to (utils/runs.py: the Logger reads the W&B flags)."""
    tree = ast.parse((ROOT / "ppo_mjx.py").read_text() + (ROOT / "utils" / "runs.py").read_text())
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "args"}  # fmt: skip
    read |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Attribute) and node.value.attr == "args"}  # self.args.x in the env
    unread = [f.name for f in fields(ppo_mjx.Args) if f.name not in read]
    assert not unread, f"Args fields never read: {unread}"
