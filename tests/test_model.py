"""The WildRobot model and scenes: structure, gains, home keyframe, sign conventions, and that it stands (MuJoCo, MJX).

MJX compiling dominates the runtime, so each scene's jitted 0.02 s control step is compiled once per module
(`mjx_step` fixture) and reused by the stand and random-target tests.
"""

import mujoco
import numpy as np
import pytest

from utils.robot import FEET_SITES, JOINT_NAMES, SCENE_FLAT, SCENE_ROUGH, SOLE_GEOMS, compute_home_qpos, load_model

SCENES = {"flat": SCENE_FLAT, "rough": SCENE_ROUGH}
CONTROL_DT = 0.02  # 50 Hz
SECONDS = 10.0
CONTROL_STEPS = int(SECONDS / CONTROL_DT)  # 500


@pytest.fixture(scope="module", params=list(SCENES))
def scene(request):
    return request.param


def _model(scene: str) -> mujoco.MjModel:
    return load_model(SCENES[scene])


def _home_data(model: mujoco.MjModel) -> mujoco.MjData:
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    return data


def _substeps(model: mujoco.MjModel) -> int:
    substeps = int(round(CONTROL_DT / model.opt.timestep))
    assert substeps * model.opt.timestep == pytest.approx(CONTROL_DT), "timestep must divide the control period"
    return substeps


def _random_targets(model: mujoco.MjModel, seed: int = 0) -> np.ndarray:
    lo, hi = model.actuator_ctrlrange.T
    return np.random.default_rng(seed).uniform(lo, hi, size=(CONTROL_STEPS, model.nu))


def _pelvis_up(qpos: np.ndarray) -> np.ndarray:
    """z component of the pelvis z axis for root quaternions (..., 4) (1 = upright)."""
    x, y = qpos[..., 4], qpos[..., 5]  # qpos[3:7] is the root quaternion (w, x, y, z)
    return 1 - 2 * (x * x + y * y)


# ---------------------------------------------------------------- structure


def test_scenes_load_in_mujoco(scene):
    model = _model(scene)
    assert (model.nq, model.nv, model.nu) == (7 + 11, 6 + 11, 11)
    assert model.key("home").qpos.shape == (model.nq,)  # raises KeyError without a `home` keyframe


def test_actuators_in_documented_order(scene):
    model = _model(scene)
    assert len(JOINT_NAMES) == 11
    assert [model.actuator(i).name for i in range(model.nu)] == list(JOINT_NAMES)
    for i, name in enumerate(JOINT_NAMES):
        joint = model.joint(name)
        assert model.actuator_trnid[i, 0] == joint.id, f"actuator {i} drives the wrong joint"
        assert joint.qposadr[0] == 7 + i, f"{name} is not qpos[{7 + i}]"
        assert joint.dofadr[0] == 6 + i, f"{name} is not qvel[{6 + i}]"


def test_total_mass(scene):
    assert _model(scene).body_mass.sum() == pytest.approx(3.56, abs=0.05)


def test_actuator_gains_limits_and_ranges(scene):
    model = _model(scene)
    # MuJoCo position actuator: force = kp * ctrl - kp * q - kv * qdot, i.e. gainprm[0] = kp, biasprm = (0, -kp, -kv)
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], 21.1)
    np.testing.assert_allclose(model.actuator_biasprm[:, :3], np.tile([0.0, -21.1, -0.5], (model.nu, 1)))
    assert model.actuator_forcelimited.all()
    np.testing.assert_allclose(model.actuator_forcerange, np.tile([-4.0, 4.0], (model.nu, 1)))
    assert model.actuator_ctrllimited.all()
    joint_ranges = model.jnt_range[model.actuator_trnid[:, 0]]
    np.testing.assert_allclose(model.actuator_ctrlrange, joint_ranges)


def test_only_soles_collide_with_floor(scene):
    model = _model(scene)
    # MuJoCo collides geoms a and b when (contype[a] & conaffinity[b]) | (contype[b] & conaffinity[a]) is nonzero
    # (and they are not in the same body or parent and child); list every such pair
    ct, ca = model.geom_contype, model.geom_conaffinity
    pairs = {
        tuple(sorted((model.geom(a).name, model.geom(b).name)))
        for a in range(model.ngeom)
        for b in range(a + 1, model.ngeom)
        if (ct[a] & ca[b]) | (ct[b] & ca[a])
    }
    assert pairs == {("floor", "left_sole"), ("floor", "right_sole")}
    # and at home exactly these touch
    data = _home_data(model)
    touching = {model.geom(data.contact.geom[i, j]).name for i in range(data.ncon) for j in range(2)}
    assert touching == {"floor", *SOLE_GEOMS}


# ---------------------------------------------------------------- home keyframe and sign conventions


def test_home_keyframe_is_computed_pose(scene):
    model = _model(scene)
    np.testing.assert_allclose(model.key("home").qpos, compute_home_qpos(model), atol=1e-5)
    np.testing.assert_allclose(model.key("home").ctrl, model.key("home").qpos[7:])


def test_home_soles_level_and_on_floor(scene):
    model = _model(scene)
    data = _home_data(model)
    for name in SOLE_GEOMS:
        geom = model.geom(name)
        rot = data.geom_xmat[geom.id].reshape(3, 3)
        assert rot[2, 2] == pytest.approx(1.0, abs=1e-6), f"{name} is not level"
        half = model.geom_size[geom.id]
        corners = np.array([[sx * half[0], sy * half[1], -half[2]] for sx in (-1, 1) for sy in (-1, 1)])
        corner_z = (data.geom_xpos[geom.id] + corners @ rot.T)[:, 2]
        np.testing.assert_allclose(corner_z, 0.0, atol=1e-3, err_msg=f"{name} bottom is not on the floor")


def _feet_after(model: mujoco.MjModel, joint_offsets: dict[str, float]) -> np.ndarray:
    """World positions (2, 3) of the foot sites after adding offsets to the home joint angles (kinematics only)."""
    data = mujoco.MjData(model)
    data.qpos[:] = model.key("home").qpos
    for name, delta in joint_offsets.items():
        data.qpos[model.joint(name).qposadr[0]] += delta
    mujoco.mj_kinematics(model, data)
    return np.array([data.site_xpos[model.site(s).id] for s in FEET_SITES])


@pytest.mark.parametrize("side", [0, 1], ids=["left", "right"])
def test_positive_hip_pitch_moves_foot_forward(side):
    model = _model("flat")
    prefix = ("left", "right")[side]
    moved = _feet_after(model, {f"{prefix}_hip_pitch": 0.2}) - _feet_after(model, {})
    assert moved[side, 0] > 0.02, f"{prefix} foot moved {moved[side, 0]:+.3f} m in x"
    assert np.allclose(moved[1 - side], 0.0), "the other foot must not move"


@pytest.mark.parametrize("side", [0, 1], ids=["left", "right"])
def test_positive_hip_roll_moves_foot_outward(side):
    model = _model("flat")
    prefix, outward = (("left", 1.0), ("right", -1.0))[side]
    moved = _feet_after(model, {f"{prefix}_hip_roll": 0.2}) - _feet_after(model, {})
    assert outward * moved[side, 1] > 0.02, f"{prefix} foot moved {moved[side, 1]:+.3f} m in y"
    assert np.allclose(moved[1 - side], 0.0), "the other foot must not move"


# ---------------------------------------------------------------- plain MuJoCo dynamics


def _mujoco_rollout(model: mujoco.MjModel, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """qpos, qvel (T, nq / nv) after each 0.02 s control step, starting at home."""
    data = _home_data(model)
    substeps = _substeps(model)
    qpos, qvel = [], []
    for target in targets:
        data.ctrl[:] = target
        mujoco.mj_step(model, data, nstep=substeps)
        qpos.append(data.qpos.copy())
        qvel.append(data.qvel.copy())
    return np.array(qpos), np.array(qvel)


def _assert_stands(model: mujoco.MjModel, qpos: np.ndarray):
    home_z = model.key("home").qpos[2]
    drift = np.abs(qpos[:, 2] - home_z).max()
    assert drift < 0.02, f"pelvis height left home ± 2 cm by {drift:.3f} m"
    assert _pelvis_up(qpos).min() > 0.99, "pelvis tilted"
    horizontal = np.linalg.norm(qpos[-1, :2] - model.key("home").qpos[:2])
    assert horizontal < 0.02, f"robot slid {horizontal:.3f} m"


def _assert_random_run_ok(model: mujoco.MjModel, targets: np.ndarray, qpos: np.ndarray, qvel: np.ndarray):
    assert np.isfinite(qpos).all() and np.isfinite(qvel).all()
    # the servos really followed the targets (guards against a step that silently does nothing)
    assert qpos[:, 7:].std(axis=0).min() > 0.05
    corr = np.corrcoef(targets.ravel(), qpos[:, 7:].ravel())[0, 1]
    assert corr > 0.5, f"joints do not follow the targets (corr {corr:.2f})"


def test_stands_at_home_mujoco(scene):
    model = _model(scene)
    qpos, _ = _mujoco_rollout(model, np.tile(model.key("home").ctrl, (CONTROL_STEPS, 1)))
    _assert_stands(model, qpos)


def test_random_targets_finite_mujoco(scene):
    model = _model(scene)
    targets = _random_targets(model)
    _assert_random_run_ok(model, targets, *_mujoco_rollout(model, targets))


# ---------------------------------------------------------------- MJX


@pytest.fixture(scope="module")
def mjx_step(scene):
    """(model, jitted control step (data, ctrl) -> data, initial MJX data at home) for one scene, compiled once."""
    import jax
    from mujoco import mjx

    model = _model(scene)
    mx = mjx.put_model(model, impl="jax")
    substeps = _substeps(model)

    @jax.jit
    def control_step(d, ctrl):
        d = d.replace(ctrl=ctrl)
        return jax.lax.fori_loop(0, substeps, lambda _, d: mjx.step(mx, d), d)

    # a fresh MjData (no mj_forward): MuJoCo finds up to 22 sole-heightfield contacts, more than MJX's fixed
    # contact buffer (8 for the two sole-floor pairs), and put_data refuses data with more contacts than that
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    d0 = mjx.put_data(model, data, impl="jax")
    return model, control_step, d0


def _mjx_rollout(mjx_step, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model, control_step, d = mjx_step
    qpos, qvel = [], []
    for target in targets.astype(np.float32):
        d = control_step(d, target)
        qpos.append(d.qpos)
        qvel.append(d.qvel)
    return np.array(qpos), np.array(qvel)


def test_loads_and_steps_in_mjx(mjx_step):
    model, _, d0 = mjx_step
    qpos, qvel = _mjx_rollout(mjx_step, model.key("home").ctrl[None])
    assert np.isfinite(qpos).all() and np.isfinite(qvel).all()
    assert not np.allclose(qpos[0], np.asarray(d0.qpos)), "one control step did not change the state"


def test_stands_at_home_mjx(mjx_step):
    model = mjx_step[0]
    qpos, _ = _mjx_rollout(mjx_step, np.tile(model.key("home").ctrl, (CONTROL_STEPS, 1)))
    _assert_stands(model, qpos)


def test_random_targets_finite_mjx(mjx_step):
    model = mjx_step[0]
    targets = _random_targets(model)
    _assert_random_run_ok(model, targets, *_mjx_rollout(mjx_step, targets))
