"""Reference motions: the shipped gait's quality, the BVH importer, and the loader's rejection of bad files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils import motions
from utils.kinematics import feet_kinematics
from utils.motions import MotionFileError, clip_quality, load_motions, save_motions
from utils.retarget import main as retarget_main
from utils.robot import JOINT_NAMES, SCENE_FLAT, WALK_MOTIONS, load_model

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = WALK_MOTIONS


@pytest.fixture(scope="module")
def model():
    return load_model(SCENE_FLAT)


@pytest.fixture(scope="module")
def shipped():
    return load_motions(SHIPPED)


def qualities(model, clips) -> dict:
    """clip name -> utils.motions.clip_quality of that clip"""
    out = {}
    for i, name in enumerate(clips.clip_names):
        sl = clips.clip(name)
        out[name] = clip_quality(model, clips.qpos[sl], clips.qvel[sl], clips.fps, clips.clip_commands[i])
    return out


@pytest.fixture(scope="module")
def quality(model, shipped):
    return qualities(model, shipped)


def test_shipped_grid_covers_the_commands(shipped):
    cmds = {tuple(np.round(c.astype(float), 2)) for c in shipped.clip_commands}
    for vx in (0.1, 0.2, 0.3, 0.4, 0.5, -0.2):
        assert (vx, 0.0, 0.0) in cmds
    for c in ((0.0, 0.0, 0.0), (0.0, 0.15, 0.0), (0.0, -0.15, 0.0), (0.0, 0.0, 0.5), (0.0, 0.0, -0.5)):
        assert c in cmds
    assert len(shipped.qpos) / shipped.fps >= 60.0
    assert shipped.fps == 50.0 and shipped.qpos.dtype == np.float32


def test_shipped_joint_limits(model, shipped):
    lo, hi = model.jnt_range[1:, 0], model.jnt_range[1:, 1]
    assert np.all(shipped.qpos[:, 7:] >= lo - 1e-3) and np.all(shipped.qpos[:, 7:] <= hi + 1e-3)


def pelvis_roll(qpos: np.ndarray) -> np.ndarray:
    """(T, nq) -> (T,) roll of the free root about its forward axis (rad; + = left side up)"""
    w, x, y, z = qpos[:, 3:7].T.astype(np.float64)
    return np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))


def assert_clean(quality: dict) -> None:
    for name, q in quality.items():
        assert q["slide"] < 0.02, f"{name}: stance foot slides at {q['slide']:.3f} m/s"
        assert q["penetration"] < 0.005, f"{name}: sole {1000 * q['penetration']:.1f} mm into the floor"
        assert q["flight"] == 0, f"{name}: both feet airborne in {q['flight']} frames"
        assert q["zmp_inside"] >= 90.0, f"{name}: ZMP inside support only {q['zmp_inside']:.1f} % of frames"
        err = np.abs(q["velocity"] - q["command"])
        assert np.all(err < 0.05), f"{name}: measured {q['velocity']} vs command {q['command']}"
        if name != "stand":
            assert q["clearance"] > 0.02, f"{name}: swing clearance {q['clearance']:.3f} m"


def test_shipped_clips_are_clean(quality):
    assert_clean(quality)


def test_shipped_lean_clips_are_clean_and_lean(model, shipped):
    """assets/motions/wildrobot_walk_lean.npz (`utils.gait --pelvis-roll 2`, amp_walk's reference): the same commands
    and quality as the level clips, with the pelvis rolling about 1 degree (std) on forward walks."""
    lean = load_motions(ROOT / "assets" / "motions" / "wildrobot_walk_lean.npz")
    assert list(lean.clip_names) == list(shipped.clip_names) and len(lean.qpos) == len(shipped.qpos)
    assert_clean(qualities(model, lean))
    for clips, lo, hi in ((shipped, 0.0, 0.05), (lean, 0.8, 1.3)):
        assert lo <= np.degrees(pelvis_roll(clips.qpos[clips.clip("forward_0.3")][100:]).std()) <= hi


def test_gait_phase_follows_the_clips_steps(model, shipped):
    """The gait clock of a clip frame (what a reference-initialized episode starts with) says which foot swings: the
    env's left foot swings while sin(phase) > 0, the right while < 0 (ppo_mjx.py's feet_phase target)."""
    from utils.kinematics import sole_contact

    for name in shipped.clip_names:
        qpos = shipped.qpos[shipped.clip(name)]
        phase = motions.gait_phase(model, qpos, shipped.fps, 1.5)
        assert phase.shape == (len(qpos),) and (phase >= 0).all() and (phase < 2 * np.pi).all()
        contact = sole_contact(feet_kinematics(model, qpos)[1])
        left, right = ~contact[:, 0] & contact[:, 1], ~contact[:, 1] & contact[:, 0]  # one foot in the air
        if name == "stand":
            assert not (left | right).any() and (phase == 0).all()
            continue
        agree = np.r_[np.sin(phase[left]) > 0, np.sin(phase[right]) < 0]
        assert len(agree) > 150 and agree.mean() > 0.9, (name, agree.mean())  # measured 0.95-0.97
        # between lift-offs the clock advances (mod 2π) by about one step's worth of π per step
        assert 0 < np.mod(np.diff(phase), 2 * np.pi).max() < 0.5


def test_command_gait_clock_matches_the_clips_cadence(model, shipped):
    """--gait-clock command runs the env's clock at the shipped clips' own cadence for their forward speed: the
    clock of a clip (lift-off to lift-off, utils.motions.gait_phase) advances 2π · gait_frequency(vx) per second
    (both training files have the same function)."""
    import ppo_amp_mjx
    import ppo_mjx

    for i, name in enumerate(shipped.clip_names):
        if name == "stand":
            continue
        qpos = shipped.qpos[shipped.clip(name)]
        phase = np.unwrap(motions.gait_phase(model, qpos, shipped.fps, 1.5).astype(np.float64))
        middle = slice(len(qpos) // 4, 3 * len(qpos) // 4)  # whole steps, away from the start and stop ramps
        measured = np.median(np.diff(phase[middle])) * shipped.fps / (2 * np.pi)  # Hz
        vx = float(shipped.clip_commands[i][0])
        expected = float(ppo_mjx.gait_frequency(vx, "command"))
        assert float(ppo_amp_mjx.gait_frequency(vx, "command")) == expected
        assert abs(measured - expected) < 0.05 * expected, (name, vx, measured, expected)
    slow, fast = float(ppo_mjx.gait_frequency(0.3, "command")), float(ppo_mjx.gait_frequency(0.5, "command"))
    assert slow == pytest.approx(1.25) and fast == pytest.approx(0.5 / 0.27)
    assert ppo_mjx.gait_frequency(0.5, "fixed") == ppo_mjx.GAIT_FREQUENCY


def test_qvel_matches_finite_difference_of_qpos(model, shipped):
    import mujoco

    sl = shipped.clip(shipped.clip_names[1])
    q, v = shipped.qpos[sl].astype(np.float64), shipped.qvel[sl].astype(np.float64)
    fd = np.zeros(model.nv)
    mujoco.mj_differentiatePos(model, fd, 2 / shipped.fps, q[9], q[11])
    np.testing.assert_allclose(v[10], fd, atol=1e-3)


def test_pelvis_roll_leans_over_the_stance_foot(model):
    """utils.gait's pelvis_roll: in single support the pelvis rolls toward the stance foot (the swing side up) by
    up to the set angle, with the feet where the plan puts them; at 0 the pelvis stays level."""
    from utils.gait import GaitParams, generate_clip

    for lean in (0.0, np.radians(2.0)):
        qpos, _ = generate_clip(model, (0.3, 0.0, 0.0), 3.5, GaitParams(pelvis_roll=lean))
        roll = pelvis_roll(qpos)
        _, corners = feet_kinematics(model, qpos)
        sole = corners[..., 2].min(axis=-1)  # (T, 2) lowest corner of the left and right sole
        left_up, right_up = sole[:, 0] > 0.02, sole[:, 1] > 0.02  # mid-swing of each foot
        assert left_up.sum() > 5 and right_up.sum() > 5
        assert sole.max() == pytest.approx(0.035, abs=0.004)  # the swing apex is the plan's clearance
        if lean == 0.0:
            assert np.abs(roll).max() < np.radians(0.25)  # the IK holds the pelvis orientation softly
        else:
            assert np.all(roll[left_up] > np.radians(0.5)) and np.all(roll[right_up] < -np.radians(0.5))
            assert np.abs(roll).max() == pytest.approx(lean, abs=np.radians(0.25))


def test_gait_clearance_flag_lifts_the_swing(model, tmp_path, capsys):
    """`utils.gait --clearance CM` sets the swing soles' apex; a clearance outside (0, 10] cm is one error line and
    writes nothing."""
    from utils import gait

    out = tmp_path / "high.npz"
    gait.main(["--out", str(out), "--command", "forward_0.3", "--seconds", "3.5", "--clearance", "5"])
    clips = load_motions(out)
    sole = feet_kinematics(model, clips.qpos)[1][..., 2].min(axis=-1)  # (T, 2) lowest corner of each sole
    assert sole.max() == pytest.approx(0.05, abs=0.005)  # the default's 3.5 cm: test_pelvis_roll_leans_over_...
    capsys.readouterr()
    for bad in ("0", "-1", "12"):
        with pytest.raises(SystemExit) as e:
            gait.main(["--out", str(tmp_path / "bad.npz"), "--clearance", bad])
        assert e.value.code == 2 and f"--clearance must be in (0, 10] cm, got {float(bad)}" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()


# ---------------------------------------------------------------------------------------------------------------
# BVH import
# ---------------------------------------------------------------------------------------------------------------
def write_walk_bvh(path: Path, seconds: float = 3.0, fps: float = 60.0) -> None:
    """A CMU-like skeleton (Y up, facing +Z, centimetres): hips translate forward, legs swing in antiphase."""
    legs = ""
    for side, x in (("Left", 9.0), ("Right", -9.0)):
        legs += f"""
  JOINT {side[0]}HipJoint
  {{
    OFFSET 0 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT {side}UpLeg
    {{
      OFFSET {x} -5 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT {side}Leg
      {{
        OFFSET 0 -42 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT {side}Foot
        {{
          OFFSET 0 -40 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          JOINT {side}ToeBase
          {{
            OFFSET 0 -6 14
            CHANNELS 3 Zrotation Xrotation Yrotation
            End Site
            {{
              OFFSET 0 0 4
            }}
          }}
        }}
      }}
    }}
  }}"""
    root = "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
    head = f"HIERARCHY\nROOT Hips\n{{\n  OFFSET 0 0 0\n  {root}{legs}\n"
    head += "  JOINT Head\n  {\n    OFFSET 0 60 0\n    CHANNELS 3 Zrotation Xrotation Yrotation\n"
    head += "    End Site\n    {\n      OFFSET 0 10 0\n    }\n  }\n}\nMOTION\n"
    n, w = int(seconds * fps), 2 * np.pi  # one stride per second
    rows = []
    for t in np.arange(n) / fps:
        row = [0.0, 92.0, 40.0 * t, 0, 0, 0]
        for phase in (0.0, np.pi):
            hip = -20 * np.sin(w * t + phase)  # degrees about X; negative swings the leg forward (+Z)
            knee = 40 * max(0.0, np.cos(w * t + phase)) ** 2  # flexes while the leg swings forward
            row += [0, 0, 0, 0, hip, 0, 0, knee, 0, 0, -0.5 * hip - 0.3 * knee, 0, 0, 0, 0]
        rows.append(row + [0, 0, 0])
    body = "\n".join(" ".join(f"{v:.4f}" for v in r) for r in rows)
    path.write_text(head + f"Frames: {n}\nFrame Time: {1 / fps:.6f}\n{body}\n")


def test_bvh_import_alternating_steps(tmp_path, model):
    write_walk_bvh(tmp_path / "walk.bvh")
    out = tmp_path / "walk.npz"
    retarget_main([str(tmp_path / "walk.bvh"), "--out", str(out), "--kinematic", "--command", "0.18", "0", "0"])
    scale = 0.372 / 82.0  # robot hip-to-ankle / human hip-to-ankle
    motions = load_motions(out)  # validates shapes, names, limits
    assert motions.fps == 50.0 and len(motions.qpos) == 150
    _, corners = feet_kinematics(model, motions.qpos.astype(np.float64))
    low = corners[..., 2].min(axis=2)  # (T, 2)
    assert low.min() > -1e-3  # put on the floor
    lifted = low > 0.01
    assert not np.any(lifted.all(axis=1))  # never both feet up
    # the sequence of lifted feet alternates: L, R, L, R ...
    seq = [k for i in range(1, len(low)) for k in (0, 1) if lifted[i, k] and not lifted[i - 1, k]]
    assert len(seq) >= 4 and all(a != b for a, b in zip(seq, seq[1:])), seq
    # the robot moves forward (+x) at the scaled hip speed
    speed = (motions.qpos[-1, 0] - motions.qpos[0, 0]) / (len(motions.qpos) - 1) * motions.fps
    assert speed == pytest.approx(0.4 * scale * 100, rel=0.05)


# ---------------------------------------------------------------------------------------------------------------
# bad files: each is rejected with a message naming the file and the problem, by the API and by the CLI
# ---------------------------------------------------------------------------------------------------------------
def good_arrays(frames: int = 10) -> dict:
    home = load_model(SCENE_FLAT).key("home").qpos.astype(np.float32)
    return dict(
        fps=np.float64(50.0),
        qpos=np.tile(home, (frames, 1)),
        qvel=np.zeros((frames, 17), np.float32),
        joint_names=np.array(JOINT_NAMES),
        clip_names=np.array(["stand"]),
        clip_starts=np.array([0], np.int64),
        clip_lengths=np.array([frames], np.int64),
        clip_commands=np.zeros((1, 3), np.float32),
    )


def _nan(a):
    a["qpos"][3, 9] = np.nan
    return a


def _limit(a):
    a["qpos"][5, 7 + 2] = 1.6  # left knee range is 0 .. 1.396
    return a


def _empty(a):
    return {**a, "qpos": np.zeros((0, 18), np.float32), "qvel": np.zeros((0, 17), np.float32)}


BAD = {
    "nan": (_nan, "non-finite"),
    "shape": (lambda a: {**a, "qpos": a["qpos"][:, :12]}, "wrong shape"),
    "names": (lambda a: {**a, "joint_names": np.array([f"j{i}" for i in range(11)])}, "wrong joint names"),
    "pickled": (lambda a: {**a, "clip_names": np.array([{"evil": 1}], dtype=object)}, "pickled"),
    "empty": (_empty, "empty"),
    "limit": (_limit, "joint limit exceeded: left_knee"),
    "keys": (lambda a: {k: v for k, v in a.items() if k != "qvel"}, "missing keys ['qvel']"),
}


@pytest.mark.parametrize("case", sorted(BAD) + ["missing"])
def test_bad_file_rejected(tmp_path, case, capsys):
    path = tmp_path / f"{case}.npz"
    if case == "missing":
        expected = "missing file"
    else:
        make, expected = BAD[case]
        np.savez(path, **make(good_arrays()))
    with pytest.raises(MotionFileError) as info:
        load_motions(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert motions.main(["check", str(path)]) == 1  # a check that failed (exit code 1), one line naming the file
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not list(tmp_path.glob(".*tmp*"))


def test_check_cli_exit_codes(tmp_path):
    """As a user runs it: a rejected file exits 1 with its one line; a bad subcommand argument exits 2."""
    np.savez(tmp_path / "nan.npz", **_nan(good_arrays()))
    run = lambda *argv: subprocess.run([sys.executable, "-m", "utils.motions", *argv], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True)  # fmt: skip
    proc = run("check", str(tmp_path / "nan.npz"))
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {tmp_path / 'nan.npz'}: ")
    assert "non-finite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run("render", str(SHIPPED), "--clip", "moonwalk", "--out", str(tmp_path / "x.gif"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and "moonwalk" in proc.stderr
    assert not (tmp_path / "x.gif").exists()


def test_good_file_roundtrip_and_directory(tmp_path):
    a = good_arrays()
    save_motions(tmp_path / "a.npz", **{k: v for k, v in a.items()})
    save_motions(tmp_path / "b.npz", **{k: v for k, v in a.items()})
    m = load_motions(tmp_path)
    assert len(m.qpos) == 20 and list(m.clip_starts) == [0, 10] and m.source == [tmp_path / "a.npz", tmp_path / "b.npz"]
    with pytest.raises(MotionFileError, match="joint limit exceeded"):
        save_motions(tmp_path / "c.npz", **_limit(good_arrays()))
    assert not (tmp_path / "c.npz").exists()  # nothing half-written
