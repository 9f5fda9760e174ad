"""Reference-motion files: the `.npz` format, a safe loader, a quality report, rendering and physics tracking.

Format (np.savez or np.savez_compressed; read only with `np.load(..., allow_pickle=False)`, so a user file can never
run code):
    fps            float scalar (50)
    qpos           float32 [T, 18]  root pos xyz, root quat wxyz, 11 joints in JOINT_NAMES order
    qvel           float32 [T, 17]  MuJoCo free-joint convention: world linear vel, body angular vel, joint vels
    joint_names    str [11]         must equal utils.robot.JOINT_NAMES (another robot's file is rejected)
    clip_names     str [C]
    clip_starts    int64 [C]        first frame of each clip
    clip_lengths   int64 [C]
    clip_commands  float32 [C, 3]   vx, vy (m/s), yaw_rate (rad/s) in the heading frame

    python -m utils.motions check assets/motions/*.npz                       # validate + quality report per clip
    python -m utils.motions render assets/motions/wildrobot_walk.npz --clip forward_0.2 --out clip.gif
    python -m utils.motions track assets/motions/wildrobot_walk.npz --clip forward_0.2   # servos, plain MuJoCo
"""

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from utils.cli import EXIT_CHECK, add_size, fail
from utils.kinematics import (
    CONTACT_Z,
    convex_hull,
    feet_kinematics,
    heading_velocity,
    inside_hull,
    multibody_zmp,
    sole_contact,
)
from utils.robot import ASSETS, JOINT_NAMES, SCENE_FLAT, load_model

NQ, NV = 7 + len(JOINT_NAMES), 6 + len(JOINT_NAMES)
LIMIT_TOL = 1e-3  # rad beyond the MJCF range that is still accepted (float32 rounding)
KEYS = ("fps", "qpos", "qvel", "joint_names", "clip_names", "clip_starts", "clip_lengths", "clip_commands")


class MotionFileError(ValueError):
    """A motion file that cannot be used; the message starts with the file path."""


@dataclass(frozen=True)
class Motions:
    """All clips of one or more files, frames concatenated; `clip(name)` gives a clip's frame slice."""

    fps: float
    qpos: np.ndarray  # [T, 18] float32
    qvel: np.ndarray  # [T, 17] float32
    joint_names: tuple[str, ...]  # [11]
    clip_names: tuple[str, ...]  # [C]
    clip_starts: np.ndarray  # [C] int64, offsets into the concatenated frames
    clip_lengths: np.ndarray  # [C] int64
    clip_commands: np.ndarray  # [C, 3] float32
    source: list[Path] = field(default_factory=list)  # one entry per file

    def clip(self, name: str) -> slice:
        if name not in self.clip_names:
            raise KeyError(f"no clip {name!r}; clips: {', '.join(self.clip_names)}")
        i = self.clip_names.index(name)
        return slice(int(self.clip_starts[i]), int(self.clip_starts[i] + self.clip_lengths[i]))


def _joint_ranges() -> np.ndarray:
    model = load_model(SCENE_FLAT)
    return model.jnt_range[1:].copy()  # (11, 2), hinge joints after the free root


def _load_one(path: Path, ranges: np.ndarray) -> dict:
    def reject(problem: str):
        raise MotionFileError(f"{path}: {problem}")

    if not path.is_file():
        reject("missing file (no such file)")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # np.load would take any other file for a pickle
            reject("not an .npz archive (expected a zip file written by np.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in KEYS if k in npz.files}
    except ValueError as err:  # np.load raises ValueError on object arrays when allow_pickle=False
        if "pickle" in str(err):
            reject("contains pickled object arrays (refused: loading them could run code)")
        reject(f"not a readable .npz ({err})")
    except (OSError, EOFError) as err:
        reject(f"not a readable .npz ({err})")
    missing = [k for k in KEYS if k not in raw]
    if missing:
        reject(f"missing keys {missing}")
    for key, value in raw.items():
        if value.dtype == object:
            reject(f"{key} is an object array")
    if raw["fps"].shape != () or not np.issubdtype(raw["fps"].dtype, np.number):
        reject(f"fps must be a numeric scalar, got shape {raw['fps'].shape}")
    fps = float(raw["fps"])
    if not np.isfinite(fps) or fps <= 0:
        reject(f"fps must be positive, got {fps}")
    qpos, qvel = raw["qpos"], raw["qvel"]
    if qpos.ndim != 2 or qpos.shape[1] != NQ:
        reject(f"wrong shape: qpos is {qpos.shape}, expected [T, {NQ}]")
    if qvel.shape != (qpos.shape[0], NV):
        reject(f"wrong shape: qvel is {qvel.shape}, expected [{qpos.shape[0]}, {NV}]")
    names = raw["joint_names"]
    if names.dtype.kind != "U" or tuple(names.tolist()) != JOINT_NAMES:
        reject(f"wrong joint names (another robot?): {names.tolist()} != {list(JOINT_NAMES)}")
    n_clips = len(raw["clip_names"])
    if qpos.shape[0] == 0 or n_clips == 0:
        reject(f"empty: {qpos.shape[0]} frames, {n_clips} clips")
    if raw["clip_names"].dtype.kind != "U" or raw["clip_names"].ndim != 1:
        reject("clip_names must be a 1-D string array")
    for key, shape in (("clip_starts", (n_clips,)), ("clip_lengths", (n_clips,)), ("clip_commands", (n_clips, 3))):
        if raw[key].shape != shape or not np.issubdtype(raw[key].dtype, np.number):
            reject(f"wrong shape: {key} is {raw[key].shape} {raw[key].dtype}, expected {list(shape)}")
    for key in ("qpos", "qvel", "clip_commands"):
        bad = ~np.isfinite(raw[key])
        if bad.any():
            frame = np.argwhere(bad)[0]
            reject(f"non-finite values (NaN/inf) in {key}, first at index {frame.tolist()}")
    norm = np.linalg.norm(qpos[:, 3:7].astype(np.float64), axis=1)
    if np.abs(norm - 1).max() > 1e-3:
        reject(f"root quaternion not unit length (|q| = {norm[np.argmax(np.abs(norm - 1))]:.4f}); expected wxyz")
    starts, lengths = raw["clip_starts"].astype(np.int64), raw["clip_lengths"].astype(np.int64)
    if (lengths <= 0).any() or (starts < 0).any() or (starts + lengths > qpos.shape[0]).any():
        reject(f"clip boundaries out of range for {qpos.shape[0]} frames: starts {starts}, lengths {lengths}")
    joints = qpos[:, 7:].astype(np.float64)
    below, above = ranges[:, 0] - LIMIT_TOL - joints, joints - ranges[:, 1] - LIMIT_TOL
    excess = np.maximum(below, above)
    if (excess > 0).any():
        t, j = np.unravel_index(np.argmax(excess), excess.shape)
        value, limits = joints[t, j], ranges[j].tolist()
        reject(f"joint limit exceeded: {JOINT_NAMES[j]} = {value:.4f} rad at frame {t}, range {limits}")
    return dict(
        fps=fps,
        qpos=qpos.astype(np.float32),
        qvel=qvel.astype(np.float32),
        clip_names=list(raw["clip_names"].tolist()),
        clip_starts=starts,
        clip_lengths=lengths,
        clip_commands=raw["clip_commands"].astype(np.float32),
    )


def load_motions(paths: str | Path | list) -> Motions:
    """Load and validate one file, a directory (all *.npz, sorted) or a list of them; clips are concatenated. A relative
    path is looked up from the current folder, then from the repository's (where the shipped motions are)."""
    files = []
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        p = next((path for path in (Path(p), ASSETS.parent / p) if path.exists()), Path(p))
        files += sorted(p.glob("*.npz")) if p.is_dir() else [p]
    if not files:
        raise MotionFileError(f"{paths}: empty (no .npz files)")
    ranges = _joint_ranges()
    parts = [_load_one(f, ranges) for f in files]
    if len({part["fps"] for part in parts}) > 1:
        raise MotionFileError(f"{files[0]}: fps differs between files {[part['fps'] for part in parts]}")
    offsets = np.cumsum([0] + [len(part["qpos"]) for part in parts[:-1]])
    return Motions(
        fps=parts[0]["fps"],
        qpos=np.concatenate([part["qpos"] for part in parts]),
        qvel=np.concatenate([part["qvel"] for part in parts]),
        joint_names=JOINT_NAMES,
        clip_names=tuple(name for part in parts for name in part["clip_names"]),
        clip_starts=np.concatenate([part["clip_starts"] + off for part, off in zip(parts, offsets)]),
        clip_lengths=np.concatenate([part["clip_lengths"] for part in parts]),
        clip_commands=np.concatenate([part["clip_commands"] for part in parts]),
        source=files,
    )


def load_motions_or_exit(paths, flag: str = "") -> Motions:
    """load_motions for the command-line programs: a bad file ends the program with its one-line error after `flag`."""
    try:
        return load_motions(paths)
    except MotionFileError as e:
        fail(f"{flag} {e}".strip())


def save_motions(path, fps, qpos, qvel, clip_names, clip_starts, clip_lengths, clip_commands, joint_names=JOINT_NAMES):
    """Write a motion file atomically (temp file + os.replace), float32, compressed; then validate it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(
        tmp,
        fps=np.float64(fps),
        qpos=np.asarray(qpos, np.float32),
        qvel=np.asarray(qvel, np.float32),
        joint_names=np.array(joint_names, dtype=str),
        clip_names=np.array(clip_names, dtype=str),
        clip_starts=np.asarray(clip_starts, np.int64),
        clip_lengths=np.asarray(clip_lengths, np.int64),
        clip_commands=np.asarray(clip_commands, np.float32),
    )
    try:
        _load_one(tmp, _joint_ranges())
    except MotionFileError as err:
        tmp.unlink()
        raise MotionFileError(str(err).replace(str(tmp), str(path))) from None
    os.replace(tmp, path)
    return path


def gait_phase(model: mujoco.MjModel, qpos: np.ndarray, fps: float, frequency: float) -> np.ndarray:
    """(T,) the training env's gait clock (rad, in [0, 2π)) along one clip: 0 where the left sole lifts off, π where
    the right one does, linear in time in between; before the first and after the last lift-off it runs at
    `frequency` Hz. A clip without a lift-off (standing) is at 0. A lift-off within 0.2 s of the same foot's last
    one is the same step (a sole grazing the floor mid-swing)."""
    contact = sole_contact(feet_kinematics(model, qpos)[1])  # (T, 2)
    frames, values, last = [], [], {0: -np.inf, 1: -np.inf}
    for i, k in zip(*np.nonzero(contact[:-1] & ~contact[1:])):  # frame i + 1 is the first in the air, left first
        if i + 1 - last[k] < 0.2 * fps:
            continue
        last[k] = i + 1
        target = k * np.pi  # the phase this lift-off is at, modulo 2π
        value = target if not values else values[-1] + (target - values[-1] - 1e-6) % (2 * np.pi) + 1e-6
        frames.append(i + 1)
        values.append(value)
    t = np.arange(len(qpos), dtype=np.float64)
    if not frames:
        return np.zeros(len(qpos), np.float32)
    rate = 2 * np.pi * frequency / fps  # rad per frame beyond the first and last lift-off
    phase = np.interp(t, frames, values)
    phase = np.where(t < frames[0], values[0] - rate * (frames[0] - t), phase)
    phase = np.where(t > frames[-1], values[-1] + rate * (t - frames[-1]), phase)
    return np.mod(phase, 2 * np.pi).astype(np.float32)


def reference_states(model: mujoco.MjModel, motions: Motions, ctrl,
                     frequency: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every clip frame as a state to start a training episode from (reference state initialization): {qpos (the
    pelvis moved over `home`'s xy), qvel, site_xpos, site_xmat, sensordata (one MuJoCo forward each)} (N, ...), with
    each frame's clip command (N, 3) and gait clock (N,) (`gait_phase` at `frequency`)."""
    frames = np.concatenate([np.arange(s, s + n) for s, n in zip(motions.clip_starts, motions.clip_lengths)])
    qpos, qvel = motions.qpos[frames].copy(), motions.qvel[frames]
    qpos[:, :2] = model.key_qpos[model.keyframe("home").id][:2]
    d, states = mujoco.MjData(model), {"qpos": qpos, "qvel": qvel, "site_xpos": [], "site_xmat": [], "sensordata": []}
    for q, v in zip(qpos, qvel):
        d.qpos[:], d.qvel[:], d.ctrl[:] = q, v, ctrl
        mujoco.mj_forward(model, d)
        for k in ("site_xpos", "site_xmat", "sensordata"):
            states[k].append(getattr(d, k).copy())
    phase = np.concatenate([gait_phase(model, motions.qpos[s : s + n], motions.fps, frequency)
                            for s, n in zip(motions.clip_starts, motions.clip_lengths)])  # fmt: skip
    command = np.repeat(motions.clip_commands, motions.clip_lengths, 0)
    return {k: np.asarray(v, np.float32) for k, v in states.items()}, command, phase


# ---------------------------------------------------------------------------------------------------------------
# quality report
# ---------------------------------------------------------------------------------------------------------------
def clip_quality(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray, fps: float, command) -> dict:
    """Quality numbers of one clip (see docs/motions.md for what each means)."""
    qpos, qvel = qpos.astype(np.float64), qvel.astype(np.float64)
    dt = 1.0 / fps
    feet, corners = feet_kinematics(model, qpos)
    low = corners[..., 2].min(axis=2)  # (T, 2) lowest sole corner
    contact = sole_contact(corners)
    zmp = multibody_zmp(model, qpos, qvel, dt)
    # support polygon: hull of the sole corners on the floor (a foot rolling onto its toe supports only along the toe)
    on = corners[..., 2] < CONTACT_Z  # (T, 2, 4)
    inside = [on[i].sum() >= 3 and inside_hull(zmp[i], convex_hull(corners[i][on[i]][:, :2])) for i in range(len(qpos))]
    # sliding: horizontal speed of the centre of the sole corners that touch the floor in three consecutive frames
    # (a foot rolling onto its toe is not sliding); twist: yaw rate of a foot flat on the floor (the 5-DOF leg has no
    # hip yaw, so turning pivots the planted foot about its centre)
    held = on[:-2] & on[1:-1] & on[2:]  # (T-2, 2, 4)
    slide, twist = 0.0, 0.0
    for i, k in zip(*np.nonzero(held.any(axis=2))):
        c = held[i, k]
        move = corners[i + 2, k, c, :2].mean(axis=0) - corners[i, k, c, :2].mean(axis=0)
        slide = max(slide, float(np.linalg.norm(move)) / (2 * dt))
        if c.all():
            angle = [np.arctan2(*(corners[j, k, 2, :2] - corners[j, k, 0, :2])[::-1]) for j in (i, i + 2)]
            twist = max(twist, abs(np.angle(np.exp(1j * (angle[1] - angle[0])))) / (2 * dt))
    ranges = model.jnt_range[1:]
    margin = np.minimum(qpos[:, 7:] - ranges[:, 0], ranges[:, 1] - qpos[:, 7:]).min()
    # clearance: highest lowest-corner of each swing (airborne run), the smallest over all swings
    apexes = []
    for k in range(2):
        run = []
        for i in range(len(qpos)):
            if not contact[i, k]:
                run.append(low[i, k])
            elif run:
                if len(run) > 2:  # ignore one-frame blips
                    apexes.append(max(run))
                run = []
    # mean velocity over the second half (after the start from standing), in the heading frame
    measured = heading_velocity(qpos, qvel, dt)[len(qpos) // 2 :].mean(axis=0)
    return dict(
        frames=len(qpos),
        zmp_inside=100.0 * np.mean(inside),
        slide=slide,
        twist=twist,
        penetration=float(max(0.0, -low.min())),
        flight=int(np.sum(~contact.any(axis=1))),
        limit_margin=float(margin),
        clearance=float(min(apexes)) if apexes else 0.0,
        velocity=measured,
        command=np.asarray(command, float),
    )


def report(path: Path, motions: Motions) -> None:
    model = load_model(SCENE_FLAT)
    print(f"{path}: {len(motions.qpos)} frames at {motions.fps:g} fps, {len(motions.clip_names)} clips")
    w = max(16, *map(len, motions.clip_names))  # names like forward_0.3_turn_left_0.25 are longer
    print(
        f"  {'clip':{w}s} {'s':>5s} {'ZMP in %':>8s} {'slide m/s':>9s} {'pen mm':>6s} {'flight':>6s} "
        f"{'twist':>5s} {'margin':>6s} {'clear cm':>8s}  {'velocity (vx vy wz)':>22s}  {'command':>18s}"
    )
    for name in motions.clip_names:
        sl = motions.clip(name)
        i = motions.clip_names.index(name)
        q = clip_quality(model, motions.qpos[sl], motions.qvel[sl], motions.fps, motions.clip_commands[i])
        vel = " ".join(f"{v:+.3f}" for v in q["velocity"])
        cmd = " ".join(f"{v:+.2f}" for v in q["command"])
        print(
            f"  {name:{w}s} {q['frames'] / motions.fps:5.1f} {q['zmp_inside']:8.1f} {q['slide']:9.4f} "
            f"{1000 * q['penetration']:6.2f} {q['flight']:6d} {q['twist']:5.2f} {q['limit_margin']:6.3f} "
            f"{100 * q['clearance']:8.2f}"
            f"  {vel:>22s}  {cmd:>18s}"
        )


# ---------------------------------------------------------------------------------------------------------------
# physics tracking: the clip's joint angles as servo targets, nothing else
# ---------------------------------------------------------------------------------------------------------------
def track(motions: Motions, name: str, seconds: float | None = None) -> dict:
    """Play a clip's qpos[7:] as ctrl in plain MuJoCo (free root, no assistance); how long does it stay up?"""
    sl = motions.clip(name)
    return dict(clip=name, **servo_playback(motions.qpos[sl], motions.qvel[sl], motions.fps, seconds))


def servo_playback(qpos: np.ndarray, qvel: np.ndarray, fps: float, seconds: float | None = None) -> dict:
    """`track` for arrays: from the first frame (qpos and qvel), each frame's joint angles as the servo targets; after
    the last frame its targets are held. Returns seconds played, fell_at (None: up), distance and ref_distance (m)."""
    model = load_model(SCENE_FLAT)
    data = mujoco.MjData(model)
    qpos, qvel = qpos.astype(np.float64), qvel.astype(np.float64)
    data.qpos[:], data.qvel[:] = qpos[0], qvel[0]
    mujoco.mj_forward(model, data)
    substeps = int(round(1.0 / fps / model.opt.timestep))
    steps = len(qpos) if seconds is None else int(seconds * fps)
    start, fallen_at = data.qpos[:2].copy(), None
    for i in range(steps):
        data.ctrl[:] = qpos[min(i, len(qpos) - 1), 7:]
        mujoco.mj_step(model, data, nstep=substeps)
        up_z = 1 - 2 * (data.qpos[4] ** 2 + data.qpos[5] ** 2)  # world z of the pelvis z axis
        if data.qpos[2] < 0.3 or up_z < 0.7:
            fallen_at = (i + 1) / fps
            break
    distance = float(np.linalg.norm(data.qpos[:2] - start))
    ref_distance = float(np.linalg.norm(qpos[min(steps, len(qpos)) - 1, :2] - qpos[0, :2]))
    return dict(seconds=steps / fps, fell_at=fallen_at, distance=distance, ref_distance=ref_distance)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate files and print the quality report per clip")
    check.add_argument("files", nargs="+", type=Path)
    render = sub.add_parser("render", help="GIF / MP4 / PNG of a clip")
    render.add_argument("file", type=Path)
    render.add_argument("--clip", default=None, help="clip name (default: the first)")
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--start", type=float, default=0.0, help="seconds into the clip")
    render.add_argument("--seconds", type=float, default=None, help="length (default: to the end)")
    render.add_argument("--every", type=int, default=1, help="keep every n-th frame (smaller GIFs)")
    add_size(render, 320, 240)
    render.add_argument("--strip", type=int, default=0, help="write a strip of this many frames instead (PNG)")
    tr = sub.add_parser("track", help="play clips' joint targets through the servos in plain MuJoCo")
    tr.add_argument("file", type=Path)
    tr.add_argument("--clip", nargs="*", default=None, help="clip names (default: all)")
    args = parser.parse_args(argv)
    failed = False
    try:
        if args.cmd == "check":
            for f in args.files:
                try:
                    report(f, load_motions(f))
                except MotionFileError as err:
                    print(f"error: {err}", file=sys.stderr)
                    failed = True
        elif args.cmd == "render":
            from utils.render import render_qpos, strip, write_frames

            motions = load_motions(args.file)
            qpos = motions.qpos[motions.clip(args.clip or motions.clip_names[0])]
            first = int(args.start * motions.fps)
            last = len(qpos) if args.seconds is None else first + int(args.seconds * motions.fps)
            frames = render_qpos(load_model(SCENE_FLAT), qpos[first:last : args.every], args.width, args.height)
            if args.strip:
                frames = [strip(frames, args.strip)]
            print(f"wrote {write_frames(frames, args.out, motions.fps / args.every)}")
        else:
            motions = load_motions(args.file)
            for name in args.clip or motions.clip_names:
                r = track(motions, name)
                up = f"fell at {r['fell_at']:.2f} s" if r["fell_at"] else f"up for all {r['seconds']:.1f} s"
                print(f"  {name:16s} {up:22s} moved {r['distance']:.2f} m (reference {r['ref_distance']:.2f} m)")
    except (MotionFileError, KeyError) as err:
        fail(str(err).strip("\"'"))
    return EXIT_CHECK if failed else 0


if __name__ == "__main__":
    sys.exit(main())
