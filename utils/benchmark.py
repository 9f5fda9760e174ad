"""Benchmarks. For now: the raw MJX physics ceiling, the steps/s no trainer can beat at a given batch size.

The ceiling is `jit(vmap(control_step))` of the scene at `num_envs` envs: one 0.02 s control step (the scene's
timestep × substeps) with new random-ish targets every step, and nothing else (no policy, no reward, no reset).
Training steps/s are reported as a fraction of this number at the same batch size (SPEC.md, "Bars").

    python -m utils.benchmark --physics-only --num-envs 1 64 256
    python -m utils.benchmark --physics-only --num-envs 4096 --scene assets/scene_rough.xml   # on a GPU
"""

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from utils.robot import SCENE_FLAT, load_model

CONTROL_DT = 0.02  # 50 Hz


def physics_ceiling(
    scene_path: str | Path = SCENE_FLAT,
    num_envs: int = 64,
    control_steps: int = 50,
    substeps: int | None = None,
    min_time_s: float = 2.0,
    seed: int = 0,
) -> dict:
    """Environment control steps/s of `num_envs` MJX envs stepped by one jitted, vmapped control step.

    One timed call runs `control_steps` control steps inside a `lax.scan` (so Python dispatch is not measured);
    calls repeat until `min_time_s` has passed. `substeps` defaults to 0.02 s / the scene's timestep.
    Returns dict(num_envs, compile_s, steps_per_s (env control steps/s), physics_steps_per_s).
    """
    model = load_model(scene_path)
    if substeps is None:
        substeps = int(round(CONTROL_DT / model.opt.timestep))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mx = mjx.put_model(model, impl="jax")
    home = jnp.asarray(model.key("home").ctrl)
    lo, hi = jnp.asarray(model.actuator_ctrlrange.T)

    def control_step(d, key):
        # random-ish targets: home + noise, so the robot moves and makes and breaks contacts like a learning policy
        target = jnp.clip(home + 0.3 * jax.random.normal(key, home.shape), lo, hi)
        d = d.replace(ctrl=target)
        return jax.lax.fori_loop(0, substeps, lambda _, d: mjx.step(mx, d), d), None

    def rollout(d, key):
        return jax.lax.scan(control_step, d, jax.random.split(key, control_steps))[0]

    batched = jax.jit(jax.vmap(rollout))
    # every env starts at home; each gets its own random stream
    d0 = mjx.put_data(model, data, impl="jax")
    d = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs,) + x.shape), d0)
    keys = jax.random.split(jax.random.key(seed), num_envs)

    t0 = time.perf_counter()
    batched = batched.lower(d, keys).compile()  # ahead-of-time, so compile time excludes any stepping
    compile_s = time.perf_counter() - t0
    d = jax.block_until_ready(batched(d, keys))  # warm-up call: first-call allocations are not timed

    calls, t0 = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - t0 < min_time_s:
        keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
        d = jax.block_until_ready(batched(d, keys))
        calls += 1
    elapsed = time.perf_counter() - t0
    steps_per_s = calls * control_steps * num_envs / elapsed
    return dict(
        num_envs=num_envs,
        compile_s=compile_s,
        steps_per_s=steps_per_s,
        physics_steps_per_s=steps_per_s * substeps,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--physics-only", action="store_true", help="measure the raw MJX physics ceiling")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 256], help="batch sizes to measure")
    parser.add_argument("--scene", default=str(SCENE_FLAT), help="scene XML")
    parser.add_argument("--control-steps", type=int, default=50, help="control steps per timed jitted call")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per batch size")
    args = parser.parse_args()
    if not args.physics_only:
        parser.error("only --physics-only is implemented so far")
    if min(args.num_envs) < 1 or args.control_steps < 1:
        parser.error("--num-envs and --control-steps must be >= 1")

    model = load_model(args.scene)
    print(f"# raw MJX physics ceiling: {Path(args.scene).name}, timestep {model.opt.timestep:g} s, "
          f"jax {jax.__version__} ({jax.default_backend()}), mujoco {mujoco.__version__}", flush=True)
    rows = []
    for n in args.num_envs:
        print(f"num_envs {n}: compiling and timing ...", flush=True)
        rows.append(physics_ceiling(args.scene, n, args.control_steps, min_time_s=args.min_time))
    print("\n| num_envs | compile (s) | env steps/s (50 Hz control) | physics steps/s |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['num_envs']} | {r['compile_s']:.1f} | {r['steps_per_s']:,.0f} | {r['physics_steps_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
