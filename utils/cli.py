"""One vocabulary for the command-line tools: command names, the shared flags, errors and exit codes.

Commands. Every velocity command (vx m/s, vy m/s, yaw rate rad/s) has one name, and every name parses back:

    stand                        (0, 0, 0)
    forward_0.3, backward_0.2    vx
    left_0.15, right_0.15        vy
    turn_left_0.5, turn_right_0.5    yaw rate
    forward_0.3_turn_left_0.25   parts joined in the order vx, vy, yaw

`COMMANDS` is the catalog: the shipped reference clips' grid (`utils.gait`), the default of `utils.evaluate` and what
`utils.compare_gaits` compares. A flag that takes one command (`--command`) takes a name or three numbers.

Flags: `--command NAME | VX VY YAW`, `--seed` (default 1, as in the training files), `--width/--height` (pixels),
`--seconds`, `--out` (required where the tool writes one file the user names; under `runs/` where it writes a folder).

Exit codes: 0 done; 1 the tool ran and a check it makes failed (a motion file `utils.motions check` rejects, an ONNX
export off by more than its tolerance, a NaN in training); 2 bad input (a flag, a missing or foreign file): one
`error: ...` line on stderr and nothing written.
"""

import argparse
import re
import sys

SEED = 1
EXIT_CHECK, EXIT_INPUT = 1, 2
RUNS = "runs"  # where tools write folders unless --out says otherwise (the training files write their runs there too)

COMMANDS = {  # name -> (vx m/s, vy m/s, yaw rate rad/s)
    "stand": (0.0, 0.0, 0.0),
    "forward_0.1": (0.1, 0.0, 0.0),
    "forward_0.2": (0.2, 0.0, 0.0),
    "forward_0.3": (0.3, 0.0, 0.0),
    "forward_0.4": (0.4, 0.0, 0.0),
    "forward_0.5": (0.5, 0.0, 0.0),
    "backward_0.2": (-0.2, 0.0, 0.0),
    "left_0.15": (0.0, 0.15, 0.0),
    "right_0.15": (0.0, -0.15, 0.0),
    "turn_left_0.5": (0.0, 0.0, 0.5),
    "turn_right_0.5": (0.0, 0.0, -0.5),
}
_WORDS = (("forward", "backward"), ("left", "right"), ("turn_left", "turn_right"))  # (+, -) per component
_PART = r"(forward|backward|left|right|turn_left|turn_right)_(\d+(?:\.\d+)?)"  # one component: word_value


def command_name(command) -> str:
    """The name of a command (vx, vy, yaw rate): 'stand', 'forward_0.3', 'forward_0.3_turn_left_0.25', ..."""
    parts = [f"{words[value < 0]}_{abs(value):g}" for words, value in zip(_WORDS, map(float, command)) if value != 0]
    return "_".join(parts) or "stand"


def parse_command(text: str) -> tuple[float, float, float]:
    """The command of a name (inverse of `command_name`); ValueError with the accepted forms otherwise."""
    if text == "stand":
        return (0.0, 0.0, 0.0)
    parts = re.findall(_PART, text) if re.fullmatch(f"{_PART}(_{_PART})*", text) else []
    axes = [next(i for i, words in enumerate(_WORDS) if word in words) for word, _ in parts]
    if not parts or len(set(axes)) < len(axes):
        raise ValueError(f"{text!r} is not a command name (e.g. stand, forward_0.3, left_0.15, turn_right_0.5, "
                         "forward_0.3_turn_left_0.25)")  # fmt: skip
    command = [0.0, 0.0, 0.0]
    for axis, (word, value) in zip(axes, parts):
        command[axis] = float(value) if word == _WORDS[axis][0] else -float(value)
    return tuple(command)


def fail(message: str, code: int = EXIT_INPUT):
    """End a tool with one clear line on stderr (exit code 2: bad input, unless told otherwise)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def name_values(items, names, flag: str, positive: bool = False) -> dict[str, float]:
    """A flag's NAME=VALUE items -> {NAME: VALUE} (a later NAME replaces an earlier one); one error line, naming the
    choices as argparse does, unless every NAME is one of names and every VALUE a number (> 0 if positive)."""
    values = {}
    for item in items:
        name, _, value = item.rpartition("=")
        if name not in names or not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", value) or (
            positive and float(value) <= 0):
            fail(f"{flag} {item}: expected NAME=VALUE with NAME one of {', '.join(names)}"
                 + (" and VALUE > 0" if positive else ""))
        values[name] = float(value)
    return values


def command_arg(values: list[str], flag: str = "--command") -> tuple[float, float, float]:
    """--command NAME or --command VX VY YAW -> (vx, vy, yaw rate); one error line otherwise."""
    try:
        if len(values) == 1:
            return parse_command(values[0])
        if len(values) == 3:
            return tuple(float(v) for v in values)
        raise ValueError(f"expected a name or VX VY YAW, got {' '.join(values)}")
    except ValueError as e:
        fail(f"{flag}: {e}")


def add_command(parser: argparse.ArgumentParser, default: str | None, help: str = "the velocity command"):
    """--command NAME | VX VY YAW (read with `command_arg`); default None: optional, args.command is then None."""
    parser.add_argument("--command", nargs="+", default=None if default is None else [default],
                        metavar="NAME | VX VY YAW", help=f"{help}: a name (utils.cli) or vx (m/s) vy (m/s) yaw rate "
                        f"(rad/s)" + (f" (default {default})" if default else ""))  # fmt: skip


def add_seed(parser: argparse.ArgumentParser):
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED}, as in training)")


def add_size(parser: argparse.ArgumentParser, width: int, height: int):
    parser.add_argument("--width", type=int, default=width, help=f"pixels (default {width})")
    parser.add_argument("--height", type=int, default=height, help=f"pixels (default {height})")
