"""Walking-pattern generator for the WildRobot: footstep plan -> LIPM ZMP preview control -> swing feet -> IK.

Each clip starts from standing, shifts the weight onto one foot and walks at a constant command (vx, vy, yaw_rate in
the heading frame). The centre of mass follows Kajita's ZMP preview control on the linear inverted pendulum; further
preview passes correct the CoM with the multibody ZMP error (the legs carry 64 % of the mass, so the LIPM alone is off
by 5-10 cm); damped-least-squares IK on the MJCF turns CoM / pelvis / feet targets into a full qpos (free root
included).

    python -m utils.gait --out assets/motions/wildrobot_walk.npz      # the shipped command grid (11 clips, 77 s)
    python -m utils.gait --out /tmp/fwd.npz --command forward_0.3 --seconds 6     # one clip for one command
    python -m utils.gait --out /tmp/arc.npz --command 0.3 0 0.25                    # (vx, vy, yaw rate)
    python -m utils.gait --out /tmp/lean.npz --pelvis-roll 2        # the pelvis leans 2 degrees over the stance foot
    python -m utils.gait --out /tmp/high.npz --clearance 5          # the swing soles clear 5 cm (default 3.5)

Kajita et al., "Biped walking pattern generation by using preview control of zero-moment point", ICRA 2003.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from utils.cli import COMMANDS, add_command, command_arg, command_name
from utils.kinematics import G, finite_qvel, multibody_zmp, rotation_error, yaw_matrix
from utils.motions import save_motions
from utils.robot import FEET_SITES, JOINT_NAMES, SCENE_FLAT, load_model

FPS = 50.0
DT = 1.0 / FPS
WAIST = JOINT_NAMES.index("waist_yaw")


@dataclass(frozen=True)
class GaitParams:
    step_time: float = 0.4  # s, one step = single support + double support (shorter at high speed, see max_step)
    min_step_time: float = 0.27  # s
    max_step: float = 0.12  # m, longest step: the 5-degree hip extension and 30-degree ankle limit the trailing leg
    double_support: float = 0.2  # fraction of a step
    clearance: float = 0.035  # m, swing-foot apex above the floor
    root_height: float = 0.46  # m, pelvis height while walking (home is 0.478: more crouch gives reach)
    zmp_back: float = 0.07  # s: ZMP target behind the sole centre by zmp_back * |vx| (m). At speed it puts the feet
    # further forward under the body, where the trailing leg is not stopped by the hip-extension limit; standing and
    # slow walking keep the weight centred on the soles (more forgiving for the servos)
    half_width: float = 0.0536  # m, lateral foot offset from the body path (hip spacing)
    min_gap: float = 0.012  # m, smallest gap between the two soles' inner edges
    stand_time: float = 0.6  # s, standing still before the first weight shift
    first_shift: float = 0.5  # s, initial double support that moves the ZMP onto the first stance foot
    ramp_time: float = 1.0  # s, command ramp from 0 to full (a gentle start keeps the ZMP inside the feet)
    preview: float = 1.6  # s, ZMP preview horizon
    pelvis_roll: float = 0.0  # rad, lean of the pelvis over the stance foot at mid-swing (the swing side up). The
    # servo-driven robot leans so (ppo_walk_h100: about 2 degrees peak at forward 0.3); a level pelvis does not


# the shipped grid: (name, vx, vy, yaw_rate), the command catalog of utils/cli.py
GRID = tuple((name, *command) for name, command in COMMANDS.items())


# ---------------------------------------------------------------------------------------------------------------
# ZMP preview control on the cart-table (LIPM) model
# ---------------------------------------------------------------------------------------------------------------
def preview_gains(zc: float, dt: float, horizon: int, q: float = 1.0, r: float = 1e-6):
    """LQ preview-tracking gains for the cart-table model x = [c, dc, ddc], u = jerk, zmp p = c - zc/g ddc.

    Returns the model (A [3, 3], B [3, 1], C [1, 3]) and the gains K [3], F [horizon] of the control law
    u_k = -K x_k + sum_j F_j p_ref[k+j]. The Riccati equation is solved by fixed-point iteration (a 3x3 system
    converges in a few hundred steps), so no scipy is needed. r/q is tiny: we want the ZMP to follow the reference
    closely, jerk is cheap at this scale.
    """
    a = np.array([[1.0, dt, dt * dt / 2], [0.0, 1.0, dt], [0.0, 0.0, 1.0]])
    b = np.array([[dt**3 / 6], [dt * dt / 2], [dt]])
    c = np.array([[1.0, 0.0, -zc / G]])
    p = c.T @ c * q
    for _ in range(10000):
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p_next = a.T @ p @ (a - b @ k) + c.T @ c * q
        if np.abs(p_next - p).max() < 1e-12 * max(1.0, np.abs(p).max()):
            break
        p = p_next
    gain = np.linalg.solve(r + b.T @ p @ b, b.T)  # (1, 3)
    k = gain @ p @ a
    ac = a - b @ k
    f, x = np.zeros(horizon), c.T * q  # (3, 1)
    for j in range(horizon):
        f[j] = (gain @ x).item()
        x = ac.T @ x
    return a, b, c, k.ravel(), f


def preview_com(zmp_ref: np.ndarray, zc: float, horizon: int, com0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoM (T, 2) whose cart-table ZMP tracks zmp_ref (T + horizon, 2); also returns that ZMP (T, 2)."""
    a, b, c, k, f = preview_gains(zc, DT, horizon)
    n = len(zmp_ref) - horizon
    x = np.zeros((3, 2))
    x[0] = com0
    com, zmp = np.zeros((n, 2)), np.zeros((n, 2))
    for i in range(n):
        com[i], zmp[i] = x[0], (c @ x).ravel()
        u = -k @ x + f @ zmp_ref[i + 1 : i + 1 + horizon]  # (2,)
        x = a @ x + b @ u[None]
    return com, zmp


# ---------------------------------------------------------------------------------------------------------------
# footstep plan, ZMP reference and swing-foot trajectories
# ---------------------------------------------------------------------------------------------------------------
def yaw_rot(yaw: float) -> np.ndarray:
    return yaw_matrix(yaw)[:2, :2]


def plan(command, seconds: float, p: GaitParams, foot_x: float):
    """Body path, footsteps and per-frame feet / ZMP references for `seconds` plus the preview horizon.

    Returns a dict of per-frame arrays: feet (T, 2, 3) xy + yaw per foot, lift (T, 2) height, zmp (T, 2),
    heading (T,), roll (T,) pelvis roll, stance (T, 2) bool.
    """
    vx, vy, wz = command
    horizon = int(round(p.preview * FPS))
    n = int(round(seconds * FPS)) + horizon
    t = np.arange(n) * DT
    walking = np.any(np.abs(command) > 1e-9)
    t_step = float(np.clip(p.max_step / max(abs(vx), 1e-9), p.min_step_time, p.step_time))
    t_ds = p.double_support * t_step
    # the feet must not overlap when one closes in sideways or the toes turn inwards: widen the stance as needed
    half_width = max(p.half_width, (0.09 + p.min_gap + abs(vy) * t_step) / 2)
    half_width += 0.074 * abs(wz) * t_step / 2
    # body path: the command ramps up after the stand and first shift, integrated in the heading frame
    t0 = p.stand_time + p.first_shift
    ramp = np.clip((t - t0 + t_step) / p.ramp_time, 0.0, 1.0) if walking else np.zeros(n)
    heading = np.cumsum(wz * ramp) * DT
    vel_world = np.einsum("tij,tj->ti", np.stack([yaw_rot(h) for h in heading]), np.outer(ramp, [vx, vy]))
    body = np.cumsum(vel_world, axis=0) * DT

    def zmp_of(pose):  # ZMP target of a foot pose (x, y, yaw)
        return pose[:2] - p.zmp_back * abs(vx) * np.array([np.cos(pose[2]), np.sin(pose[2])])

    def pose_at(time, side):  # side +1 left, -1 right: foot under the body path at `time`, offset sideways
        i = min(int(round(time * FPS)), n - 1)
        return np.array([*(body[i] + yaw_rot(heading[i]) @ [foot_x, side * half_width]), heading[i]])

    feet = np.zeros((n, 2, 3))
    lift = np.zeros((n, 2))
    roll = np.zeros(n)
    stance = np.ones((n, 2), bool)
    feet[:, 0], feet[:, 1] = pose_at(0, 1), pose_at(0, -1)
    # ZMP: centre of the feet while standing, then on the stance foot in single support, linear in double support
    zmp = np.tile((zmp_of(feet[0, 0]) + zmp_of(feet[0, 1])) / 2, (n, 1))
    if walking:
        # lead with the foot on the side of travel / turn (so the first step opens the stance rather than crosses)
        swing = 0 if (vy > 1e-9 or (abs(vy) < 1e-9 and wz >= 0)) else 1
        start = t0  # the first swing begins after the first weight shift
        positions = [pose_at(0, 1), pose_at(0, -1)]
        i_shift0, i_start = int(round(p.stand_time * FPS)), int(round(start * FPS))
        zmp[i_shift0:i_start] = np.linspace(zmp[0], zmp_of(positions[1 - swing]), i_start - i_shift0)
        while start < t[-1]:
            stance_foot = 1 - swing
            t_land = start + t_step - t_ds
            # place the swing foot where the body will be half a step after the next single support starts
            target = pose_at(t_land + t_step / 2, 1 if swing == 0 else -1)
            i0, i1, i2 = (min(int(round(x * FPS)), n) for x in (start, t_land, start + t_step))
            zmp[i0:i1] = zmp_of(positions[stance_foot])
            zmp[i1:i2] = np.linspace(zmp_of(positions[stance_foot]), zmp_of(target), i2 - i1 + 1)[1 : i2 - i1 + 1]
            phase = (np.arange(i0, i1) - i0 + 0.5) / max(i1 - i0, 1)
            # horizontal motion only in the middle 80 % of the swing, so the foot leaves and lands vertically
            s = np.clip((phase - 0.1) / 0.8, 0.0, 1.0)
            s = s**3 * (10 - 15 * s + 6 * s * s)  # quintic: zero velocity and acceleration at both ends
            swing_pose = positions[swing] + s[:, None] * (target - positions[swing])
            feet[i0:i1, swing] = swing_pose
            feet[i1:, swing] = target
            lift[i0:i1, swing] = p.clearance * np.sin(np.pi * phase) ** 2
            roll[i0:i1] = (1 if swing == 0 else -1) * p.pelvis_roll * np.sin(np.pi * phase) ** 2  # +x roll: left up
            stance[i0:i1, swing] = False
            positions[swing] = target
            swing, start = stance_foot, start + t_step
    return dict(feet=feet, lift=lift, zmp=zmp, heading=heading, roll=roll, stance=stance, horizon=horizon)


# ---------------------------------------------------------------------------------------------------------------
# inverse kinematics (weighted damped least squares on the full qpos, free root included)
# ---------------------------------------------------------------------------------------------------------------
class IK:
    """Weighted DLS IK: CoM xy, pelvis height + orientation, both feet sites (position, flat sole, soft yaw)."""

    def __init__(self, model: mujoco.MjModel):
        self.m, self.d = model, mujoco.MjData(model)
        self.feet = [model.site(s).id for s in FEET_SITES]
        self.root = model.body("waist").id
        self.lo, self.hi = model.jnt_range[1:, 0] + 0.01, model.jnt_range[1:, 1] - 0.01

    def _orient_err(self, xmat: np.ndarray, yaw: float, roll: float = 0.0) -> np.ndarray:
        c, s = np.cos(roll), np.sin(roll)  # to the frame with the target yaw, rolled about its own x axis
        return rotation_error(xmat, yaw_matrix(yaw) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]))

    def solve(self, qpos, com_xy, root_z, root_yaw, feet, iters: int = 30, root_roll: float = 0.0):
        """feet: (2, 4) target site x, y, z, yaw. Returns the solved qpos (nq,)."""
        m, d = self.m, self.d
        q = qpos.copy()
        jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        for _ in range(iters):
            d.qpos[:] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            rows, errs, weights = [], [], []
            # feet: position and level sole are (almost) hard. Yaw is soft: the 5-DOF leg has no hip yaw, so turning
            # (and a little side-stepping) twists the planted foot about its centre. A lifted foot may pitch toes-down:
            # a flat foot behind the hip would need more than the 30-degree ankle range
            for k, sid in enumerate(self.feet):
                mujoco.mj_jacSite(m, d, jp, jr, sid)
                rot = d.site_xmat[sid].reshape(3, 3)  # orientation rows in the foot frame: roll, pitch, yaw
                rows += [jp.copy(), rot.T @ jr]
                errs += [feet[k, :3] - d.site_xpos[sid], rot.T @ self._orient_err(d.site_xmat[sid], feet[k, 3])]
                planted = feet[k, 2] < 1e-4
                weights += [[100.0] * 3, [30.0, 30.0, 0.3] if planted else [30.0, 1.0, 0.3]]
            mujoco.mj_jacSubtreeCom(m, d, jp, self.root)
            rows.append(jp[:2].copy())
            errs.append(com_xy - d.subtree_com[self.root, :2])
            weights.append([30.0, 30.0])
            mujoco.mj_jacBody(m, d, jp, jr, self.root)
            rows += [jp[2:3].copy(), jr.copy()]
            errs += [[root_z - d.xpos[self.root, 2]], self._orient_err(d.xmat[self.root], root_yaw, root_roll)]
            weights += [[10.0], [10.0, 10.0, 2.0]]
            # keep the torso facing the pelvis (waist_yaw -> 0): the one joint no task constrains
            reg = np.zeros((1, m.nv))
            reg[0, 6 + WAIST] = 1.0
            rows.append(reg)
            errs.append([-q[7 + WAIST]])
            weights.append([0.1])
            jac = np.vstack(rows) * np.concatenate(weights)[:, None]
            err = np.concatenate([np.ravel(e) for e in errs]) * np.concatenate(weights)
            # active set: a joint at its limit that the step would push further is frozen and the step re-solved, so
            # the other joints (and the pelvis height) take over and the feet stay where they must be
            free = np.ones(m.nv, bool)
            for _ in range(3):
                jf = jac * free
                dq = np.linalg.solve(jf.T @ jf + 1e-6 * np.eye(m.nv), jf.T @ err) * free
                push = ((q[7:] <= self.lo + 1e-9) & (dq[6:] < 0)) | ((q[7:] >= self.hi - 1e-9) & (dq[6:] > 0))
                if not push.any():
                    break
                free[6:] &= ~push
            dq *= min(1.0, 0.2 / (np.abs(dq).max() + 1e-12))  # trust region: no wild jumps near the limits
            mujoco.mj_integratePos(m, q, dq, 1.0)
            q[7:] = np.clip(q[7:], self.lo, self.hi)
            if np.abs(dq).max() < 1e-7:
                break
        return q


# ---------------------------------------------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------------------------------------------
def generate_clip(model, command, seconds: float, p: GaitParams = GaitParams(), passes: int = 6):
    """qpos (T, nq), qvel (T, nv) for one command, starting from the standing pose."""
    data = mujoco.MjData(model)
    data.qpos[:] = model.key("home").qpos
    mujoco.mj_kinematics(model, data)
    foot_x = data.site_xpos[model.site(FEET_SITES[0]).id, 0] - data.qpos[0]
    ref = plan(np.asarray(command, float), seconds, p, foot_x)
    return solve_clip(model, ref, np.full(len(ref["feet"]), p.root_height), passes)


def solve_clip(model, ref: dict, root_z: np.ndarray, passes: int = 6):
    """qpos (T, nq), qvel (T, nv) that follow a plan: feet (T + horizon, 2, 3) x, y, yaw, lift (.., 2), zmp (.., 2),
    heading (..,), horizon; pelvis height root_z (..,). The first frame must be a standing pose (both feet down)."""
    ik = IK(model)
    feet, lift, horizon = ref["feet"], ref["lift"], ref["horizon"]
    n = len(feet) - horizon
    roll = ref.get("roll", np.zeros(len(feet)))  # pelvis roll; plans without one (utils.retarget's) keep it level
    stand_feet = np.array([[*feet[0, k, :2], 0.0, feet[0, k, 2]] for k in range(2)])
    # standing pose at the walking height: its CoM sets the pendulum height and the start of the CoM trajectory
    q0 = ik.solve(model.key("home").qpos.copy(), ref["zmp"][0], root_z[0], ref["heading"][0], stand_feet, iters=300)
    data = mujoco.MjData(model)
    data.qpos[:] = q0
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    zc = data.subtree_com[1, 2]
    correction = np.zeros((n + horizon, 2))
    for _ in range(passes):
        # pass 1: LIPM; then iterate Kajita's dynamics filter: shift the reference by the accumulated error between the
        # multibody ZMP of the IK motion and the wanted ZMP (the legs' momentum moves it 5-10 cm; ~5 passes converge)
        com, lipm_zmp = preview_com(ref["zmp"] - correction, zc, horizon, ref["zmp"][0])
        qpos = np.zeros((n, model.nq))
        q = q0
        for i in range(n):
            tgt = np.array([[*feet[i, k, :2], lift[i, k], feet[i, k, 2]] for k in range(2)])
            q = ik.solve(q, com[i], root_z[i], ref["heading"][i], tgt, root_roll=roll[i])
            qpos[i] = q
        qvel = finite_qvel(model, qpos, DT)
        err = multibody_zmp(model, qpos, qvel, DT) - ref["zmp"][:n]
        correction[:n] += err
    return qpos.astype(np.float32), finite_qvel(model, qpos, DT).astype(np.float32)


def generate(grid=GRID, seconds: float = 7.0, p: GaitParams = GaitParams()):
    """Generate all clips; returns the keyword arguments of utils.motions.save_motions."""
    model = load_model(SCENE_FLAT)
    qpos, qvel, names, starts, lengths, commands = [], [], [], [], [], []
    for name, vx, vy, wz in grid:
        q, v = generate_clip(model, (vx, vy, wz), seconds, p)
        print(f"  {name:16s} {len(q)} frames")
        starts.append(sum(lengths))
        lengths.append(len(q))
        qpos.append(q)
        qvel.append(v)
        names.append(name)
        commands.append((vx, vy, wz))
    return dict(
        fps=FPS,
        qpos=np.concatenate(qpos),
        qvel=np.concatenate(qvel),
        joint_names=np.array(JOINT_NAMES),
        clip_names=np.array(names),
        clip_starts=np.array(starts, np.int64),
        clip_lengths=np.array(lengths, np.int64),
        clip_commands=np.array(commands, np.float32),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--seconds", type=float, default=7.0, help="length of each clip")
    parser.add_argument("--pelvis-roll", type=float, default=0.0, help="degrees: the pelvis leans over the stance foot")
    parser.add_argument("--clearance", type=float, default=100 * GaitParams.clearance, help="cm: the swing apex")
    add_command(parser, None, "one clip with this command instead of the grid")
    args = parser.parse_args(argv)
    if not 0 < args.clearance <= 10:
        parser.error(f"--clearance must be in (0, 10] cm, got {args.clearance}")
    grid = GRID
    if args.command:
        command = command_arg(args.command)
        grid = ((command_name(command), *command),)
    params = GaitParams(clearance=args.clearance / 100, pelvis_roll=np.radians(args.pelvis_roll))
    save_motions(args.out, **generate(grid, args.seconds, params))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
