"""Benchmarks: the raw MJX physics ceiling, and the harness that trains variants × seeds × batch sizes against it.

The ceiling is `jit(vmap(control_step))` of the scene at `num_envs` envs: one 0.02 s control step (the scene's
timestep × substeps) with new random-ish targets every step, and nothing else (no policy, no reward, no reset).
Training steps/s are reported as a fraction of this number at the same batch size (SPEC.md, "Bars").

    python -m utils.benchmark --physics-only --num-envs 1 64 256
    python -m utils.benchmark --physics-only --num-envs 4096 --scene assets/scene_rough.xml   # on a GPU

The harness runs each training file as a user would (a subprocess, `--exp-name bench<i>_<file>`, runs/ under the
current folder), once per variant × seed × num-envs, reads the run's metrics.csv and its "compiled in X s" line,
measures the ceiling at each num-envs in the same invocation, and writes to --out: benchmark.md (the table),
return_vs_steps.png, return_vs_time.png, results.json, and one log per run under logs/.

    python -m utils.benchmark --variants ppo_mjx.py "ppo_mjx.py:--ent-coef 0.01" --seeds 1 2 --num-envs 64 256 \
        --iterations 20 --out docs/bench/        # default --out: runs/benchmark

A variant is `FILE[:FLAGS]`; FLAGS go to the file as given (not --seed, --num-envs, --num-iterations, --exp-name,
which the harness sets). The variant `brax[:FLAGS]` trains the same env with Brax's PPO (`utils/brax_ppo.py`, the
original project's trainer; `pip install brax==0.14.2` where requirements.txt was not installed), FLAGS being
ppo_mjx.py's.

"Return" is `charts/episodic_return` (--metric), averaged over the last 3 values logged at or before the point: at
the fewest env steps and at the shortest training time (after compile) any run reached. SPS is the run's last
`charts/SPS` (env steps/s of the training loop, compile excluded).
"""

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

with contextlib.redirect_stdout(io.StringIO()):  # without the optional warp package, mjx prints two import failures
    from mujoco import mjx

from utils.cli import RUNS, fail
from utils.plot_runs import read_metrics as read_columns
from utils.plot_runs import wallclock_minutes
from utils.robot import SCENE_FLAT, load_model

CONTROL_DT = 0.02  # 50 Hz
ROOT = Path(__file__).resolve().parent.parent


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


# ---------------------------------------------------------------------------------------------------------------------
# harness: variants × seeds × num-envs
# ---------------------------------------------------------------------------------------------------------------------
HARNESS_FLAGS = ("--seed", "--num-envs", "--num-iterations", "--exp-name")  # set by the harness, not by a variant
BRAX = "brax"  # the variant that runs utils/brax_ppo.py: Brax's PPO on the same env


def parse_variant(spec: str) -> tuple[Path, list[str]]:
    """`FILE[:FLAGS]` -> (the training file, its flags). Relative files: the current folder, else the repo root."""
    file, _, flags = spec.partition(":")
    path = Path(file) if Path(file).is_file() else ROOT / file
    if file == BRAX:
        path = ROOT / "utils" / "brax_ppo.py"
        if importlib.util.find_spec("brax") is None:
            fail(f"--variants {spec!r}: Brax is not installed (pip install brax==0.14.2)")
    elif not path.is_file() or path.suffix != ".py":
        fail(f"--variants {spec!r}: no training file {file}")
    argv = shlex.split(flags)
    taken = [a for a in argv if a.split("=")[0] in HARNESS_FLAGS]
    if taken:
        fail(f"--variants {spec!r}: {', '.join(taken)} is set by the harness (use --seeds, --num-envs, --iterations)")
    return path, argv


def read_metrics(csv_path: Path, metric: str) -> dict:
    """From metrics.csv: steps, wall (s of training loop), the metric (NaN: no episode ended), the last SPS."""
    cols = read_columns(csv_path)
    if metric not in cols:
        fail(f"{csv_path}: no column {metric}")
    wall = wallclock_minutes(cols, str(csv_path)) * 60.0
    return dict(steps=cols["global_step"], wall=wall, ret=cols[metric], sps=float(cols["charts/SPS"][-1]))


def run_variant(index: int, spec: str, seed: int, num_envs: int, iterations: int | None, metric: str, logs: Path):
    """Train one variant as a subprocess (output to a log file) and read back its metrics."""
    path, flags = parse_variant(spec)
    name = f"bench{index}_{path.stem}"
    program = ["-m", "utils.brax_ppo"] if path.stem == "brax_ppo" else [str(path)]  # a module of this repo: -m
    cmd = [sys.executable, *program, *flags, "--exp-name", name, "--seed", str(seed), "--num-envs", str(num_envs)]
    cmd += ["--num-iterations", str(iterations)] if iterations else []
    log = logs / f"{name}__{seed}__n{num_envs}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        paths = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=paths)
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    if proc.returncode != 0:
        tail = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        fail(f"variant {spec!r} seed {seed} num-envs {num_envs} exited with {proc.returncode}: {tail[0]} (log: {log})")
    run_dir = re.search(r"^run folder: (\S+)", text, re.M)
    compiled = re.search(r"compiled in ([0-9.]+) s", text)
    if run_dir is None or not (Path(run_dir.group(1)) / "metrics.csv").is_file():
        fail(f"variant {spec!r}: no 'run folder:' line with a metrics.csv in {log}")
    return dict(variant=spec, seed=seed, num_envs=num_envs, run_dir=run_dir.group(1), log=str(log),
                compile_s=float(compiled.group(1)) if compiled else math.nan, total_s=time.perf_counter() - t0,
                **read_metrics(Path(run_dir.group(1)) / "metrics.csv", metric))  # fmt: skip


def value_at(xs: np.ndarray, ys: np.ndarray, x: float, last: int = 3) -> float:
    """Mean of the last `last` finite ys logged at or before x (NaN if none)."""
    ok = (xs <= x * (1 + 1e-9)) & np.isfinite(ys)
    return float(ys[ok][-last:].mean()) if ok.any() else math.nan


def fmt(values, spec=",.0f") -> str:
    values = np.asarray([v for v in values if math.isfinite(v)])
    if not len(values):
        return "–"
    return format(values.mean(), spec) + (f" ± {format(values.std(), spec)}" if len(values) > 1 else "")


def write_atomic(path: Path, write):
    """write(tmp_path), then rename: a failed write never leaves a half file under the final name."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def report(runs: list[dict], ceilings: dict, args, out: Path) -> str:
    """The markdown table + the two plots; returns the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_steps = min(r["steps"][-1] for r in runs)
    at_wall = min(r["wall"][-1] for r in runs)
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["num_envs"]), []).append(r)
    lines = [
        f"| variant | num_envs | seeds | SPS | compile (s) | return @ {at_steps:,.0f} steps | return @ {at_wall:.3g} s "
        "| ceiling SPS | SPS / ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (variant, n), rs in groups.items():
        ceiling = ceilings[n]["steps_per_s"]
        lines.append(
            f"| `{variant}` | {n} | {len(rs)} | {fmt([r['sps'] for r in rs])} "
            f"| {fmt([r['compile_s'] for r in rs], '.1f')} "
            f"| {fmt([value_at(r['steps'], r['ret'], at_steps) for r in rs], '.2f')} "
            f"| {fmt([value_at(r['wall'], r['ret'], at_wall) for r in rs], '.2f')} | {ceiling:,.0f} "
            f"| {fmt([r['sps'] / ceiling for r in rs], '.0%')} |"
        )  # fmt: skip
    table = "\n".join(lines)

    for name, x_key, x_label in (("return_vs_steps", "steps", "env steps"),
                                 ("return_vs_time", "wall", "training time after compile (s)")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, ((variant, n), rs) in enumerate(groups.items()):
            for j, r in enumerate(rs):
                ok = np.isfinite(r["ret"])
                ax.plot(r[x_key][ok], r["ret"][ok], color=f"C{i}", alpha=0.85, lw=1.4,
                        label=f"{variant} · {n} envs" if j == 0 else None)  # fmt: skip
        ax.set_xlabel(x_label)
        ax.set_ylabel(args.metric)
        seeds = " ".join(map(str, args.seeds))
        ax.set_title(f"{args.metric} vs {x_label} ({len(runs)} runs, seeds {seeds})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_atomic(out / f"{name}.png", lambda p: fig.savefig(p, dpi=110, format="png"))
        plt.close(fig)
    return table


def run_harness(args):
    specs = args.variants
    for spec in specs:
        parse_variant(spec)  # every variant checked before the first (long) run
    if min(args.seeds) < 0 or min(args.num_envs) < 1 or (args.iterations is not None and args.iterations < 1):
        fail("--seeds must be >= 0, --num-envs and --iterations >= 1")
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    jobs = [(i, spec, s, n) for i, spec in enumerate(specs) for n in args.num_envs for s in args.seeds]
    runs, t0 = [], time.perf_counter()
    for k, (i, spec, seed, n) in enumerate(jobs, 1):
        print(f"[{k}/{len(jobs)}] {spec} · seed {seed} · {n} envs: training ...", flush=True)
        r = run_variant(i, spec, seed, n, args.iterations, args.metric, out / "logs")
        runs.append(r)
        print(f"    {r['steps'][-1]:,.0f} steps, SPS {r['sps']:,.0f}, compiled in {r['compile_s']:.1f} s, "
              f"{r['total_s']:.0f} s in all ({time.perf_counter() - t0:.0f} s elapsed)", flush=True)  # fmt: skip
    ceilings = {}
    for n in args.num_envs:
        print(f"physics ceiling at {n} envs: compiling and timing ...", flush=True)
        ceilings[n] = physics_ceiling(args.scene, n, args.control_steps, min_time_s=args.min_time)
        c = ceilings[n]
        print(f"    {c['steps_per_s']:,.0f} env steps/s (compiled in {c['compile_s']:.1f} s)", flush=True)

    table = report(runs, ceilings, args, out)
    device = jax.devices()[0]
    header = (f"Machine: {device.device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores, "
              f"jax {jax.__version__}, mujoco {mujoco.__version__}; {time.strftime('%Y-%m-%d %H:%M')}.\n\n"
              f"```\npython -m utils.benchmark {' '.join(shlex.quote(a) for a in sys.argv[1:])}\n```\n\n")  # fmt: skip
    plots = "![return vs env steps](return_vs_steps.png) ![return vs time](return_vs_time.png)"
    markdown = header + table + "\n\n" + plots + "\n"
    write_atomic(out / "benchmark.md", lambda p: p.write_text(markdown))
    listed = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in runs]
    raw = dict(ceilings=ceilings, runs=listed)
    write_atomic(out / "results.json", lambda p: p.write_text(json.dumps(raw, indent=1, default=float)))
    print("\n" + table + f"\n\nwrote {out / 'benchmark.md'}, return_vs_steps.png, return_vs_time.png, results.json")
    return runs, ceilings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--physics-only", action="store_true", help="measure the raw MJX physics ceiling")
    parser.add_argument("--variants", nargs="+", metavar="FILE[:FLAGS]", help="training files and their flags")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds of every variant")
    parser.add_argument("--iterations", type=int, help="--num-iterations of every run (default: the file's own)")
    parser.add_argument("--metric", default="charts/episodic_return", help="metrics.csv column to compare")
    parser.add_argument("--out", default=f"{RUNS}/benchmark", help="folder: benchmark.md, plots, results.json, logs/")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 256], help="batch sizes to measure")
    parser.add_argument("--scene", default=str(SCENE_FLAT), help="scene XML of the physics ceiling")
    parser.add_argument("--control-steps", type=int, default=50, help="control steps per timed jitted call")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per batch size")
    args = parser.parse_args(argv)
    if not args.physics_only and not args.variants:
        parser.error("give --variants (the harness) or --physics-only")
    if min(args.num_envs) < 1 or args.control_steps < 1:
        parser.error("--num-envs and --control-steps must be >= 1")
    if not Path(args.scene).is_file():
        fail(f"--scene {args.scene}: no such file")
    if args.variants:
        return run_harness(args)

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
