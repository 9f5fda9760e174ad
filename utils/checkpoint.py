"""Load the policy of a training checkpoint (`ppo_mjx.py` or `ppo_amp_mjx.py`) for the tools: evaluate, video, export.

Only the checkpoint's `meta` and `policy` entries are read, so policy-only checkpoints (without the runner state's
`leaves`) work too. A run folder means its latest checkpoint.

    from utils.checkpoint import load_policy
    policy = load_policy("runs/ppo_mjx__1__1795691579")  # a run folder, or assets/policies/ppo_walk_h100.msgpack
    action = policy.act(obs)                                     # (..., 44) -> (..., 11); numpy in, numpy out
    action = jax.jit(policy.act)(obs)                            # jax in, jax out (usable inside jit / vmap / scan)

Bad input raises `CheckpointError` with a one-line message; the CLIs turn it into `error: ...` and exit code 2.
"""

import importlib
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import serialization

from utils.cli import fail
from utils.robot import JOINT_NAMES

ROOT = Path(__file__).resolve().parent.parent
FORMAT = "wildrobot-ckpt-1"
ALGO_MODULES = {"ppo": "ppo_mjx", "amp": "ppo_amp_mjx"}  # meta["algo"] -> the training file that wrote it


def saved_settings(args: dict) -> dict:
    """A run's saved settings (a checkpoint's meta["args"], an args.yaml) as the training files' Args hold them: msgpack
    and YAML give sequences back as lists, Args has tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def dense_names(actor: dict) -> list[str]:
    """The actor params' Dense layers in call order ("Dense_0", ..., "Dense_10": by number, not by string)."""
    return sorted((k for k in actor if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))


class CheckpointError(ValueError):
    """A missing, unreadable or foreign checkpoint; str(e) is one line naming the file and the problem."""


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (or its checkpoints/ folder) -> its latest ckpt_*.msgpack."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = sorted(folder.glob("ckpt_*.msgpack"))
        if not found:
            raise CheckpointError(f"{path}: a folder without checkpoints (expected {folder}/ckpt_*.msgpack)")
        return found[-1]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


@dataclass
class Policy:
    """The deterministic actor (the Gaussian's mean) with its observation normalizer."""

    path: Path
    meta: dict  # format, algo, args, global_step, iteration, obs_size, critic_obs_size, action_size
    args: object  # the training file's Args, as the checkpoint saved them
    module: object  # the training file (ppo_mjx or ppo_amp_mjx) as a module: env, Actor, constants
    actor_params: dict  # flax params of the Actor: Dense_0..Dense_k {kernel, bias}, log_std
    obs_mean: np.ndarray  # (44,)
    obs_var: np.ndarray  # (44,)

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(kernel (in, out), bias (out,)) of each Dense layer in order; swish after all but the last."""
        names = dense_names(self.actor_params)
        return [(np.asarray(self.actor_params[k]["kernel"]), np.asarray(self.actor_params[k]["bias"])) for k in names]

    def normalize(self, obs):
        """The training file's Normalizer: (obs - mean) / sqrt(var + 1e-8), clipped to ±10."""
        xp = np if isinstance(obs, np.ndarray) else jnp
        return xp.clip((obs - self.obs_mean) / xp.sqrt(self.obs_var + 1e-8), -10.0, 10.0)

    def act(self, obs):
        """Deterministic action (..., 11) of raw observations (..., 44). numpy -> numpy (no JAX dispatch, cheap in a
        plain MuJoCo loop), anything else -> the training file's `Actor.apply` (so it traces inside jit/vmap)."""
        if isinstance(obs, np.ndarray):
            x = self.normalize(obs.astype(np.float32))
            layers = self.layers()
            for i, (w, b) in enumerate(layers):
                x = x @ w + b
                if i < len(layers) - 1:
                    x = x / (1.0 + np.exp(-x))  # swish(x) = x · sigmoid(x)
            return x
        actor = self.module.Actor(self.meta["action_size"], self.args.min_std)
        return actor.apply({"params": self.actor_params}, self.normalize(obs))[0]

    def act_jax(self, obs):
        """The reference: `Actor.apply` of the training file, whatever the input type (used for parity checks)."""
        return self.act(jnp.asarray(obs))

    def env_args(self, **overrides):
        """The checkpoint's Args with `overrides` (e.g. domain_randomization=False), for building a WildRobotEnv."""
        from dataclasses import replace

        return replace(self.args, **overrides)


def load_policy(path: str | Path) -> Policy:
    """Read a checkpoint (or a run folder's latest) and check it is a WildRobot policy; CheckpointError otherwise."""
    file = resolve(path)
    try:
        payload = serialization.msgpack_restore(file.read_bytes())
        meta, saved = payload["meta"], payload["policy"]
        assert isinstance(meta, dict) and isinstance(saved, dict)
    except Exception as e:  # msgpack raises several types on garbage; a dict without the keys is not ours either
        raise CheckpointError(f"{file}: not a readable checkpoint ({type(e).__name__})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a {FORMAT} checkpoint (format {meta.get('format')!r})")
    if meta.get("algo") not in ALGO_MODULES:
        raise CheckpointError(f"{file}: unknown algo {meta.get('algo')!r} (known: {', '.join(ALGO_MODULES)})")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        module = importlib.import_module(ALGO_MODULES[meta["algo"]])
    except ImportError:
        raise CheckpointError(f"{file}: written by {ALGO_MODULES[meta['algo']]}.py, which is not in {ROOT}") from None
    # the actor's interface, from the training file (its OBS_LAYOUT); other sizes mean another robot
    obs_size, action_size = module.WildRobotEnv.OBS_SIZE, module.WildRobotEnv.ACTION_SIZE
    sizes = (meta.get("obs_size"), meta.get("action_size"))
    if sizes != (obs_size, action_size):
        expected = (obs_size, action_size)
        raise CheckpointError(f"{file}: another robot: obs/action sizes {sizes}, the WildRobot's are {expected}")
    try:
        actor, norm = saved["actor"], saved["obs_norm"]
        names = dense_names(actor)
        shapes = [tuple(actor[k]["kernel"].shape) for k in names]  # (in, out) per layer, in call order
        mean, var = np.asarray(norm["mean"], np.float32), np.asarray(norm["var"], np.float32)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{file}: the policy entry lacks {e} (actor Dense_* + log_std, obs_norm)") from None
    chained = bool(shapes) and all(a[1] == b[0] for a, b in zip(shapes, shapes[1:]))
    if not chained or shapes[0][0] != obs_size or shapes[-1][1] != action_size:
        raise CheckpointError(f"{file}: actor layers {', '.join(f'{i}->{o}' for i, o in shapes)} do not chain "
                              f"{obs_size} -> ... -> {action_size} (written by an older training file?)")  # fmt: skip
    if mean.shape != (obs_size,) or var.shape != (obs_size,):
        raise CheckpointError(f"{file}: another robot: observation normalizer {mean.shape}, expected ({obs_size},)")
    # the joints the policy drives: the checkpoint's own list if it has one, else the actuators of its scene
    joints = meta.get("joint_names")
    if joints is None:
        scene = ROOT / meta.get("args", {}).get("scene", "")
        if not scene.is_file():
            raise CheckpointError(f"{file}: its scene {scene} does not exist here")
        m = mujoco.MjModel.from_xml_path(str(scene))
        joints = [m.joint(m.actuator_trnid[i, 0]).name for i in range(m.nu)]
    if tuple(joints) != JOINT_NAMES:
        raise CheckpointError(f"{file}: another robot: joints {', '.join(joints)} differ from the WildRobot's")

    known = {f.name for f in fields(module.Args)}
    args = module.Args(**{k: v for k, v in saved_settings(meta["args"]).items() if k in known})
    actor = jax.tree.map(lambda x: np.asarray(x, np.float32), actor)
    return Policy(file, meta, args, module, actor, mean, var)


def load_policy_or_exit(path: str | Path) -> Policy:
    """load_policy for the command-line tools: a bad checkpoint ends the program with its one-line error."""
    try:
        return load_policy(path)
    except CheckpointError as e:
        fail(str(e))
