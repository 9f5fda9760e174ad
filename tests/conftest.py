"""Shared fixtures: runs of the training files as a user would start them, made once per test session."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Before jax is imported (flax imports it). One JAX compilation cache for this test session, shared by the in-process
# tests, the xdist workers (they inherit this environment) and every subprocess: a resumed run, a second --verify or a
# tool compiling what another test compiled already loads it. Fresh per session: every suite run compiles cold.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="wildrobot-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the suite is CPU-only; several workers must not share one GPU
# XLA's LLVM backend at optimization level 0: the same XLA programs (HLO passes unchanged), compiled with less machine
# code optimization. The suite's time is compile time (its rollouts are tiny): 5:59 -> 4:50 on 2 cores.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import serialization  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PPO_VERIFY_FLAGS = ("--capture-video", "--critic-warmup-iterations", "1", "--reward-scales", "feet_slip=-0.3")
RUN_FIXTURES = ("ppo_verify_run", "amp_verify_run")  # session fixtures that run a training file (once per worker)
SLOW_FIXTURES = (*RUN_FIXTURES, "eval_report", "env", "terrain_env", "mjx_step")  # each compiles MJX


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """With -n: the tests of each training run on one worker (the run is made once), the other tests of a module on
    one worker (its module-scoped compiled fixtures are built once). Mark slow what compiles or trains."""
    for item in items:
        run = next((f for f in RUN_FIXTURES if f in item.fixturenames), None)
        item.add_marker(pytest.mark.xdist_group(run or item.module.__name__))
        if any(f in item.fixturenames for f in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)


def run_script(script: str, *argv: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGV...` from `cwd` (so runs/ lands there), output captured; in a shell without MUJOCO_GL or a
    display, as on a fresh server (rendering must work without them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    env |= dict(PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / script), *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(cwd: Path) -> Path:
    runs = sorted((cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def verify_run(script: str, tmp_path_factory, *argv: str):
    """`python SCRIPT --verify ARGV` in a fresh folder: (run folder, completed process)."""
    cwd = tmp_path_factory.mktemp(Path(script).stem)
    proc = run_script(script, "--verify", "--exp-name", "verify", *argv, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return only_run_dir(cwd), proc


def assert_resume_matches(script: str, run_dir: Path, tmp_path: Path):
    """Resume a copy of a 2-iteration --verify run from its first checkpoint: the second must come out identical."""
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "ckpt_000002.msgpack").unlink()
    proc = run_script(script, "--resume", str(copy / "checkpoints" / "ckpt_000001.msgpack"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout
    load = lambda p: serialization.msgpack_restore(p.read_bytes())["leaves"]  # noqa: E731
    straight = load(run_dir / "checkpoints" / "ckpt_000002.msgpack")
    resumed = load(copy / "checkpoints" / "ckpt_000002.msgpack")
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k], err_msg=f"leaf {k}")
    return copy


@pytest.fixture(scope="session")
def ppo_verify_run(tmp_path_factory):
    """`python ppo_mjx.py --verify --capture-video --critic-warmup-iterations 1`: the run folder (2 iterations, the
    first critic-only, a checkpoint after each, a video). Other runs with these settings (--init-policy, the benchmark
    harness) compile nothing new: their programs come from the session's compilation cache."""
    return verify_run("ppo_mjx.py", tmp_path_factory, *PPO_VERIFY_FLAGS)


@pytest.fixture(scope="session")
def amp_verify_run(tmp_path_factory):
    """`python ppo_amp_mjx.py --verify --disc-history 3 --shaping-terms feet_phase --disc-feature-weights ...` with the
    default AMP weights: the run folder. A history of 3 frames, so the resume test also checks that each env's feature
    history comes back; tuple settings, so it checks that settings of every kind go through the checkpoint; weighted
    features, so the discriminator's weighted inputs run through training, resume and the probe."""
    return verify_run("ppo_amp_mjx.py", tmp_path_factory, "--disc-history", "3", "--shaping-terms", "feet_phase",
                      "--disc-feature-weights", "left_foot_z=3", "right_knee_pos=0.5")  # fmt: skip
