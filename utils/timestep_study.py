"""Which physics timestep can the WildRobot scene use at 50 Hz control? Measures it in MJX (JAX impl) on the CPU.

For each candidate timestep (and a 0.001 s reference) one jitted rollout runs four 10 s experiments side by side:

  * stand:  targets = home joints; pelvis height drift and horizontal drift (should be ~0)
  * random: uniformly random targets in ctrlrange, resampled at 50 Hz; must stay finite; max joint speed
  * track:  a smooth squat-and-sway target trajectory; its first 2 s are compared with the 0.001 s reference
            (joint-angle and pelvis-position error), which shows how much the coarser step changes the motion
  * drop:   the home pose released 10 cm above the floor (an impact); must land and stand

plus the deepest sole penetration below z = 0 (stand, track and drop runs; they stay on the level patch at the
origin of the rough scene too), and physics steps/s of the rollout.
The numbers and the choice are in docs/timestep.md.

    python -m utils.timestep_study                      # 0.002 0.004 0.005 0.01 vs 0.001, scene_flat
    python -m utils.timestep_study --timesteps 0.004 0.005 --seconds 5 --scene assets/scene_rough.xml
"""

import argparse
import contextlib
import io
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

with contextlib.redirect_stdout(io.StringIO()):  # without the optional warp package, mjx prints two import failures
    from mujoco import mjx

from utils.robot import JOINT_NAMES, SCENE_FLAT, SOLE_GEOMS, load_model

CONTROL_DT = 0.02  # 50 Hz
DROP_HEIGHT = 0.10  # m, the drop experiment's release height above home
# the tracking runs are compared over their first 2 s: long enough to see drift, short enough that the comparison
# is not dominated by chaotic divergence after a stumble
TRACK_COMPARE_S = 2.0


def make_experiments(model: mujoco.MjModel, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Initial qpos (4, nq) and target sequences (4, steps, nu) for the stand, random, track and drop experiments."""
    home = model.key("home")
    lo, hi = model.actuator_ctrlrange.T
    stand = np.tile(home.ctrl, (steps, 1))
    random = np.random.default_rng(seed).uniform(lo, hi, size=(steps, model.nu))
    # track: 0.5 Hz squat (hip, knee, ankle together, so the soles stay level) and 0.25 Hz lateral sway (hip roll;
    # positive roll is abduction on both sides, so opposite signs move both feet the same way in the world)
    t = np.arange(steps) * CONTROL_DT
    squat = 0.15 * (1 - np.cos(2 * np.pi * 0.5 * t))
    sway = 0.08 * np.sin(2 * np.pi * 0.25 * t)
    track = stand.copy()
    for side, outward in (("left", 1.0), ("right", -1.0)):
        col = {j: JOINT_NAMES.index(f"{side}_{j}") for j in ("hip_pitch", "hip_roll", "knee", "ankle_pitch")}
        track[:, col["hip_pitch"]] += squat
        track[:, col["knee"]] += 2 * squat
        track[:, col["ankle_pitch"]] += squat
        track[:, col["hip_roll"]] += outward * sway
    track = np.clip(track, lo, hi)
    qpos0 = np.tile(home.qpos, (4, 1))
    qpos0[3, 2] += DROP_HEIGHT
    return qpos0.astype(np.float32), np.stack([stand, random, track, stand]).astype(np.float32)


def make_rollout(model: mujoco.MjModel, timestep: float):
    """A jitted function (data, qpos0 (E, nq), targets (E, T, nu)) -> per-step records, vmapped over experiments."""
    model.opt.timestep = timestep
    substeps = int(round(CONTROL_DT / timestep))
    assert abs(substeps * timestep - CONTROL_DT) < 1e-9, f"{timestep} does not divide the 0.02 s control period"
    mx = mjx.put_model(model, impl="jax")
    sole_ids = jnp.array([model.geom(n).id for n in SOLE_GEOMS])
    # the 4 bottom corners of a sole box in its own frame, used to measure how far a sole sinks into the flat floor
    half = model.geom_size[sole_ids[0]]
    corners = jnp.array([[sx * half[0], sy * half[1], -half[2]] for sx in (-1, 1) for sy in (-1, 1)])

    def lowest_sole_z(d):
        world = d.geom_xpos[sole_ids][:, None] + jnp.einsum("gij,cj->gci", d.geom_xmat[sole_ids], corners)
        return world[..., 2].min()

    def control_step(d, target):
        d = d.replace(ctrl=target)

        def substep(_, carry):
            d, low = carry
            d = mjx.step(mx, d)
            return d, jnp.minimum(low, lowest_sole_z(d))

        d, low = jax.lax.fori_loop(0, substeps, substep, (d, jnp.inf))
        record = dict(qpos=d.qpos, max_joint_vel=jnp.abs(d.qvel[6:]).max(), lowest_sole=low)
        return d, record

    def rollout(d, qpos0, targets):  # targets (T, nu) -> records with a leading T axis
        return jax.lax.scan(control_step, d.replace(qpos=qpos0), targets)[1]

    return jax.jit(jax.vmap(rollout, in_axes=(None, 0, 0))), mx, substeps


def run(scene: str, timestep: float, qpos0: np.ndarray, targets: np.ndarray) -> dict:
    """Compile and run the rollout for one timestep; return the records (numpy) and timings."""
    model = load_model(scene)
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    rollout, mx, substeps = make_rollout(model, timestep)
    dx = mjx.put_data(model, data, impl="jax")
    t0 = time.perf_counter()
    jax.block_until_ready(rollout(dx, qpos0, targets))  # first call: compile + run
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = jax.device_get(jax.block_until_ready(rollout(dx, qpos0, targets)))  # second call: run only
    run_s = time.perf_counter() - t0
    physics_steps = targets.shape[0] * targets.shape[1] * substeps
    return dict(records=records, substeps=substeps, compile_s=first - run_s, physics_steps_per_s=physics_steps / run_s)


def summarize(res: dict, ref: dict, home_z: float) -> dict:
    """Reduce the raw records of one timestep to the table columns (ref = the 0.001 s run)."""
    q, rq = res["records"]["qpos"], ref["records"]["qpos"]  # (E, T, nq)
    n = int(round(TRACK_COMPARE_S / CONTROL_DT))
    stand, random, track, drop = 0, 1, 2, 3
    return dict(
        stand_dz_cm=100 * (q[stand, -1, 2] - home_z),
        stand_dxy_cm=100 * np.linalg.norm(q[stand, -1, :2] - q[stand, 0, :2]),
        random_finite=bool(np.isfinite(q[random]).all()),
        random_max_joint_vel=float(res["records"]["max_joint_vel"][random].max()),
        penetration_mm=1000 * max(0.0, -float(res["records"]["lowest_sole"][[stand, track]].min())),
        drop_penetration_mm=1000 * max(0.0, -float(res["records"]["lowest_sole"][drop].min())),
        drop_dz_cm=100 * (q[drop, -1, 2] - home_z),
        track_joint_err_deg=np.degrees(np.sqrt(np.mean((q[track, :n, 7:] - rq[track, :n, 7:]) ** 2))),
        track_pelvis_err_cm=100 * np.linalg.norm(q[track, :n, :3] - rq[track, :n, :3], axis=-1).max(),
        physics_steps_per_s=res["physics_steps_per_s"],
        control_steps_per_s=res["physics_steps_per_s"] / res["substeps"],
        compile_s=res["compile_s"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=float, nargs="+", default=[0.002, 0.004, 0.005, 0.01])
    parser.add_argument("--reference", type=float, default=0.001, help="timestep of the accuracy reference")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each experiment")
    parser.add_argument("--scene", default=str(SCENE_FLAT), help="scene XML (its solver settings are kept)")
    args = parser.parse_args()

    model = load_model(args.scene)
    home = model.key("home")
    qpos0, targets = make_experiments(model, int(round(args.seconds / CONTROL_DT)))
    print(f"scene {Path(args.scene).name}: solver {mujoco.mjtSolver(model.opt.solver).name[6:]}, iterations "
          f"{model.opt.iterations}, ls_iterations {model.opt.ls_iterations}, {args.seconds:g} s per experiment")
    results = {}
    for dt in [args.reference] + [dt for dt in args.timesteps if dt != args.reference]:
        print(f"timestep {dt:g} s: compiling and running ...", flush=True)
        results[dt] = run(args.scene, dt, qpos0, targets)
        print(f"  done: compile {results[dt]['compile_s']:.1f} s, {results[dt]['physics_steps_per_s']:,.0f} "
              "physics steps/s", flush=True)

    cols = [
        ("timestep (s)", "{}"), ("substeps", "{}"), ("stand Δz (cm)", "{:+.2f}"), ("stand Δxy (cm)", "{:.2f}"),
        ("random finite", "{}"), ("random max joint speed (rad/s)", "{:.1f}"), ("sole penetration (mm)", "{:.2f}"),
        ("drop penetration (mm)", "{:.2f}"), ("drop Δz (cm)", "{:+.2f}"),
        ("track joint RMS err vs ref (°)", "{:.2f}"),
        ("track pelvis max err vs ref (cm)", "{:.2f}"), ("physics steps/s (4 envs)", "{:,.0f}"),
        ("control steps/s (4 envs)", "{:,.0f}"), ("compile (s)", "{:.1f}"),
    ]  # fmt: skip
    print("\n| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols))
    for dt, res in results.items():
        s = summarize(res, results[args.reference], float(home.qpos[2]))
        values = [dt, res["substeps"]] + list(s.values())
        print("| " + " | ".join(fmt.format(v) for (_, fmt), v in zip(cols, values)) + " |")


if __name__ == "__main__":
    main()
