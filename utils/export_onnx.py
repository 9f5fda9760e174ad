"""Export a policy (actor mean + observation normalizer) to ONNX, check it against JAX, time it with onnxruntime.

    python -m utils.export_onnx assets/policies/ppo_walk_h100.msgpack --out policy.onnx
    python -m utils.export_onnx CKPT.msgpack --out policy.onnx --samples 4096 --latency-runs 2000

The graph is built node by node with `onnx.helper` (no tracing framework): input `obs` [batch, 44] raw observations,
`Sub` mean, `Div` sqrt(var + 1e-8), `Clip` ±10 (the training file's Normalizer), then per hidden layer `Gemm` and
swish = x · `Sigmoid`(x), and a last `Gemm` -> output `action` [batch, 11], the deterministic action (the Gaussian's
mean; clip it to [-1, 1] and map it like the env: target = default pose + action_scale · action). The export is
written only if its outputs match the training file's `Actor.apply` within --tolerance (max abs diff, printed) on
random observations; batch-1 latency (median µs) is printed.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from utils.checkpoint import load_policy_or_exit
from utils.cli import EXIT_CHECK, fail

OPSET = 17


def build_graph(policy) -> onnx.ModelProto:
    """The policy as an ONNX model: obs [batch, 44] -> action [batch, 11]."""
    obs_size, action_size = policy.meta["obs_size"], policy.meta["action_size"]
    inits = [
        numpy_helper.from_array(policy.obs_mean.astype(np.float32), "obs_mean"),
        numpy_helper.from_array(np.sqrt(policy.obs_var + np.float32(1e-8)).astype(np.float32), "obs_std"),
        numpy_helper.from_array(np.array(-10.0, np.float32), "clip_min"),
        numpy_helper.from_array(np.array(10.0, np.float32), "clip_max"),
    ]
    nodes = [
        helper.make_node("Sub", ["obs", "obs_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "obs_std"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "clip_min", "clip_max"], ["x0"]),
    ]
    layers = policy.layers()
    x = "x0"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]  # fmt: skip
        last = i == len(layers) - 1
        out = "action" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [out]))  # x @ W + b
        if not last:  # swish(h) = h · sigmoid(h)
            nodes += [helper.make_node("Sigmoid", [out], [f"s{i}"]), helper.make_node("Mul", [out, f"s{i}"], [f"a{i}"])]
            x = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "wildrobot_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", action_size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="wildrobot-mjx")
    model.doc_string = f"{policy.meta['algo']} policy from {policy.path.name}, step {policy.meta['global_step']}"
    onnx.checker.check_model(model)
    return model


def random_observations(policy, n: int, seed: int = 0) -> np.ndarray:
    """Observations drawn from the normalizer's statistics (N(mean, var)), 1 % of the entries 10-20 std out so the
    ±10 clip is exercised too."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, policy.obs_mean.size))
    far = rng.random(z.shape) < 0.01
    z[far] = rng.choice([-1.0, 1.0], far.sum()) * rng.uniform(10.0, 20.0, far.sum())
    return (policy.obs_mean + np.sqrt(policy.obs_var) * z).astype(np.float32)


def check_parity(session, policy, samples: int) -> float:
    """Max abs difference between onnxruntime and the training file's Actor.apply (JAX) on random observations."""
    obs = random_observations(policy, samples)
    onnx_action = session.run(["action"], {"obs": obs})[0]
    jax_action = np.asarray(policy.act_jax(obs))
    return float(np.abs(onnx_action - jax_action).max())


def latency_us(session, policy, runs: int) -> float:
    """Median wall time of one batch-1 inference, µs."""
    obs = random_observations(policy, 1)
    for _ in range(20):  # warm-up
        session.run(["action"], {"obs": obs})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(["action"], {"obs": obs})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a run folder (its latest checkpoint)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--samples", type=int, default=1024, help="random observations for the parity check")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference allowed against JAX")
    parser.add_argument("--latency-runs", type=int, default=1000, help="timed batch-1 inferences")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.latency_runs < 1:
        fail("--samples and --latency-runs must be >= 1")
    policy = load_policy_or_exit(args.checkpoint)
    import onnxruntime as ort

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        onnx.save(build_graph(policy), tmp)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # latency of one robot's controller, not of a saturated machine
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        diff = check_parity(session, policy, args.samples)
        print(f"parity vs JAX (Actor.apply) on {args.samples} random observations: max abs diff {diff:.2e}")
        if not diff < args.tolerance:
            fail(f"{out}: ONNX differs from JAX by {diff:.2e} (tolerance {args.tolerance:g}); nothing written",
                 EXIT_CHECK)
        latency = latency_us(session, policy, args.latency_runs)
        os.replace(tmp, out)  # atomic: only a checked export appears under the final name
    finally:
        tmp.unlink(missing_ok=True)
    print(f"onnxruntime latency, batch 1, 1 thread: median {latency:.1f} µs over {args.latency_runs} runs")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, opset {OPSET}): obs [batch, 44] -> action [batch, 11]")
    return dict(max_abs_diff=diff, latency_us=latency)


if __name__ == "__main__":
    main()
