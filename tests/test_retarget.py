"""Human mocap -> feasible clips (utils.retarget) on real CMU takes, and clear errors on broken BVH files."""

from pathlib import Path

import numpy as np
import pytest

from utils.bvh import ROBOT_LEG, BVHError, human_positions, parse
from utils.gait import FPS
from utils.kinematics import feet_kinematics, sole_contact
from utils.motions import load_motions
from utils.retarget import RetargetParams, contacts, main, segments, take_to_clips
from utils.robot import SCENE_FLAT, load_model

ROOT = Path(__file__).resolve().parent.parent
TAKES = sorted((ROOT / "assets" / "mocap").glob("*.bvh"))  # real CMU walks (assets/mocap/README.md)


@pytest.fixture(scope="module", params=TAKES, ids=lambda p: p.stem)
def take(request):
    return request.param, take_to_clips(request.param, log=lambda line: None)


def test_real_takes_are_shipped():
    assert len(TAKES) >= 2 and all(p.stat().st_size > 100_000 for p in TAKES)


def test_contact_phases_alternate_like_a_walk(take):
    """Each foot is down about 60 % of a human walk; lift-offs alternate feet; no flight."""
    path, _ = take
    sk = parse(path)
    fps = 1 / sk.frame_time
    pos, kp, leg = human_positions(sk, fps)
    p = RetargetParams()
    down = contacts(pos, kp, ROBOT_LEG / leg, fps, p)
    (seg, *_) = segments(down, fps, p)
    feet = [k for k, _, _ in seg]
    assert len(seg) >= 4 and all(a != b for a, b in zip(feet, feet[1:]))
    span = slice(seg[0][1], seg[-1][2])
    assert down[span].any(axis=1).all()  # always a foot on the floor
    assert 0.5 < down[span].mean() < 0.75, down[span].mean()  # stance share per foot


def test_clips_are_feasible_and_keep_the_style(take):
    """The issue's bars on every clip of every shipped take."""
    path, clips = take
    assert clips
    for c in clips:
        q = c["quality"]
        assert q["zmp_inside"] >= 95.0, (c["name"], q["zmp_inside"])
        assert q["slide"] < 0.03 and q["penetration"] < 0.002 and q["limit_margin"] >= 0.0, q
        assert q["flight"] == 0 and q["clearance"] > 0.025, q  # the swing floor (2.9-3.1 cm; 2.0 cm without it)
        assert (c["playback"]["fell_at"] or c["playback"]["seconds"]) >= 5.0, c["playback"]  # open loop, no balance
        assert 0.05 < c["command"][0] <= 0.3, c["command"]
        # style: 0.81 and 0.88 measured (docs/motions.md), the bar is 0.8
        assert c["style"] >= 0.8, (c["name"], c["style"])


def test_dynamic_similarity(take):
    """Lengths scale by the leg ratio, time by its square root: the clip's feet lift off 1 / sqrt(ratio) times as
    often as the human's (counted in the clip and in the mocap, independently of the plan)."""
    path, clips = take
    c = clips[0]
    ratio = ROBOT_LEG / RetargetParams().human_leg
    sk = parse(path)
    fps = 1 / sk.frame_time
    pos, kp, leg = human_positions(sk, fps)
    assert c["scale"] == pytest.approx(ROBOT_LEG / leg) and c["time_scale"] == pytest.approx(np.sqrt(ratio))
    (seg, *_) = segments(contacts(pos, kp, c["scale"], fps, RetargetParams()), fps, RetargetParams())
    human_rate = (len(seg) - 1) / ((seg[-1][1] - seg[0][1]) / fps)  # lift-offs per human second
    _, corners = feet_kinematics(load_model(SCENE_FLAT), c["qpos"].astype(np.float64))
    on = sole_contact(corners)  # (T, 2)
    lifts = np.sort(np.concatenate([np.flatnonzero(on[:-1, k] & ~on[1:, k]) for k in range(2)]))
    robot_rate = (len(lifts) - 1) / ((lifts[-1] - lifts[0]) / FPS)
    assert robot_rate == pytest.approx(human_rate / np.sqrt(ratio), rel=0.1), (robot_rate, human_rate)
    assert 1.2 < human_rate < 2.4, human_rate  # adults walk at about 1.4-2.2 steps/s


def test_cli_writes_a_loadable_dataset_and_a_gif(tmp_path, capsys):
    out, gif = tmp_path / "walk.npz", tmp_path / "beside.gif"
    argv = [str(TAKES[-1]), "--out", str(out), "--min-seconds", "0", "--gif", str(gif), "--width", "64", "--height", "48"]
    assert main(argv) == 0
    motions = load_motions(out)
    assert motions.clip_names and motions.clip_names[0].startswith(TAKES[-1].stem)
    assert "ZMP in" in capsys.readouterr().out
    from PIL import Image

    with Image.open(gif) as im:
        assert im.size == (64, 48) and im.n_frames > 50


# ---------------------------------------------------------------------------------------------------------------
# broken files: one error line that names the file
# ---------------------------------------------------------------------------------------------------------------
def broken(kind: str) -> str:
    text = TAKES[0].read_text()
    head, motion = text.split("MOTION", 1)
    lines = motion.strip().splitlines()
    if kind == "truncated":
        return text[: len(text) - len(lines[-1]) // 2 - 1000]
    if kind == "nan":
        values = lines[5].split()
        values[9] = "nan"
        return head + "MOTION\n" + "\n".join([*lines[:5], " ".join(values), *lines[6:]]) + "\n"
    if kind == "letters":
        return text.replace(lines[7].split()[3], "x1.0", 1)
    if kind == "no_legs":
        body = "HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation "
        body += "Xrotation\n JOINT Head\n {\n  OFFSET 0 10 0\n  CHANNELS 3 Zrotation Yrotation Xrotation\n  End Site\n"
        body += "  {\n   OFFSET 0 5 0\n  }\n }\n}\nMOTION\nFrames: 2\nFrame Time: .0083333\n"
        return body + "0 90 0 0 0 0 0 0 0\n0 90 1 0 0 0 0 0 0\n"
    if kind == "no_motion":
        return head
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "MOTION has"),
        ("nan", "non-finite values in MOTION"),
        ("letters", "not a number"),
        ("no_legs", "no left hip joint"),
        ("no_motion", "no MOTION section"),
    ],
)
def test_broken_bvh_is_one_error_line(tmp_path, capsys, kind, message):
    path = tmp_path / f"{kind}.bvh"
    path.write_text(broken(kind))
    out = tmp_path / "out.npz"
    with pytest.raises(SystemExit) as info:
        main([str(path), "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and message in err[0], err
    assert not out.exists()
    with pytest.raises(BVHError):  # the library raises; only the command line exits
        take_to_clips(path)
