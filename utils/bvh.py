"""BVH (CMU-style mocap) reader: parse, forward kinematics, keypoints, and the plain kinematic retarget.

`utils.retarget` turns a take into clips the robot can perform (and has the command line); `retarget` here is the
joint-for-joint version it measures style against: the human's hips, knees, ankles and toes relative to the pelvis,
scaled by the leg-length ratio (robot hip-to-ankle / human hip-to-ankle), re-anchored at the robot's own hips (the
robot's hips are narrower), tracked with damped-least-squares IK on the MJCF (free root included); then each frame is
lowered or raised so the lowest sole touches the floor. Positions are kept up to one global yaw that turns the subject
to face +x.

Format reference: https://research.cs.wisc.edu/graphics/Courses/cs-838-1999/Jeff/BVH.html
"""

import re
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from utils.kinematics import feet_kinematics, rotation_error, yaw_matrix
from utils.robot import FEET_SITES, JOINT_NAMES, SCENE_FLAT, load_model

# human joint names tried in order: CMU BVH (LeftUpLeg), CMU ASF (lfemur), Mixamo-like, generic
KEYPOINTS = {
    "hip": ("{S}UpLeg", "{s}femur", "{S}Hip", "{s}_hip", "{S}Thigh"),
    "knee": ("{S}Leg", "{s}tibia", "{S}Knee", "{s}_knee", "{S}Shin"),
    "ankle": ("{S}Foot", "{s}foot", "{S}Ankle", "{s}_ankle"),
    "toe": ("{S}ToeBase", "{s}toes", "{S}Toe", "{s}_toe", "{S}Toe_End"),
}
ROBOT_LEG = 0.192 + 0.180  # m, hip to ankle joint
ANKLE_TO_SITE = np.array([0.02, 0.0, -0.084])  # foot site relative to the ankle joint, foot frame


@dataclass
class Skeleton:
    names: list[str]
    parents: list[int]  # -1 for the root
    offsets: np.ndarray  # (J, 3)
    channels: list[list[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation", "Xrotation", "Yrotation"]
    motion: np.ndarray  # (F, total channels)
    frame_time: float


class BVHError(ValueError):
    pass


def parse(path: str | Path) -> Skeleton:
    """Parse HIERARCHY and MOTION; any channel order, position channels on any joint."""
    tokens = re.findall(r"[^\s{}]+|[{}]", Path(path).read_text())
    names, parents, offsets, channels, stack, i = [], [], [], [], [], 0
    if not tokens or tokens[0] != "HIERARCHY":
        raise BVHError(f"{path}: not a BVH file (no HIERARCHY)")
    i = 1
    while i < len(tokens) and tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append(np.zeros(3))
            channels.append([])
            i += 2
        elif tok == "End":  # end site: a leaf without channels; kept as a joint (named after its parent)
            names.append(names[stack[-1]] + "_End")
            parents.append(stack[-1])
            offsets.append(np.zeros(3))
            channels.append([])
            i += 2
        elif tok == "{":
            stack.append(len(names) - 1)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            offsets[stack[-1]] = np.array(tokens[i + 1 : i + 4], float)
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels[stack[-1]] = tokens[i + 2 : i + 2 + n]
            i += 2 + n
        else:
            raise BVHError(f"{path}: unexpected token {tok!r} in HIERARCHY")
    if i >= len(tokens):
        raise BVHError(f"{path}: no MOTION section")
    if "Frames:" not in tokens[i:] or "Time:" not in tokens[i:]:
        raise BVHError(f"{path}: MOTION has no 'Frames:' or 'Frame Time:' line")
    n_frames = int(tokens[tokens.index("Frames:", i) + 1])
    j = tokens.index("Time:", i)
    frame_time = float(tokens[j + 1])
    try:
        values = np.array(tokens[j + 2 :], float)
    except ValueError as err:
        raise BVHError(f"{path}: MOTION has a value that is not a number ({err})") from None
    width = sum(len(c) for c in channels)
    if values.size != n_frames * width:
        raise BVHError(f"{path}: MOTION has {values.size} numbers, expected {n_frames} frames x {width} channels")
    return Skeleton(names, parents, np.array(offsets), channels, values.reshape(n_frames, width), frame_time)


def _axis_rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotation about x / y / z by angle (rad)."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros((len(angle), 3, 3))
    a = "xyz".index(axis)
    b, d = (a + 1) % 3, (a + 2) % 3
    r[:, a, a] = 1
    r[:, b, b], r[:, b, d], r[:, d, b], r[:, d, d] = c, -s, s, c
    return r


def forward_kinematics(sk: Skeleton) -> np.ndarray:
    """World positions (F, J, 3) of every joint. Rotations compose in the listed channel order (intrinsic)."""
    n = len(sk.motion)
    rot, pos = np.zeros((len(sk.names), n, 3, 3)), np.zeros((len(sk.names), n, 3))
    col = 0
    for j, chans in enumerate(sk.channels):
        local_r, local_p = np.tile(np.eye(3), (n, 1, 1)), np.tile(sk.offsets[j], (n, 1))
        for ch in chans:
            v = sk.motion[:, col]
            col += 1
            if ch.endswith("position"):
                local_p[:, "XYZ".index(ch[0].upper())] += v
            else:
                local_r = local_r @ _axis_rot(ch[0].lower(), np.deg2rad(v))
        p = sk.parents[j]
        if p < 0:
            rot[j], pos[j] = local_r, local_p
        else:
            pos[j] = pos[p] + np.einsum("fij,fj->fi", rot[p], local_p)
            rot[j] = rot[p] @ local_r
    return pos.transpose(1, 0, 2)


def find_keypoints(sk: Skeleton) -> dict:
    """Indices of the human keypoints: {'hip': (left, right), ...}; raises BVHError naming what is missing."""
    lower = [n.lower() for n in sk.names]
    found = {}
    for key, patterns in KEYPOINTS.items():
        pair = []
        for side in ("Left", "Right"):
            cands = [p.format(S=side, s=side[0].lower()).lower() for p in patterns]
            cands += [p.format(S=side[0], s=side[0].lower()).lower() for p in patterns]  # LUpLeg-style names
            idx = next((lower.index(c) for c in cands if c in lower), None)
            if idx is None:
                raise BVHError(f"no {side.lower()} {key} joint (tried {', '.join(cands[:4])})")
            pair.append(idx)
        found[key] = tuple(pair)
    return found


def human_positions(sk: Skeleton, fps: float, up: str = "y") -> tuple[np.ndarray, dict, float]:
    """Joint positions (T, J, 3) at `fps` in BVH units, turned into the robot's axes: z up, x the subject's heading at
    the first frame (y to the subject's left, from the hips); the keypoints; the hip-to-ankle length in BVH units."""
    pos = forward_kinematics(sk)  # (F, J, 3)
    kp = find_keypoints(sk)
    if not np.isfinite(pos).all():
        raise BVHError("non-finite values in MOTION")
    jumps = np.linalg.norm(np.diff(pos, axis=0), axis=2).max(axis=1)  # (F-1,) largest joint move per frame
    if len(jumps) > 2 and jumps[0] > 10 * np.median(jumps[1:]):  # a rest pose first (CMU's conversions have one)
        pos = pos[1:]
    # resample to fps by linear interpolation (joint positions, not angles: simple and good enough at >= 30 Hz)
    t_src = np.arange(len(pos)) * sk.frame_time
    t_dst = np.arange(0.0, t_src[-1] + 1e-9, 1.0 / fps)
    flat = pos.reshape(len(pos), -1)  # (F, J*3)
    pos = np.stack([np.interp(t_dst, t_src, col) for col in flat.T], axis=1).reshape(len(t_dst), -1, 3)  # (T, J, 3)
    up_v = np.eye(3)["xyz".index(up)]
    left = pos[0, kp["hip"][0]] - pos[0, kp["hip"][1]]
    left = left - left @ up_v * up_v
    left /= np.linalg.norm(left)
    basis = np.stack([np.cross(left, up_v), left, up_v])  # rows: robot x, y, z in BVH coordinates
    pos = pos @ basis.T
    leg = np.linalg.norm(pos[0, kp["knee"][0]] - pos[0, kp["hip"][0]])
    leg += np.linalg.norm(pos[0, kp["ankle"][0]] - pos[0, kp["knee"][0]])
    return pos, kp, float(leg)


def retarget(sk: Skeleton, scale: float | None = None, fps: float = 50.0, up: str = "y", iters: int = 40):
    """Robot qpos (T, 18) at `fps` from a parsed skeleton, joint for joint (not made feasible: see utils.retarget);
    scale None = leg-length ratio."""
    model = load_model(SCENE_FLAT)
    data = mujoco.MjData(model)
    pos, kp, human_leg = human_positions(sk, fps, up)
    hips = pos[:, list(kp["hip"])]  # (T, 2, 3)
    scale = ROBOT_LEG / human_leg if scale is None else scale
    pelvis = hips.mean(axis=1)  # the hip-joint midpoint: better defined across skeletons than the root joint
    origin = pelvis[0] * np.array([1, 1, 0])
    lat = hips[:, 0] - hips[:, 1]
    yaw = np.arctan2(-lat[:, 0], lat[:, 1])  # heading: the hips' left axis rotated by -90 degrees
    home = model.key("home").qpos.copy()
    q = home.copy()
    q[:2] = 0
    hip_local = np.array([model.body(f"{s}_hip").pos for s in ("left", "right")])  # hip joints in the pelvis frame
    waist = 7 + JOINT_NAMES.index("waist_yaw")
    knee_b = [model.body(f"{s}_shank").id for s in ("left", "right")]
    ankle_b = [model.body(f"{s}_ankle").id for s in ("left", "right")]
    site = [model.site(s).id for s in FEET_SITES]
    lo, hi = model.jnt_range[1:, 0] + 0.005, model.jnt_range[1:, 1] - 0.005
    out, jp, jr = np.zeros((len(pos), model.nq)), np.zeros((3, model.nv)), np.zeros((3, model.nv))
    for f in range(len(pos)):
        rz = yaw_matrix(yaw[f])
        root_t = (pelvis[f] - origin) * scale - hip_local[0] * [0, 0, 1]  # the pelvis sits above the hip line
        tasks = []  # (kind, body or site id, target, weight)
        for k in range(2):
            hip_r = root_t + rz @ hip_local[k]
            knee_t = hip_r + scale * (pos[f, kp["knee"][k]] - hips[f, k])
            ankle_t = hip_r + scale * (pos[f, kp["ankle"][k]] - hips[f, k])
            toe = pos[f, kp["toe"][k]] - pos[f, kp["ankle"][k]]
            tasks.append(("body", knee_b[k], knee_t, 2.0))
            tasks.append(("body", ankle_b[k], ankle_t, 10.0))
            tasks.append(("flat", site[k], np.arctan2(toe[1], toe[0]), 5.0))
        for _ in range(iters):
            data.qpos[:] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)  # the Jacobians need cdof
            rows, errs = [], []
            mujoco.mj_jacBody(model, data, jp, jr, 1)
            rows += [10 * jp, 10 * jr]
            errs += [10 * (root_t - data.xpos[1]), 10 * rotation_error(data.xmat[1], rz)]
            for kind, idx, target, w in tasks:
                if kind == "body":
                    mujoco.mj_jacBody(model, data, jp, jr, idx)
                    rows.append(w * jp)
                    errs.append(w * (target - data.xpos[idx]))
                else:  # sole level, soft yaw along the human foot
                    mujoco.mj_jacSite(model, data, jp, jr, idx)
                    e = rotation_error(data.site_xmat[idx], yaw_matrix(target))
                    rows.append(w * jr * np.array([[1.0], [1.0], [0.05]]))
                    errs.append(w * e * np.array([1.0, 1.0, 0.05]))
            jac, err = np.vstack(rows), np.concatenate(errs)
            dq = np.linalg.solve(jac.T @ jac + 1e-4 * np.eye(model.nv), jac.T @ err)
            dq *= min(1.0, 0.3 / (np.abs(dq).max() + 1e-12))
            mujoco.mj_integratePos(model, q, dq, 1.0)
            q[7:] = np.clip(q[7:], lo, hi)
            q[waist] = 0.0  # no keypoint on the torso
        out[f] = q
    return _on_floor(model, out), scale


def _on_floor(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """Shift each frame vertically so the lowest sole corner is at z = 0 (mocap floors and scaling never agree)."""
    _, corners = feet_kinematics(model, qpos)
    qpos = qpos.copy()
    qpos[:, 2] -= corners[..., 2].reshape(len(qpos), -1).min(axis=1)
    return qpos
