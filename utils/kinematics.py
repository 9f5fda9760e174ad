"""Shared math on WildRobot states (numpy + MuJoCo, no JAX): rotations, finite differences, centroidal quantities,
the multibody ZMP, sole geometry and the kinematic contact rule.

The walking-pattern generator (`utils.gait`), the BVH retargeter (`utils.bvh`), the motion tools (`utils.motions`,
`utils.compare_gaits`) and `ppo_amp_mjx.py` import this module; it imports only `utils.robot`, so there is no
import circle among them.

Two contact rules, on purpose (README "Tools"):
    simulated states  a sole is in a solver contact closer than `CONTACT_DIST` of the training file (1 mm): the
                      training env, `utils.evaluate` (MJX and plain MuJoCo) — the states come from a simulator;
    kinematic states  `sole_contact` below: the sole's lowest corner within `CONTACT_Z` of the floor — reference
                      clips have no solver, so the motion tools use this one for clips and rollouts alike.
"""

import mujoco
import numpy as np

from utils.robot import FEET_SITES, SOLE_GEOMS

G = 9.81
CONTACT_Z = 0.002  # m: a sole whose lowest corner is this close to the floor (z = 0) is on it


# ---------------------------------------------------------------------------------------------------------------------
# rotations
# ---------------------------------------------------------------------------------------------------------------------
def yaw_matrix(yaw: float) -> np.ndarray:
    """3x3 rotation about the world z axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_error(xmat: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) that turns the frame `xmat` (9,) into `target` (3, 3)."""
    quat, err = np.zeros(4), np.zeros(3)
    mujoco.mju_mat2Quat(quat, (target @ xmat.reshape(3, 3).T).ravel())
    mujoco.mju_quat2Vel(err, quat, 1.0)
    return err


def heading(qpos: np.ndarray) -> np.ndarray:
    """Yaw (T,) of the root quaternion (w, x, y, z at qpos[3:7]), in (-π, π]."""
    q = np.atleast_2d(qpos)
    return np.arctan2(2 * (q[:, 3] * q[:, 6] + q[:, 4] * q[:, 5]), 1 - 2 * (q[:, 5] ** 2 + q[:, 6] ** 2))


# ---------------------------------------------------------------------------------------------------------------------
# velocities, centroidal momentum, ZMP
# ---------------------------------------------------------------------------------------------------------------------
def heading_velocity(qpos: np.ndarray, qvel: np.ndarray, dt: float) -> np.ndarray:
    """(T, 3): root velocity in the heading frame (vx, vy) and yaw rate, per frame: what a command asks for."""
    yaw = heading(qpos)
    c, s = np.cos(yaw), np.sin(yaw)
    vx, vy = c * qvel[:, 0] + s * qvel[:, 1], -s * qvel[:, 0] + c * qvel[:, 1]
    return np.stack([vx, vy, np.gradient(np.unwrap(yaw), dt)], axis=1)


def finite_qvel(model: mujoco.MjModel, qpos: np.ndarray, dt: float) -> np.ndarray:
    """qvel (T, nv) by central differences with mj_differentiatePos (free-joint convention), one-sided at the ends."""
    t = len(qpos)
    qvel = np.zeros((t, model.nv))
    if t < 2:
        return qvel
    for i in range(t):
        a, b = max(i - 1, 0), min(i + 1, t - 1)
        mujoco.mj_differentiatePos(model, qvel[i], dt * (b - a), qpos[a], qpos[b])
    return qvel


def centroidal(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray):
    """CoM (T, 3), CoM velocity (T, 3) and angular momentum about the CoM (T, 3), world frame."""
    d = mujoco.MjData(model)
    com, vel, mom = (np.zeros((len(qpos), 3)) for _ in range(3))
    for i in range(len(qpos)):
        d.qpos[:], d.qvel[:] = qpos[i], qvel[i]
        mujoco.mj_forward(model, d)
        mujoco.mj_subtreeVel(model, d)
        com[i], vel[i], mom[i] = d.subtree_com[1], d.subtree_linvel[1], d.subtree_angmom[1]
    return com, vel, mom


def multibody_zmp(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray, dt: float) -> np.ndarray:
    """ZMP (T, 2) on the floor z = 0 from the centroidal momentum rate plus gravity (the whole multibody, not LIPM).

    The floor wrench is F = M (dv_com/dt + g ez) and, about the CoM, (p - com) x F + tau_z ez = dL/dt; solving the
    horizontal components for p with p_z = 0 gives the expressions below.
    """
    mass = model.body_subtreemass[1]
    com, vel, mom = centroidal(model, qpos, qvel)
    force = mass * np.gradient(vel, dt, axis=0) + np.array([0.0, 0.0, mass * G])
    dmom = np.gradient(mom, dt, axis=0)
    px = com[:, 0] - (com[:, 2] * force[:, 0] + dmom[:, 1]) / force[:, 2]
    py = com[:, 1] - (com[:, 2] * force[:, 1] - dmom[:, 0]) / force[:, 2]
    return np.stack([px, py], axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# feet: positions, sole corners, the kinematic contact rule, support polygons
# ---------------------------------------------------------------------------------------------------------------------
def feet_kinematics(model: mujoco.MjModel, qpos: np.ndarray):
    """Per frame: foot-site positions (T, 2, 3) and sole bottom corners (T, 2, 4, 3)."""
    data = mujoco.MjData(model)
    sites = [model.site(s).id for s in FEET_SITES]
    soles = [model.geom(g).id for g in SOLE_GEOMS]
    half = model.geom_size[soles[0]]
    local = np.array([[sx * half[0], sy * half[1], -half[2]] for sx in (-1, 1) for sy in (-1, 1)])
    feet, corners = np.zeros((len(qpos), 2, 3)), np.zeros((len(qpos), 2, 4, 3))
    for i, q in enumerate(qpos):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        for k in range(2):
            feet[i, k] = data.site_xpos[sites[k]]
            corners[i, k] = data.geom_xpos[soles[k]] + local @ data.geom_xmat[soles[k]].reshape(3, 3).T
    return feet, corners


def sole_contact(corners: np.ndarray) -> np.ndarray:
    """The kinematic contact rule: (..., 2) bool, a sole's lowest corner within CONTACT_Z of the floor; corners
    (..., 2, 4, 3) from `feet_kinematics`."""
    return corners[..., 2].min(axis=-1) < CONTACT_Z


def swings(contact: np.ndarray, min_air: int = 1) -> list[tuple[int, int, int]]:
    """(foot, first frame in the air, landing frame) of each swing that ends in a landing after >= min_air frames in
    the air; contact (n, 2) bool. A foot already in the air at frame 0 counts as airborne since frame 0."""
    out = []
    for k, c in enumerate(np.asarray(contact, bool).T):
        land = np.nonzero(~c[:-1] & c[1:])[0] + 1
        lift = np.nonzero(c[:-1] & ~c[1:])[0] + 1  # first frame in the air
        since = np.concatenate([[0], lift])[np.searchsorted(lift, land)]  # the last lift before each landing
        out += [(k, int(a), int(b)) for a, b in zip(since, land) if b - a >= min_air]
    return out


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of 2-D points, Andrew's monotone chain."""
    pts = sorted(map(tuple, points))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def inside_hull(point: np.ndarray, hull: np.ndarray) -> bool:
    """Whether a 2-D point lies in (or on) a counter-clockwise convex polygon."""
    edges = np.roll(hull, -1, axis=0) - hull
    rel = point - hull
    return bool(np.all(edges[:, 0] * rel[:, 1] - edges[:, 1] * rel[:, 0] >= -1e-9))
