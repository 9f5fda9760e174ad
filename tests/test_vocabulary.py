"""One vocabulary across the tools: no import circles, one definition of the observation layout and of each contact
rule, command names that parse back, the CPU start-up hint, headless rendering without MUJOCO_GL. All in-process
(or a plain-Python subprocess without JAX): cheap."""

import ast
import os
import re
import subprocess
import sys

import pytest

import ppo_amp_mjx
import ppo_mjx
from conftest import ROOT
from utils import cli, runs

SOURCES = sorted([*ROOT.glob("*.py"), *(ROOT / "utils").glob("*.py")])


def utils_imports(path) -> set[str]:
    """The utils modules a file imports, at its top or inside functions (a lazy import still makes a circle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("utils."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "utils":
            found |= {f"utils.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("utils.")}
    return found


def test_no_import_circle_among_utils():
    graph = {f"utils.{p.stem}": utils_imports(p) for p in (ROOT / "utils").glob("*.py") if p.stem != "__init__"}
    assert graph["utils.motions"] >= {"utils.kinematics"} and "utils.gait" not in graph["utils.motions"]

    def visit(module, path):
        assert module not in path, f"import circle: {' -> '.join([*path, module])}"
        for dep in graph.get(module, ()):
            visit(dep, [*path, module])

    for module in graph:
        visit(module, [])


def test_amp_file_imports_only_what_it_uses():
    """ppo_amp_mjx.py reaches the reference clips' loader and sole kinematics, not the gait generator."""
    direct = utils_imports(ROOT / "ppo_amp_mjx.py")
    reach, todo = set(), list(direct)
    while todo:
        module = todo.pop()
        if module not in reach:
            reach.add(module)
            todo += utils_imports(ROOT / (module.replace(".", "/") + ".py"))
    assert {"utils.kinematics", "utils.motions"} <= direct
    assert "utils.gait" not in reach and "utils.bvh" not in reach, reach


def definitions(pattern: str) -> list[str]:
    """Files (relative) with a line matching `pattern` (a regex), once per matching line."""
    rx = re.compile(pattern)
    return [str(p.relative_to(ROOT)) for p in SOURCES for line in p.read_text().splitlines() if rx.search(line)]


def test_one_definition_of_the_observation_layout_and_the_contact_rules():
    for name in ("OBS_LAYOUT", "CRITIC_LAYOUT", "CONTACT_DIST"):  # one per training file (each stands alone)
        assert definitions(rf"^{name} = ") == ["ppo_amp_mjx.py", "ppo_mjx.py"], name
    assert definitions(r"^CONTACT_Z = ") == ["utils/kinematics.py"]
    assert definitions(r"^\s*def sole_contact\(") == ["utils/kinematics.py"]
    # nowhere else a literal contact threshold or a hard-coded observation slice
    assert definitions(r"dist\S*\s*<\s*[0-9]") == [] and definitions(r"CONTACT_TOL") == []
    assert definitions(r"obs(\.at)?\[[^\]]*\b\d+\s*:\s*\d+") == []
    for mod in (ppo_mjx, ppo_amp_mjx):
        at = mod.obs_slices(mod.OBS_LAYOUT)
        assert mod.WildRobotEnv.OBS_SIZE == at["phase"].stop == 44 and at["command"] == slice(6, 9)
        assert mod.obs_slices(mod.CRITIC_LAYOUT)["push"].stop == mod.WildRobotEnv.CRITIC_OBS_SIZE == 66


def test_command_names_parse_back():
    for name, command in cli.COMMANDS.items():
        assert cli.command_name(command) == name and cli.parse_command(name) == command
    for command in [(0.3, 0.0, 0.25), (-0.2, 0.15, 0.0), (0.0, -0.1, -0.5), (0.45, -0.05, 0.125)]:
        assert cli.parse_command(cli.command_name(command)) == pytest.approx(command)
    assert cli.command_name((0.3, 0.0, 0.25)) == "forward_0.3_turn_left_0.25"
    for bad in ("jump", "forward", "forward_x", "turn_0.5", "forward_0.3_", "", "forward_0.3_backward_0.2"):
        with pytest.raises(ValueError, match="is not a command name"):
            cli.parse_command(bad)


def test_command_flag_takes_a_name_or_three_numbers(capsys):
    assert cli.command_arg(["left_0.15"]) == (0.0, 0.15, 0.0)
    assert cli.command_arg(["0.3", "0", "-0.2"]) == (0.3, 0.0, -0.2)
    for bad in (["0.3", "0"], ["sideways"], ["a", "b", "c"]):
        with pytest.raises(SystemExit) as e:
            cli.command_arg(bad)
        err = capsys.readouterr().err.strip()
        assert e.value.code == cli.EXIT_INPUT and err.startswith("error: --command: ") and "\n" not in err


def test_name_value_flags_parse_or_name_the_choices(capsys):
    """NAME=VALUE items (--reward-scales, --disc-feature-weights): numbers of any sign unless positive is asked for, a
    later item for the same NAME wins; anything else is one error line that lists the names, as argparse does."""
    names = ("feet_phase", "stand_still")
    assert cli.name_values(("feet_phase=2", "stand_still=-0.5", "feet_phase=3e-1"), names, "--x") == {
        "feet_phase": 0.3, "stand_still": -0.5}
    assert cli.name_values((), names, "--x") == {} and cli.name_values(("stand_still=.5",), names, "--x", True) == {
        "stand_still": 0.5}
    cases = [(bad, False) for bad in ("feet=2", "feet_phase", "feet_phase=x", "=1", "feet_phase=nan", "feet_phase=1=2")]
    for bad, positive in cases + [("feet_phase=0", True), ("stand_still=-1", True)]:
        with pytest.raises(SystemExit) as e:
            cli.name_values(("feet_phase=1", bad), names, "--x", positive)
        err = capsys.readouterr().err.strip()
        assert e.value.code == cli.EXIT_INPUT and err == (f"error: --x {bad}: expected NAME=VALUE with NAME one of "
                                                          "feet_phase, stand_still" + " and VALUE > 0" * positive), err


def test_cpu_hint():
    """A GPU-sized batch on a CPU gets the measured rate, the time left and the CPU setting; nothing otherwise."""
    hint = runs.cpu_hint("cpu", 2048, 1200.0, 100_000_000)
    assert hint.startswith("cpu: 1,200 env steps/s at 2048 envs, about 23.1 h to go") and "--num-envs 128" in hint
    assert "about 14 min to go" in runs.cpu_hint("cpu", 512, 2000.0, 1_700_000)
    assert runs.cpu_hint("gpu", 8192, 400_000.0, 10**8) is None and runs.cpu_hint("cpu", 256, 2400.0, 10**7) is None


def test_headless_render_without_mujoco_gl(tmp_path):
    """mujoco imported first with no MUJOCO_GL and no display (a fresh shell on a server): rendering still works."""
    code = ("import mujoco\nfrom utils.render import render_qpos\n"
            "m = mujoco.MjModel.from_xml_path('assets/scene_flat.xml')\n"
            "f = render_qpos(m, m.key('home').qpos, 64, 48)[0]\nprint(f.shape, round(float(f.std()), 1))")  # fmt: skip
    unset = ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    shape, std = proc.stdout.split(") ")
    assert shape == "(48, 64, 3" and float(std) > 1.0  # a picture, not a blank frame
