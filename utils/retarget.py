"""Human mocap (BVH) -> WildRobot clips the robot can perform: the human's timing, footsteps and swing, made feasible.

A human walk moved joint for joint onto this robot (`utils.bvh.retarget`) is not feasible: its ZMP leaves the feet,
the stance feet slide, and human steps, scaled, are 2-3 times what the robot's 5-degree hip extension allows. This
module keeps what makes a walk human (when each foot lifts and lands, where it lands relative to the other, the shape
and relative height of the swing) and re-solves the rest for the robot:
1. contact phases from the mocap: a foot is down while its heel or toe is near the floor and barely moving;
2. dynamic similarity: lengths scale by the leg ratio s = L_robot / L_human and time by sqrt(s) (speeds by sqrt(s),
   cadence by 1/sqrt(s)); step lengths shrink further to what the legs reach (`--max-step`), both scales reported;
3. footsteps placed from the human's, each relative to the stance foot (stance feet pinned flat, never sliding);
4. the CoM re-solved with the LIPM preview controller of utils.gait so the ZMP follows the stance feet, then the
   multibody-ZMP correction passes and the IK on the MJCF (joint limits kept) of the walking-pattern generator;
5. walking segments cut from the take (standing dropped), each a clip that starts from standing and ends standing;
   a segment shorter than `--min-seconds` repeats its steps; its command measured from the result.
Per clip it reports the `utils.motions check` numbers, open-loop servo playback in MuJoCo, and style: the correlation
of hip, knee and ankle pitch with the plain kinematic retarget of the same take.

    python -m utils.retarget assets/mocap/*.bvh --out /tmp/cmu_walk.npz --gif beside.gif   # feasible clips + report
    python -m utils.retarget walk.bvh --out walk_kin.npz --kinematic               # joint for joint, as captured
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import minimum_filter1d

from utils.bvh import ROBOT_LEG, BVHError, human_positions, parse, retarget
from utils.cli import add_command, add_size, command_arg, fail
from utils.gait import DT, FPS, GaitParams, solve_clip
from utils.kinematics import finite_qvel, heading_velocity
from utils.motions import clip_quality, save_motions, servo_playback
from utils.robot import JOINT_NAMES, SCENE_FLAT, load_model

MIRROR = (np.ones(3), np.array([1.0, -1.0, -1.0]))  # a right foot's step (x, y, yaw) as the left's, and back
STYLE_JOINTS = ("left_hip_pitch", "left_knee", "left_ankle_pitch", "right_hip_pitch", "right_knee", "right_ankle_pitch")


@dataclass(frozen=True)
class RetargetParams:
    human_leg: float = 0.85  # m, the subject's hip-to-ankle length (BVH units are not metres; an adult's default)
    max_step: float = 0.08  # m, longest step relative to the stance foot: the longer the step, the more the robot's
    # hip follows its leg rather than its knee (style); with plan_segment's swing floor playback stays up to 0.085 m
    contact_height: float = 0.015  # m (robot scale): a heel or toe this close to its floor level may be down ...
    contact_speed: float = 0.25  # m/s (robot scale, robot time): ... if it also moves slower than this
    standing_gap: float = 1.0  # s (human): no lift-off for this long ends a walking segment
    min_steps: int = 4  # fewer steps in a segment: not a walk
    min_seconds: float = 6.0  # s of walking per clip at least: a shorter segment repeats its steps
    max_yaw_step: float = 0.3  # rad, largest turn of one footstep (the sole twists on the floor: no hip yaw)


def above_floor(z: np.ndarray, fps: float) -> np.ndarray:
    """Height of a foot point above its floor level (T,): the floor is the point's lowest height within 0.75 s (a
    stride has a stance in any such window); mocap floors are not level to a centimetre over a walk."""
    return z - minimum_filter1d(z, size=int(1.5 * fps) | 1, mode="nearest")


def contacts(pos: np.ndarray, kp: dict, scale: float, fps: float, p: RetargetParams) -> np.ndarray:
    """(T, 2) bool, foot down: its heel (ankle) or toe within contact_height of that point's floor level and moving
    slower than contact_speed (robot scale and time); runs shorter than 0.05 s (robot) are noise and filled from their
    neighbours."""
    dt = np.sqrt(ROBOT_LEG / p.human_leg) / fps  # robot seconds per frame
    down = np.zeros((len(pos), 2), bool)
    for k in range(2):
        near = []
        for point in (kp["ankle"][k], kp["toe"][k]):
            z = pos[:, point, 2] * scale
            speed = np.linalg.norm(np.gradient(pos[:, point, :2] * scale, dt, axis=0), axis=1)
            near.append((above_floor(z, fps) < p.contact_height) & (speed < p.contact_speed))
        down[:, k] = near[0] | near[1]
        for value in (False, True):  # close short gaps, then remove short blips
            runs = np.flatnonzero(np.diff(np.r_[False, down[:, k] == value, False].astype(int)))
            for a, b in zip(runs[::2], runs[1::2]):
                if b - a < max(3, 0.05 / dt) and a > 0 and b < len(pos):
                    down[a:b, k] = not value
    return down


def foot_poses(pos: np.ndarray, kp: dict, scale: float) -> np.ndarray:
    """(T, 2, 3) x, y (robot-scale metres) of the foot's middle (ankle-toe) and its yaw (ankle -> toe)."""
    out = np.zeros((len(pos), 2, 3))
    for k in range(2):
        ankle, toe = pos[:, kp["ankle"][k]], pos[:, kp["toe"][k]]
        out[:, k, :2] = (ankle[:, :2] + toe[:, :2]) / 2 * scale
        out[:, k, 2] = np.arctan2(toe[:, 1] - ankle[:, 1], toe[:, 0] - ankle[:, 0])
    return out


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pose b (x, y, yaw) in the frame of pose a."""
    c, s = np.cos(a[2]), np.sin(a[2])
    d = b[:2] - a[:2]
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], np.angle(np.exp(1j * (b[2] - a[2])))])


def compose(a: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Pose a moved by rel (x, y, yaw in a's frame)."""
    c, s = np.cos(a[2]), np.sin(a[2])
    return np.array([a[0] + c * rel[0] - s * rel[1], a[1] + s * rel[0] + c * rel[1], a[2] + rel[2]])


def segments(down: np.ndarray, fps: float, p: RetargetParams) -> list[list[tuple]]:
    """Walking segments: lists of swings (foot, lift-off frame, touch-down frame), alternating feet, each swing ending
    on the floor, none starting more than standing_gap after the previous touch-down."""
    swings = []
    for k in range(2):
        lifts = np.flatnonzero(down[:-1, k] & ~down[1:, k]) + 1
        lands = np.flatnonzero(~down[:-1, k] & down[1:, k]) + 1
        swings += [(k, a, lands[lands > a][0]) for a in lifts if (lands > a).any()]
    swings.sort(key=lambda s: s[1])
    out, current = [], []
    for s in swings:
        last = current[-1] if current else None
        if last and (s[1] - last[2] > p.standing_gap * fps or s[0] == last[0] or s[1] < last[2]):
            out.append(current)
            current = []
        if not down[s[1] - 1, 1 - s[0]] or not down[s[1] : s[2], 1 - s[0]].all():
            continue  # the other foot must hold the body through the swing (a walk, not a run or a hop)
        current.append(s)
    out.append(current)
    return [seg for seg in out if len(seg) >= p.min_steps]


def plan_segment(seg, pos, kp, scale: float, fps: float, p: RetargetParams, g: GaitParams):
    """The robot's plan (utils.gait.solve_clip's input) for one walking segment, plus the clip's time map."""
    time_scale = np.sqrt(ROBOT_LEG / p.human_leg)  # robot seconds per human second
    feet_h = foot_poses(pos, kp, scale)
    # the swing height: the lower of heel and toe above their floor levels, the clearance of a flat sole. Any other
    # point of the foot rises as the heel lifts before toe-off and as the toes lift before heel strike; the mean of
    # heel and toe kept the robot's knee bent up to the landing, where the human's straightens
    low = np.stack([np.minimum(*(above_floor(pos[:, kp[j][k], 2], fps) for j in ("ankle", "toe")))
                    for k in range(2)], axis=1) * scale  # (T, 2)  # fmt: skip
    if len(seg) % 2:
        seg = seg[:-1]  # an even number of steps: the repeated cycle keeps the feet alternating
    # each step: the landing pose relative to the stance foot, scaled; timing in robot seconds
    steps, rel = [], []
    for k, a, b in seg:
        stance = np.median(feet_h[a:b, 1 - k], axis=0)
        land = np.median(feet_h[b : b + max(2, int(0.05 * fps)), k], axis=0)
        rel.append(relative(stance, land) * MIRROR[k])  # as if the left foot swings
    rel = np.array(rel)
    width, toe_out = np.mean(rel[:, 1]), np.mean(rel[:, 2])  # the human's step width (robot scale) and toe-out
    robot_width = 2 * g.half_width
    stride = min(1.0, p.max_step / max(np.percentile(np.abs(rel[:, 0]), 90), 1e-6))
    for (k, a, b), r in zip(seg, rel):
        dy = robot_width + stride * (r[1] - width)
        turn = np.clip(r[2] - toe_out, -p.max_yaw_step, p.max_yaw_step)  # the robot's feet stay parallel: no hip yaw
        r = np.array([stride * r[0], max(dy, 0.09 + g.min_gap), turn])
        path = feet_h[a : b + 1, k, :2] - feet_h[a, k, :2]
        span = feet_h[b, k, :2] - feet_h[a, k, :2]
        progress = np.maximum.accumulate(path @ span / max(span @ span, 1e-9))
        progress = (progress - progress[0]) / max(progress[-1] - progress[0], 1e-9)  # from the lift-off to the landing
        lift = np.clip(low[a : b + 1, k] - np.linspace(low[a, k], low[b, k], b - a + 1), 0.0, None)
        # one rise and one fall: a dip in mid-swing is filled
        lift = np.minimum(np.maximum.accumulate(lift), np.maximum.accumulate(lift[::-1])[::-1])
        # at least the walking-pattern generator's swing (sin^2, g.clearance apex): with the lower of heel and toe
        # alone, open-loop playback fell after 3-5 s
        lift = np.maximum(lift, g.clearance * np.sin(np.linspace(0.0, np.pi, len(lift))) ** 2)
        # a flat sole cannot roll off its toe or onto its heel: it moves sideways only while clear of the floor, so
        # the human's progress is squeezed into the part of the swing that is at least 4 mm up
        up = np.flatnonzero(lift > 0.004)
        i0, i1 = (up[0], up[-1]) if len(up) > 1 else (0, len(lift) - 1)
        progress = np.interp(np.arange(len(lift)), np.linspace(i0, i1, len(progress)), progress)
        steps.append(dict(foot=k, rel=r * MIRROR[k], progress=progress, lift=lift))
    lifts = np.array([a for _, a, _ in seg]) / fps * time_scale
    lands = np.array([b for _, _, b in seg]) / fps * time_scale
    cycle_gap = np.mean(lifts[1:] - lands[:-1])  # double support between cycles, when the steps repeat
    period = lands[-1] - lifts[0] + cycle_gap
    repeat = max(1, int(np.ceil(p.min_seconds / period)))
    t_first = g.stand_time + g.first_shift
    events = []  # (step, lift-off, touch-down) in clip seconds
    for r in range(repeat):
        offset = t_first + r * period - lifts[0]
        events += [(steps[i], lifts[i] + offset, lands[i] + offset) for i in range(len(steps))]
    t_end = events[-1][2] + 0.3 + 1.0  # the last double support, then standing
    horizon = int(round(g.preview * FPS))
    n = int(round(t_end * FPS)) + horizon
    # footprints: the robot starts with its feet side by side at the walking width, facing +x
    first = events[0][0]["foot"]
    pose = [np.zeros(3), np.zeros(3)]
    pose[first][1], pose[1 - first][1] = (robot_width / 2, -robot_width / 2)[:: 1 if first == 0 else -1]
    feet = np.zeros((n, 2, 3))
    lift = np.zeros((n, 2))
    feet[:] = np.array(pose)
    mid = (pose[0][:2] + pose[1][:2]) / 2
    zmp = np.tile(mid, (n, 1))
    i_shift, i_first = int(round(g.stand_time * FPS)), int(round(t_first * FPS))
    zmp[i_shift:i_first] = np.linspace(mid, pose[1 - first][:2], i_first - i_shift)
    prev_end = i_first
    for step, t_lift, t_land in events:
        k = step["foot"]
        target = compose(pose[1 - k], step["rel"])
        i0, i1 = int(round(t_lift * FPS)), int(round(t_land * FPS))
        zmp[prev_end:i0] = np.linspace(zmp[prev_end - 1], pose[1 - k][:2], i0 - prev_end + 1)[1:]  # double support
        zmp[i0:i1] = pose[1 - k][:2]
        src = np.linspace(0.0, 1.0, len(step["progress"]))
        phase = np.linspace(0.0, 1.0, i1 - i0)
        u = np.interp(phase, src, step["progress"])
        swing = pose[k] + u[:, None] * (target - pose[k])
        feet[i0:i1, k] = swing
        feet[i1:, k] = target
        lift[i0:i1, k] = np.interp(phase, src, step["lift"])
        pose[k] = target
        prev_end = i1
    final = (pose[0][:2] + pose[1][:2]) / 2
    i_stop = min(prev_end + int(round(0.3 * FPS)), n)
    zmp[prev_end:i_stop] = np.linspace(zmp[prev_end - 1], final, i_stop - prev_end + 1)[1:]
    zmp[i_stop:] = final
    walk_heading = np.angle(np.exp(1j * feet[:, 0, 2]) + np.exp(1j * feet[:, 1, 2]))
    # the pelvis at the generator's walking height (the human's bob, scaled, made the style measure worse: 0.78 -> 0.70
    # and 0.69 -> 0.65 on the shipped takes, with 1.2 cm of it)
    root_z = np.full(n, g.root_height)
    ref = dict(feet=feet, lift=lift, zmp=zmp, heading=walk_heading, horizon=horizon)
    info = dict(stride=stride, time_scale=time_scale, repeat=repeat, t_first=t_first, t_walk_end=events[-1][2],
                human_start=seg[0][1] / fps, human_end=seg[-1][2] / fps,
                cadence=len(steps) / period)  # fmt: skip
    return ref, root_z, info


def style_correlation(qpos: np.ndarray, kinematic: np.ndarray, info: dict, fps: float) -> float:
    """Mean Pearson correlation of hip, knee and ankle pitch over the clip's first pass through the take, against the
    kinematic retarget at the same human instants."""
    t_clip = np.arange(len(qpos)) / FPS
    first = (t_clip >= info["t_first"]) & (t_clip <= info["t_first"] + (info["human_end"] - info["human_start"])
                                           * info["time_scale"])  # fmt: skip
    t_human = info["human_start"] + (t_clip[first] - info["t_first"]) / info["time_scale"]
    cols = [7 + JOINT_NAMES.index(j) for j in STYLE_JOINTS]
    t_kin = np.arange(len(kinematic)) / fps
    corr = [np.corrcoef(qpos[first, c], np.interp(t_human, t_kin, kinematic[:, c]))[0, 1] for c in cols]
    return float(np.mean(corr))


def take_to_clips(path: Path, p: RetargetParams = RetargetParams(), g: GaitParams = GaitParams(), up: str = "y",
                  log=print) -> list[dict]:  # fmt: skip
    """Feasible clips from one BVH take: dicts of name, qpos, qvel, command, and the numbers of the report."""
    model = load_model(SCENE_FLAT)
    sk = parse(path)
    fps = 1.0 / sk.frame_time if sk.frame_time > 0 else 0.0
    if not 20 <= fps <= 1000:
        raise BVHError(f"frame time {sk.frame_time} s is not a mocap rate")
    pos, kp, leg_units = human_positions(sk, fps, up)
    scale = ROBOT_LEG / leg_units  # robot metres per BVH unit
    down = contacts(pos, kp, scale, fps, p)
    segs = segments(down, fps, p)
    if not segs:
        raise BVHError(f"no walking found (at least {p.min_steps} alternating steps)")
    kinematic, _ = retarget(sk, fps=FPS, up=up)
    clips = []
    for i, seg in enumerate(segs):
        ref, root_z, info = plan_segment(seg, pos, kp, scale, fps, p, g)
        qpos, qvel = solve_clip(model, ref, root_z)
        walk = slice(int(info["t_first"] * FPS), int(info["t_walk_end"] * FPS))
        command = np.round(heading_velocity(qpos.astype(np.float64), qvel.astype(np.float64), DT)[walk].mean(0), 3)
        name = f"{Path(path).stem}_{i}"
        quality = clip_quality(model, qpos, qvel, FPS, command)
        playback = servo_playback(qpos, qvel, FPS, seconds=max(5.0, len(qpos) / FPS))
        style = style_correlation(qpos, kinematic, info, FPS)
        human = (info["human_start"], info["human_end"])
        clips.append(dict(name=name, qpos=qpos, qvel=qvel, command=command, quality=quality, playback=playback,
                          style=style, human=human, scale=scale, skeleton=(sk.parents, pos, fps), **info))  # fmt: skip
        log(report_line(clips[-1]))
    return clips


def render_beside(clip: dict, out: Path, size=(480, 320)) -> Path:
    """GIF of the clip's first pass through the take with the human (scaled by the leg ratio, its pelvis carried
    beside the robot's, as on a treadmill) in the same view, frame for frame in clip time."""
    import mujoco

    from utils.render import headless_gl, plain_floor, write_frames

    headless_gl()
    model = plain_floor(load_model(SCENE_FLAT))
    data = mujoco.MjData(model)
    scale, qpos = clip["scale"], clip["qpos"].astype(np.float64)
    sk_parents, pos, fps = clip["skeleton"]
    floor = np.percentile(pos[..., 2].min(axis=1), 5)
    last = int((clip["t_first"] + (clip["human"][1] - clip["human"][0]) * clip["time_scale"]) * FPS)
    frames = []
    with mujoco.Renderer(model, height=size[1], width=size[0]) as renderer:
        for i in range(min(last, len(qpos))):
            t_h = clip["human"][0] + max(0.0, i / FPS - clip["t_first"]) / clip["time_scale"]
            f = min(int(round(t_h * fps)), len(pos) - 1)
            data.qpos[:] = qpos[i]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera="track")
            # the skeleton's centroid carried 0.4 m to the robot's left (the camera looks from its right side)
            body = (pos[f] - [*pos[f, :, :2].mean(axis=0), floor]) * scale + [data.qpos[0], data.qpos[1] + 0.4, 0.0]
            scene = renderer.scene
            for j, parent in enumerate(sk_parents):
                if parent < 0 or np.linalg.norm(body[j] - body[parent]) < 1e-4 or scene.ngeom >= scene.maxgeom:
                    continue
                g = scene.geoms[scene.ngeom]
                mujoco.mjv_initGeom(g, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.eye(3).ravel(),
                                    np.array([0.9, 0.5, 0.2, 1.0], np.float32))  # fmt: skip
                mujoco.mjv_connector(g, mujoco.mjtGeom.mjGEOM_CAPSULE, 0.008, body[parent], body[j])
                scene.ngeom += 1
            frames.append(renderer.render().copy())
    return write_frames(frames, out, FPS)


def report_line(c: dict) -> str:
    q, up = c["quality"], c["playback"]
    fell = f"fell {up['fell_at']:.1f} s" if up["fell_at"] else f"up {up['seconds']:.1f} s"
    return (f"  {c['name']}: human {c['human'][0]:.2f}-{c['human'][1]:.2f} s, {c['cadence']:.2f} steps/s, stride x"
            f"{c['stride']:.2f}, {len(c['qpos']) / FPS:.1f} s | ZMP in {q['zmp_inside']:.1f} %, slide "
            f"{q['slide']:.3f} m/s, pen {1000 * q['penetration']:.1f} mm, margin {q['limit_margin']:.3f} rad, clear "
            f"{100 * q['clearance']:.1f} cm | playback {fell} | style {c['style']:.2f}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bvh", nargs="+", type=Path, help="BVH takes (CMU-style skeletons)")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--up", choices=("x", "y", "z"), default="y", help="the BVH's up axis (CMU: y)")
    parser.add_argument("--human-leg", type=float, default=RetargetParams.human_leg, help="subject's hip-to-ankle (m)")
    parser.add_argument("--max-step", type=float, default=RetargetParams.max_step, help="longest robot step (m)")
    parser.add_argument("--min-seconds", type=float, default=RetargetParams.min_seconds, help="shortest walk per clip")
    parser.add_argument("--kinematic", action="store_true", help="joint for joint, not made feasible (one clip)")
    parser.add_argument("--scale", type=float, default=None, help="--kinematic: metres per BVH unit (default: legs)")
    add_command(parser, "stand", "--kinematic: the clip's command")
    parser.add_argument("--gif", type=Path, default=None, help="the first clip beside its human source, as a GIF")
    add_size(parser, 480, 320)
    args = parser.parse_args(argv)
    if args.human_leg <= 0 or args.max_step <= 0 or args.min_seconds < 0:
        fail("--human-leg and --max-step must be > 0 and --min-seconds >= 0")
    if args.kinematic and (len(args.bvh) != 1 or args.gif):
        fail("--kinematic takes one BVH file and no --gif")
    if args.gif:
        from utils.render import require_gl

        require_gl("--gif")
    p = RetargetParams(human_leg=args.human_leg, max_step=args.max_step, min_seconds=args.min_seconds)
    model = load_model(SCENE_FLAT)
    clips = []
    for path in args.bvh:
        try:
            if args.kinematic:
                qpos, scale = retarget(parse(path), args.scale, FPS, args.up)
                clips.append(dict(name=path.stem, qpos=qpos, qvel=finite_qvel(model, qpos, DT),
                                  command=np.array(command_arg(args.command))))  # fmt: skip
                print(f"{path}: kinematic retarget, scale {scale:.5f} m per BVH unit")
            else:
                print(f"{path}:")
                clips += take_to_clips(path, p, up=args.up)
        except (BVHError, ValueError, IndexError, OSError) as err:
            fail(f"{path}: {err}")
    starts = np.cumsum([0] + [len(c["qpos"]) for c in clips[:-1]])
    save_motions(args.out, FPS, np.concatenate([c["qpos"] for c in clips]), np.concatenate([c["qvel"] for c in clips]),
                 [c["name"] for c in clips], starts, [len(c["qpos"]) for c in clips],
                 [c["command"] for c in clips], joint_names=JOINT_NAMES)  # fmt: skip
    print(f"wrote {args.out}: {len(clips)} clips")
    if args.gif:
        print(f"wrote {render_beside(clips[0], args.gif, (args.width, args.height))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
