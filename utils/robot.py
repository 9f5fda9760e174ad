"""WildRobot model facts shared by the tools: paths, joint order, the `home` keyframe computed by forward kinematics.

The two training files do not import this module (they stay self-contained and read the keyframe from the scene
XML); everything in `utils/` does.

    python -m utils.robot                    # print the model summary and the computed home pose
    python -m utils.robot --write-keyframes  # recompute `home` and write it into assets/scene_*.xml
    python -m utils.robot --render docs/images/home.png  # 640x480 picture of `home`, camera "track"
"""

import argparse
import re
from pathlib import Path

import mujoco
import numpy as np

from utils.cli import add_size

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ROBOT_XML = ASSETS / "wildrobot.xml"
SCENE_FLAT = ASSETS / "scene_flat.xml"
SCENE_ROUGH = ASSETS / "scene_rough.xml"
SCENE_TERRAIN = ASSETS / "scene_terrain.xml"  # the training ground (floor + heightfield)
SCENE_BUMPY = ASSETS / "scene_bumpy.xml"
SCENES = (SCENE_FLAT, SCENE_ROUGH, SCENE_TERRAIN, SCENE_BUMPY)  # every scene that carries the `home` keyframe
MOTIONS_DIR = ASSETS / "motions"
WALK_MOTIONS = MOTIONS_DIR / "wildrobot_walk.npz"  # the walking-pattern generator's clips (AMP's default reference)

# qpos[7:] order == actuator order
JOINT_NAMES = (
    "left_hip_pitch", "left_hip_roll", "left_knee", "left_ankle_pitch", "left_foot_roll",
    "right_hip_pitch", "right_hip_roll", "right_knee", "right_ankle_pitch", "right_foot_roll",
    "waist_yaw",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
FEET_SITES = ("left_foot", "right_foot")
SOLE_GEOMS = ("left_sole", "right_sole")
# hip and knee flexion of the slightly crouched home pose (rad); the ankle is solved so the soles are flat
HOME_HIP_PITCH = 0.25
HOME_KNEE = 0.5


def load_model(scene: Path | str = SCENE_FLAT) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(scene))


def compute_home_qpos(model: mujoco.MjModel) -> np.ndarray:
    """Forward kinematics: crouch hips/knees, pitch the ankles so the soles are level, lower the root onto the floor."""
    data = mujoco.MjData(model)
    qpos = np.zeros(model.nq)
    qpos[3] = 1.0  # identity root quaternion
    joints = np.zeros(NUM_JOINTS)
    for side in (0, 5):
        joints[side + 0] = HOME_HIP_PITCH
        joints[side + 2] = HOME_KNEE
    qpos[7:] = joints
    sole_ids = [model.geom(n).id for n in SOLE_GEOMS]

    def sole_pitch(q):  # rotation of the sole about the world y axis (0 = level)
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        rot = data.geom_xmat[sole_ids[0]].reshape(3, 3)
        return np.arctan2(-rot[2, 0], rot[2, 2])

    # the sole's pitch is affine in the ankle angle (all pitch axes are parallel): one secant step makes it level
    p0 = sole_pitch(qpos)
    bumped = qpos.copy()
    bumped[7 + 3] += 0.1
    slope = (sole_pitch(bumped) - p0) / 0.1
    for side in (0, 5):
        qpos[7 + side + 3] -= p0 / slope
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    # lowest sole corner on z = 0
    lowest = min(_sole_bottom_z(model, data, g) for g in sole_ids)
    qpos[2] -= lowest
    return qpos


def _sole_bottom_z(model, data, geom_id) -> float:
    half = model.geom_size[geom_id]
    corners = np.array([[sx * half[0], sy * half[1], -half[2]] for sx in (-1, 1) for sy in (-1, 1)])
    world = data.geom_xpos[geom_id] + corners @ data.geom_xmat[geom_id].reshape(3, 3).T
    return float(world[:, 2].min())


def write_keyframes(qpos: np.ndarray, ctrl: np.ndarray) -> None:
    line = (
        f'<key name="home" qpos="{" ".join(f"{x:.6g}" for x in qpos)}"\n'
        f'         ctrl="{" ".join(f"{x:.6g}" for x in ctrl)}"/>'
    )
    for scene in SCENES:
        if not scene.exists():
            continue
        text = scene.read_text()
        text = re.sub(r"<!-- HOME -->|<key name=\"home\"[^>]*/>", lambda _: line, text, count=1)
        scene.write_text(text)
        print(f"wrote home keyframe into {scene}")


def render_home(path: str | Path, width: int = 640, height: int = 480) -> Path:
    """Write a PNG of the flat scene in its `home` keyframe, seen from the "track" camera."""
    from utils.render import render_qpos, write_frames

    model = load_model(SCENE_FLAT)
    frames = render_qpos(model, model.key("home").qpos, width, height, camera="track")
    print(f"wrote {write_frames(frames, path, fps=1)}")
    return Path(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-keyframes", action="store_true", help="write the computed home into the scenes")
    parser.add_argument("--render", metavar="PNG", help="render the flat scene's home keyframe to this PNG")
    add_size(parser, 640, 480)
    args = parser.parse_args()
    model = mujoco.MjModel.from_xml_path(str(ROBOT_XML))
    qpos = compute_home_qpos(model)
    print(f"total mass {model.body_mass.sum():.3f} kg, nq {model.nq}, nv {model.nv}, nu {model.nu}")
    print(f"home root height {qpos[2]:.4f} m")
    for name, q in zip(JOINT_NAMES, qpos[7:]):
        print(f"  {name:18s} {q:+.4f}")
    if args.write_keyframes:
        write_keyframes(qpos, qpos[7:])
    if args.render:
        render_home(args.render, args.width, args.height)


if __name__ == "__main__":
    main()
