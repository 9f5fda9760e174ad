"""Compare policies' gaits with the reference motions (and with each other): joint angles, step frequency, AMP style.

    python -m utils.compare_gaits assets/policies/ppo_walk_h100.msgpack assets/policies/amp_cpu_2m.msgpack \
        --labels ppo amp --out gaits.png --json gaits.json      # default --out: runs/compare_gaits/gait_compare.png
    python -m utils.compare_gaits runs/<ppo> runs/<amp> --labels ppo amp --clips stand forward_0.3 --episodes 1

Each reference clip's command is rolled out in MJX (`utils.evaluate.rollout_mjx`: deterministic policy, the command
held fixed; randomization, noise, pushes and latency off) for --episodes × --seconds. The first --skip seconds of
every episode and of every reference clip (the start from standing) are dropped, and so is everything from a fall on.
Per command and pooled over all commands, for the reference and each policy:

    joints       per joint angle (rad): mean, std, 5th and 95th percentile
    step_freq    steps per second, touchdowns of both feet together (`touchdowns`), the same rule for the clips
                 and the rollouts: the kinematic contact rule of `utils.kinematics` (a sole's lowest corner within
                 2 mm of the floor; gives 2.5 / 3.33 / 3.70 steps/s on the shipped clips, the generator's 0.4 s step
                 and its shorter steps at 0.4 and 0.5 m/s)
    style        AMP style distance, pooled over commands: for each of the D = 41 features of
                 `ppo_amp_mjx.amp_features` (what the discriminator is built on), the 1-D Wasserstein-1 distance
                 between the policy's and the reference's samples over the reference's std (at least STD_FLOOR: the
                 clips keep the pelvis level and the waist still), averaged over features (0 = the same
                 distributions; 1 ≈ shifted by one reference std); the 5 features that differ most are named
    clearance    per command, the mean apex of the sole's lowest corner over each swing (lift-off and landing inside
                 the window, the contact rule above); stride: the foot's horizontal travel per swing (twice the step
                 length of a steady walk)
    vel_error    per command, the mean |v_xy − command_xy| of the pelvis in the heading frame per frame, and of
                 its 2 s means (`vel_error_2s`, as `utils.evaluate`): a walking pelvis sways sideways, so the
                 shipped clips' own per-frame error is 0.15–0.22 m/s while their 2 s error is 0.01–0.04
    range_diff   per joint |(p95 − p5) of the policy − (p95 − p5) of the reference|, pooled; `mean` over joints (rad)

With several policies the JSON also holds their pairwise style distances (scaled by the reference's std).
Bad input (a missing or foreign checkpoint, a missing motion file, an unknown clip) stops with one `error: ...` line
and exit code 2 before anything runs; the JSON and PNG are written at the end, atomically.
"""

import argparse
import json
import math
import time
from pathlib import Path

import jax.numpy as jnp
import mujoco
import numpy as np
from scipy.stats import wasserstein_distance

from ppo_amp_mjx import AMP_FEATURE_NAMES, amp_features
from utils.benchmark import write_atomic
from utils.checkpoint import CheckpointError, load_policy
from utils.cli import RUNS, add_seed, fail
from utils.evaluate import error_norms, rollout_mjx
from utils.kinematics import CONTACT_Z, feet_kinematics, heading_velocity, sole_contact, swings
from utils.motions import MotionFileError, load_motions
from utils.robot import JOINT_NAMES, SCENE_FLAT, WALK_MOTIONS, load_model

# shapes: n frames of one window (an episode or a clip after the skip), S pooled samples, D = 41 AMP features
MIN_AIR = 2  # frames (0.04 s) in the air before a landing counts as a step: contact flicker is not a step
# the smallest spread the style distance divides by, per feature of amp_features (names in AMP_FEATURE_NAMES): the
# clips keep the pelvis level and the waist still, and over their std of ~0 any wobble would swamp the other features
FEATURE_NAMES = AMP_FEATURE_NAMES  # (D,)
STD_FLOOR = np.array([0.01]  # root height, m
                     + [0.05] * 6  # rotation-matrix columns, 0.05 ≈ 3°
                     + [0.02] * 3 + [0.2] * 3  # root linear (m/s) and angular (rad/s) velocity
                     + [0.05] * 11 + [0.5] * 11  # joint angles (rad) and velocities (rad/s)
                     + [0.01] * 6)  # feet relative to the pelvis, m  # fmt: skip


def num(x) -> float | None:
    """A JSON number: None where undefined."""
    return float(x) if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------------------------------
# measures: one code path for the reference and the policies
# ---------------------------------------------------------------------------------------------------------------------
def touchdowns(contact: np.ndarray, min_air: int = MIN_AIR) -> np.ndarray:
    """Frames [k] (sorted, both feet) at which a foot lands after ≥ min_air frames in the air; contact [n, 2] bool.
    A foot already in the air at frame 0 counts as airborne since frame 0."""
    return np.sort(np.array([land for _, _, land in swings(contact, min_air)], int))


def step_frequency(contacts: list[np.ndarray], dt: float) -> float:
    """Steps per second over contact windows [[n, 2], ...] (one command). A window whose touchdowns span at least half
    of it counts k − 1 steps over the first to last touchdown (exact for a periodic gait, whatever the phase at the
    window's edges); any other window (a few steps, e.g. shuffling while standing) counts k over its whole length."""
    steps, seconds = 0, 0.0
    for contact in contacts:
        t = touchdowns(contact)
        if len(t) >= 2 and t[-1] - t[0] >= len(contact) / 2:
            steps, seconds = steps + len(t) - 1, seconds + (t[-1] - t[0]) * dt
        else:
            steps, seconds = steps + len(t), seconds + len(contact) * dt
    return steps / seconds if seconds > 0 else math.nan


def swing_measures(windows: list[dict]) -> tuple[float | None, float | None]:
    """(clearance, stride) in m over the swings of ≥ MIN_AIR frames that lift off and land inside a window: the mean
    apex of the sole's lowest corner, and the mean horizontal travel of the foot from its last frame on the floor to
    its landing (a step's length is half a stride in a steady walk); None without such swings."""
    apex, travel = [], []
    for w in windows:
        for k, a, b in swings(w["contact"], MIN_AIR):
            if a > 0:
                apex.append(w["sole_z"][a:b, k].max())
                travel.append(np.linalg.norm(w["feet"][b, k, :2] - w["feet"][a - 1, k, :2]))
    return (num(np.mean(apex)), num(np.mean(travel))) if apex else (None, None)


def velocity_errors(windows: list[dict], command, dt: float) -> tuple[float | None, float | None]:
    """(per frame, of 2 s means) the mean |v_xy − command_xy| of the root in the heading frame over the windows, as
    `utils.evaluate`'s vel_error_mps and vel_error_2s_mps (there in the pelvis frame): a pelvis that sways sideways
    with the steps counts in the first only. None without frames (without a whole 2 s window: the second)."""
    norms = [error_norms(heading_velocity(w["qpos"], w["qvel"], dt)[:, :2] - np.asarray(command)[:2], dt)
             for w in windows]  # fmt: skip
    now, means = (np.concatenate([n[i] for n in norms]) if norms else np.zeros(0) for i in (0, 1))
    return (num(now.mean()) if len(now) else None), (num(means.mean()) if len(means) else None)


def joint_stats(q: np.ndarray) -> dict | None:
    """Per joint of angles [n, 11]: mean, std, p5, p95 (rad); None without samples."""
    if len(q) == 0:
        return None
    p5, p95 = np.percentile(q, [5, 95], axis=0)
    return {j: dict(mean=num(q[:, i].mean()), std=num(q[:, i].std()), p5=num(p5[i]), p95=num(p95[i]))
            for i, j in enumerate(JOINT_NAMES)}  # fmt: skip


def style_distance(samples: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(mean over features, per feature [D]) of W1(samples[:, i], ref[:, i]) / max(std of ref[:, i], STD_FLOOR[i])
    for features [S, D] and [S', D]; `scale` [D] replaces the std (to compare two policies on the reference's scale)."""
    scale = np.maximum(ref.std(axis=0) if scale is None else scale, STD_FLOOR)
    w = np.array([wasserstein_distance(samples[:, i], ref[:, i]) for i in range(ref.shape[1])]) / scale
    return float(w.mean()), w


def measure(windows: dict[str, list[dict]], dt: float, commands: dict) -> dict:
    """Gait of one source from its windows (command -> [dict(qpos [n, 18], qvel [n, 17], feet [n, 2, 3],
    contact [n, 2])]) and the commands {name: (vx, vy, yaw rate)}: joints (per command and overall), step_freq,
    clearance, stride and velocity errors per command, and the pooled AMP features [S, D]."""
    every = [w for ws in windows.values() for w in ws]
    pooled = {k: np.concatenate([w[k] for w in every]) for k in ("qpos", "qvel", "feet")}
    feats = amp_features(*(jnp.asarray(pooled[k], jnp.float32) for k in ("qpos", "qvel", "feet")))
    joints = {name: joint_stats(np.concatenate([w["qpos"][:, 7:] for w in ws]) if ws else np.zeros((0, 11)))
              for name, ws in windows.items()}  # fmt: skip
    swing = {name: swing_measures(ws) for name, ws in windows.items()}
    velocity = {name: velocity_errors(ws, commands[name], dt) for name, ws in windows.items()}
    return dict(joints=joints | {"overall": joint_stats(pooled["qpos"][:, 7:])}, features=np.asarray(feats),
                step_freq={name: num(step_frequency([w["contact"] for w in ws], dt)) for name, ws in windows.items()},
                clearance={name: c for name, (c, _) in swing.items()},
                stride={name: t for name, (_, t) in swing.items()},
                vel_error={name: v for name, (v, _) in velocity.items()},
                vel_error_2s={name: v for name, (_, v) in velocity.items()},
                samples=pooled["qpos"][:, 7:])  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# the windows: reference clips (kinematics) and policy episodes (MJX)
# ---------------------------------------------------------------------------------------------------------------------
def reference_windows(motions, names: list[str], skip: float, model: mujoco.MjModel) -> dict[str, list[dict]]:
    """Each clip after its first `skip` seconds."""
    out = {}
    for name in names:
        sl = motions.clip(name)
        qpos, qvel = motions.qpos[sl][round(skip * motions.fps) :], motions.qvel[sl][round(skip * motions.fps) :]
        out[name] = [window(model, qpos, qvel)]
    return out


def window(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray) -> dict:
    """One window's states, feet (n, 2, 3), the soles' lowest corner (n, 2) and contact (n, 2) by the kinematic rule
    (`utils.kinematics.sole_contact`), the same for the reference clips and the policies' rollouts."""
    feet, corners = feet_kinematics(model, qpos)
    return dict(qpos=qpos, qvel=qvel, feet=feet, contact=sole_contact(corners), sole_z=corners[..., 2].min(axis=-1))


def policy_windows(policy, motions, names, episodes, seconds, skip, seed, model) -> tuple[dict, dict]:
    """Rollouts of each clip's command: (command -> [window per episode that is up after the skip], falls)."""
    dt = policy.module.CTRL_DT
    commands = np.repeat(np.array([motions.clip_commands[motions.clip_names.index(n)] for n in names]), episodes, 0)
    roll = rollout_mjx(policy, commands.astype(np.float32), None, round(seconds / dt), seed)
    first = round(skip / dt)
    out, falls = {n: [] for n in names}, {n: 0 for n in names}
    for e, name in enumerate(np.repeat(names, episodes)):
        falls[name] += int(roll["fell"][e])
        keep = roll["valid"][e, first:]  # a prefix: the steps before a fall
        if keep.sum() >= 2:
            out[name].append(window(model, roll["qpos"][e, first:][keep], roll["qvel"][e, first:][keep]))
    return out, falls


# ---------------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------------
def print_tables(report: dict, names: list[str]):
    ref, pols = report["reference"], report["policies"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    tables = (("step_freq", "steps/s", 1), ("clearance", "clearance cm", 100), ("stride", "stride cm", 100),
              ("vel_error", "vel error cm/s", 100), ("vel_error_2s", "vel err 2 s cm/s", 100))  # fmt: skip
    for key, title, unit in tables:
        cell = lambda x: "-" if x is None else f"{unit * x:.2f}"  # noqa: E731
        header = f"{title:16s} {'reference':>10s} " + " ".join(f"{lab[:18]:>18s} {'falls':>5s}" for lab in pols)
        print(header + "\n" + "-" * len(header))
        for n in names:
            cells = " ".join(f"{cell(p[key][n]):>18s} {p['falls'][n]:>5d}" for p in pols.values())
            print(f"{n:16s} {cell(ref[key][n]):>10s} {cells}")
        print()
    print(f"{'policy':20s} {'falls':>7s} {'style':>6s} {'|Δrange| rad':>13s}  most different features (W1 / std)")
    for lab, p in pols.items():
        top = ", ".join(f"{k} {v:.2f}" for k, v in p["style_top"].items())
        falls = f"{p['falls']['overall']}/{p['episodes']}"
        print(f"{lab[:20]:20s} {falls:>7s} {p['style_distance']:6.3f} {fmt(p['range_diff']['mean']):>13s}  {top}")


def policy_colors(n: int) -> list[tuple]:
    """n colours for the policies: tab10 without its grey (the reference's), then tab20's lighter shades."""
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"].colors, colormaps["tab20"].colors
    palette = [c for i, c in enumerate(tab10) if i != 7] + [c for i, c in enumerate(tab20) if i % 2 and i != 15]
    return [palette[i % len(palette)] for i in range(n)]


def plot(report: dict, samples: dict[str, np.ndarray], names: list[str], path: Path):
    """Per joint the angle distributions pooled over commands (box: quartiles, whiskers: 5th-95th percentile,
    reference grey, on top), and the step frequency per command; saved as a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(samples)  # "reference" first
    colors = ["0.6"] + policy_colors(len(labels) - 1)
    fig = plt.figure(figsize=(16, 12), layout="constrained")
    grid = fig.add_gridspec(4, 4, height_ratios=[1, 1, 1, 1.2])
    for j, joint in enumerate(JOINT_NAMES):
        ax = fig.add_subplot(grid[j // 4, j % 4])
        data = [np.degrees(samples[lab][:, j]) for lab in labels]
        box = ax.boxplot(data[::-1], orientation="horizontal", whis=(5, 95), showfliers=False, patch_artist=True,
                         widths=0.6, medianprops=dict(color="k"))  # fmt: skip
        for patch, c in zip(box["boxes"], colors[::-1]):
            patch.set_facecolor(c)
        ax.set_yticks([])
        ax.set_title(joint, fontsize=10)
        ax.set_xlabel("angle (deg)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    ax = fig.add_subplot(grid[2, 3])  # the 12th cell: legend and the style distances
    ax.axis("off")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colors], fontsize=10, loc="center left",
              labels=[lab if lab == "reference" else f"{lab}: style {report['policies'][lab]['style_distance']:.2f}"
                      for lab in labels])  # fmt: skip
    ax = fig.add_subplot(grid[3, :])
    width = 0.8 / len(labels)
    freqs = [report["reference"]["step_freq"]] + [report["policies"][lab]["step_freq"] for lab in labels[1:]]
    for i, (lab, f, c) in enumerate(zip(labels, freqs, colors)):
        ax.bar(np.arange(len(names)) + (i - (len(labels) - 1) / 2) * width, [f[n] or 0.0 for n in names], width,
               color=c, label=lab)  # fmt: skip
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("steps / s (both feet)")
    ax.set_title("step frequency per command")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, 1.3 * max(max((v or 0.0) for v in f.values()) for f in freqs) + 0.1)  # room for the legend
    ax.legend(fontsize=9, ncol=len(labels), loc="upper center")
    fig.suptitle(f"Gaits vs the reference motions (after the first {report['settings']['skip']:g} s, before falls)\n"
                 "joint angles pooled over the commands: box 25-75 %, whiskers 5-95 %, line median; "
                 "style: mean W1 / reference std over the 41 AMP features (0 = same)", fontsize=11)  # fmt: skip
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policies", nargs="+", help="checkpoint files or run folders (their latest checkpoint)")
    parser.add_argument("--labels", nargs="+", help="one per policy (default: the file or folder name)")
    parser.add_argument("--motion-file", default=str(WALK_MOTIONS), help="reference clips: an .npz or a folder")
    parser.add_argument("--clips", nargs="+", help="only these clips' commands (default: all)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per command")
    parser.add_argument("--seconds", type=float, default=8.0, help="episode length (s)")
    parser.add_argument("--skip", type=float, default=2.0, help="seconds dropped at the start of episodes and clips")
    add_seed(parser)
    parser.add_argument("--out", default=f"{RUNS}/compare_gaits/gait_compare.png", help="the figure (PNG)")
    parser.add_argument("--json", help="all numbers as JSON")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(p).stem for p in args.policies]
    if len(labels) != len(args.policies) or len(set(labels)) != len(labels):
        fail(f"--labels: need {len(args.policies)} distinct labels, got {labels}")
    if args.episodes < 1 or not 0 <= args.skip < args.seconds:
        fail("--episodes must be >= 1 and 0 <= --skip < --seconds")
    try:
        motions = load_motions(args.motion_file)
        policies = [load_policy(p) for p in args.policies]
    except (MotionFileError, CheckpointError) as e:
        fail(str(e))
    names = args.clips or list(motions.clip_names)
    unknown = [n for n in names if n not in motions.clip_names]
    if unknown:
        fail(f"--clips: unknown {', '.join(unknown)} (clips: {', '.join(motions.clip_names)})")
    if args.skip >= motions.clip_lengths.min() / motions.fps - 1.0:
        fail(f"--skip {args.skip:g} s leaves less than 1 s of the shortest clip")

    model, t0 = load_model(SCENE_FLAT), time.perf_counter()
    print(f"reference: {len(names)} clips from {args.motion_file}", flush=True)
    commands = {n: motions.clip_commands[motions.clip_names.index(n)] for n in names}
    ref = measure(reference_windows(motions, names, args.skip, model), 1.0 / motions.fps, commands)
    report = dict(settings=dict(motion_file=str(args.motion_file), clips=names, episodes=args.episodes,
                                seconds=args.seconds, skip=args.skip, seed=args.seed, contact_z_m=CONTACT_Z,
                                min_air_frames=MIN_AIR, std_floor=dict(zip(FEATURE_NAMES, STD_FLOOR.tolist()))),
                  feature_names=list(FEATURE_NAMES),
                  reference={k: ref[k] for k in ("step_freq", "clearance", "stride", "vel_error", "vel_error_2s",
                                                 "joints")},
                  policies={})  # fmt: skip
    measured = {}
    for label, policy in zip(labels, policies):
        print(f"{label}: {len(names)} commands × {args.episodes} episodes × {args.seconds:g} s", flush=True)
        windows, falls = policy_windows(policy, motions, names, args.episodes, args.seconds, args.skip, args.seed,
                                        model)  # fmt: skip
        if not any(windows.values()):
            fail(f"{label}: every episode fell within the first {args.skip:g} s: nothing to compare")
        measured[label] = m = measure(windows, policy.module.CTRL_DT, commands)
        dist, per_feature = style_distance(m["features"], ref["features"])
        top = np.argsort(per_feature)[::-1][:5]
        spread = lambda stats, j: stats["overall"][j]["p95"] - stats["overall"][j]["p5"]  # noqa: E731
        diff = {j: abs(spread(m["joints"], j) - spread(ref["joints"], j)) for j in JOINT_NAMES}
        report["policies"][label] = dict(
            checkpoint=str(policy.path), algo=policy.meta["algo"], global_step=int(policy.meta["global_step"]),
            episodes=len(names) * args.episodes, falls=falls | {"overall": sum(falls.values())},
            style_distance=dist, style_top={FEATURE_NAMES[i]: float(per_feature[i]) for i in top},
            style_per_feature=dict(zip(FEATURE_NAMES, per_feature.tolist())),
            step_freq=m["step_freq"], clearance=m["clearance"], stride=m["stride"], vel_error=m["vel_error"],
            vel_error_2s=m["vel_error_2s"],
            range_diff=diff | {"mean": float(np.mean(list(diff.values())))},
            joints=m["joints"],
        )  # fmt: skip
    if len(labels) > 1:
        scale = ref["features"].std(axis=0)
        report["pairwise_style"] = {a: {b: style_distance(measured[a]["features"], measured[b]["features"], scale)[0]
                                        for b in labels} for a in labels}  # fmt: skip
    print(f"measured in {time.perf_counter() - t0:.0f} s\n")
    print_tables(report, names)

    samples = {"reference": ref["samples"]} | {lab: m["samples"] for lab, m in measured.items()}
    outputs = {Path(args.out): lambda p: plot(report, samples, names, p)}  # the figure first: it is what can fail
    if args.json:
        outputs[Path(args.json)] = lambda p: p.write_text(json.dumps(report, indent=2))
    for path, write in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, write)
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
