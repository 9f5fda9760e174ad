"""Shared fixtures: runs of the training files as a user would start them, made once per test session."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def run_script(script: str, *argv: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGV...` from `cwd` (so runs/ lands there), output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / script), *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(cwd: Path) -> Path:
    runs = sorted((cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="session")
def ppo_verify_run(tmp_path_factory):
    """`python ppo_mjx.py --verify`: the run folder (2 iterations, a checkpoint after each)."""
    cwd = tmp_path_factory.mktemp("ppo_verify")
    proc = run_script("ppo_mjx.py", "--verify", "--exp-name", "verify", cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return only_run_dir(cwd), proc


@pytest.fixture(scope="session")
def amp_verify_run(tmp_path_factory):
    """`python ppo_amp_mjx.py --verify` with the default AMP weights: the run folder."""
    cwd = tmp_path_factory.mktemp("amp_verify")
    proc = run_script("ppo_amp_mjx.py", "--verify", "--exp-name", "verify", cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return only_run_dir(cwd), proc
