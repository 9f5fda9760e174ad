"""Both training files data-parallel over several devices: forced host devices on this CPU, in a subprocess (the
device count is fixed when JAX starts). A correctness harness, not a speed path (docs/benchmarks.md)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from flax import serialization

# One subprocess per training file, four CPU devices: (1) one iteration on 1 device and on 2 devices at the same total
# envs, one minibatch (so both see the same minibatch; with more, each device shuffles its own rows and the minibatches
# legitimately differ); (2) --verify on 4 devices (its own checkpoint round trip); (3) a resume of that run's first
# checkpoint on 2 devices, writing checkpoints without the envs' state; (4) a resume of that one (fresh episodes);
# (5) --num-envs that does not split over the devices.
SCRIPT = r"""
import json, sys
from pathlib import Path
import jax, numpy as np
m = __import__(sys.argv[1])
small = ["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "1", "--update-epochs", "2", "--num-iterations",
         "1", "--eval-episodes", "2", "--episode-seconds", "0.2", "--no-save-model"]
states = {n: m.main(m.parse_args(small + ["--num-devices", str(n)]))[0] for n in (1, 2)}
one, two = (jax.tree.map(lambda x: np.asarray(x, float), jax.device_get(states[n])) for n in (1, 2))
def diff(a, b):  # the largest difference relative to 1 + |value|
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(x - y) / (1 + np.abs(x)), initial=0)) for x, y in pairs)
names = ("params", "obs_norm", "critic_norm")
names += ("amp_norm", "disc_params") if "amp" in sys.argv[1] else ()
out = {k: diff(getattr(one, k), getattr(two, k)) for k in names}
envs = lambda s: (s.env_state.data.qpos, s.env_state.data.qvel, s.env_state.obs, s.env_state.critic_obs)
out["envs"] = diff(envs(one), envs(two))  # what the policy and critic see (solver internals round more)
replicated = [x for k, v in vars(states[2]).items() if k not in ("env_state", "replay") for x in jax.tree.leaves(v)]
same = lambda x: all(np.array_equal(s.data, x.addressable_shards[0].data) for s in x.addressable_shards)
out["replicas_differ"] = sum(not same(x) for x in replicated)
out["devices"] = [len(x.sharding.device_set) for x in jax.tree.leaves(states[2].env_state)][:1]
_, run = m.main(m.parse_args(["--verify", "--num-devices", "4"]))
ckpt = run / "checkpoints" / "ckpt_000001.msgpack"
m.main(m.parse_args(["--resume", str(ckpt), "--num-devices", "2", "--no-checkpoint-env-state"]))
m.main(m.parse_args(["--resume", str(run / "checkpoints" / "ckpt_000002.msgpack"), "--num-iterations", "3"]))
out["run"] = str(run)
print("RESULT " + json.dumps(out))
m.parse_args(["--num-envs", "6", "--num-devices", "4"])
"""


@pytest.fixture(scope="module", params=["ppo_mjx", "ppo_amp_mjx"])
def multi_device(request, tmp_path_factory):
    """(training file, measured differences, the process, its folder)."""
    cwd = tmp_path_factory.mktemp(request.param)
    env = os.environ | dict(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, request.param], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return request.param, json.loads(line[len("RESULT ") :]), proc, cwd


def test_two_devices_match_one(multi_device):
    """Same total envs, one minibatch: the same parameters, normalizers and envs after an iteration, up to float
    rounding (measured: params 3e-8; the physics of 2 envs per device vs 4 in one program rounds ~1e-6)."""
    name, out, _, _ = multi_device
    assert out["devices"] == [2]
    assert out["params"] < 1e-6 and out["obs_norm"] < 1e-5 and out["critic_norm"] < 1e-5, out
    assert out["envs"] < 1e-4, out
    if name == "ppo_amp_mjx":  # the discriminator's policy pairs come from each device's own envs: not the same draws
        assert out["amp_norm"] < 1e-5 and out["disc_params"] > 1e-6, out
    assert out["replicas_differ"] == 0, out  # params, optimizer, normalizers, RNG: the same copy on every device


def test_verify_and_resume_across_device_counts(multi_device):
    """--verify on 4 devices; its first checkpoint resumed on 2 devices, writing checkpoints without the envs' state;
    that one resumed in turn (fresh episodes)."""
    name, out, proc, cwd = multi_device
    assert proc.stdout.count("verify: checkpoint round trip ok") == 1
    assert "on 4 × cpu:0" in proc.stdout and proc.stdout.count("resuming") == 2
    load = lambda i: serialization.msgpack_restore((cwd / out["run"] / "checkpoints" / f"ckpt_00000{i}.msgpack")  # noqa: E731
                                                   .read_bytes())  # fmt: skip
    full, lean, last = load(1), load(2), load(3)
    assert full["meta"]["env_state"] and not lean["meta"]["env_state"] and not last["meta"]["env_state"]
    assert last["meta"]["iteration"] == 3 and last["meta"]["args"]["num_devices"] == 4  # the machine's count
    size = lambda c: sum(np.asarray(x).nbytes for x in c["leaves"].values())  # noqa: E731
    assert len(lean["leaves"]) < len(full["leaves"]) and size(lean) < size(full)  # 4 envs here: 74 kB of 2.2 MB
    if name == "ppo_amp_mjx":  # 4 -> 2 devices: the per-device replay rings start empty, then take 24 / 2 pairs each
        n = len(full["leaves"])  # the last leaves: replay, its next slot, its filled count, the AMP RNG, the history
        assert int(full["leaves"][str(n - 3)]) == 6 and int(lean["leaves"][str(n - 3)]) == 12
        assert str(n - 1) not in lean["leaves"]  # the envs' feature history goes with the envs' state


def test_num_envs_must_split_over_devices(multi_device):
    _, _, proc, _ = multi_device
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --num-envs 6 does not split over 4 devices (each needs as many envs, and its share of the batch must "
        "split into --num-minibatches 8)")


def test_two_processes_only_process_0_writes(tmp_path):
    """jax.distributed on this machine: two processes of one CPU device each (gloo collectives) train one --verify
    run together; process 0 prints, logs, checkpoints and evaluates, process 1 writes nothing."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        argv = ["--verify", "--coordinator-address", f"localhost:{port}", "--num-processes", "2", f"--process-id={i}"]
        env = os.environ | dict(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "ppo_mjx.py"), *argv], cwd=tmp_path / str(i), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    (out0, err0), (out1, err1) = (p.communicate(timeout=900) for p in procs)
    assert procs[0].returncode == 0 and procs[1].returncode == 0, err0[-2000:] + err1[-2000:]
    assert "on 2 × cpu:0" in out0 and "verify: checkpoint round trip ok" in out0 and "eval: " in out0
    assert [x for x in out1.splitlines() if not x.startswith("[Gloo]")] == []  # (gloo's own C++ line aside)
    assert list((tmp_path / "1").iterdir()) == []
    run = next((tmp_path / "0" / "runs").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_000001.msgpack", "ckpt_000002.msgpack"]
