"""The run plumbing of the two training files (their `TRY NOT TO MODIFY` parts): the run folder and its logging sinks,
checkpoint files, the settings a run starts from, the devices it splits its envs over, the CPU speed hint, and the
evaluation at the end of training (as CleanRL keeps its evals in cleanrl_utils).

Nothing here knows the env's insides or the algorithm: `ppo_mjx.py` and `ppo_amp_mjx.py` pass in what they check
(their algorithm's name, their observation and action sizes, their `Args`, their env and policy). Checkpoints are
msgpack (no pickle), written atomically, in the format `utils.checkpoint` reads for the tools:

    {"meta": {format, algo, args, global_step, iteration, obs_size, critic_obs_size, action_size, joint_names,
              env_state},
     "policy": {"actor": flax params, "obs_norm": {mean, var, count}},
     "leaves": {"0": array, "1": ...}}    # jax.tree.leaves of the runner state, in order (without the envs' part
                                          # when meta["env_state"] is false)
"""

import csv
import math
import os
from dataclasses import asdict, fields, replace
from pathlib import Path

import jax
import numpy as np
import yaml
from flax import serialization

from utils.checkpoint import FORMAT, saved_settings
from utils.cli import fail

SIZE_KEYS = ("obs_size", "critic_obs_size", "action_size")  # the meta entries a resumed run must match
# settings derived, or about one invocation and machine: a resumed or configured run never inherits them
PER_INVOCATION = ("batch_size", "minibatch_size", "config", "resume", "verify", "num_devices", "coordinator_address",
                  "num_processes", "process_id")  # fmt: skip


def local_copy(tree):  # replicated arrays on the mesh -> numpy, from this process's own copy (no communication)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def num_devices(requested: int | None, coordinator_address: str | None, num_processes: int, process_id: int) -> int:
    """The devices to split the envs over (all by default); joins the other hosts first when a coordinator is named.
    One error line when the processes cannot hold equally many of them."""
    if coordinator_address:  # several hosts: connect before anything asks JAX for its devices
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    count = jax.device_count() if requested is None else requested
    per_process, rest = divmod(count, jax.process_count())
    if count <= 0 or rest or per_process > jax.local_device_count():
        fail(f"--num-devices {count}: {jax.process_count()} process(es) with {jax.local_device_count()} "
             f"{jax.default_backend()} device(s) each")  # fmt: skip
    return count


def device_mesh(num_devices: int, axis: str) -> jax.sharding.Mesh:
    """A one-axis mesh of num_devices devices, equally many from each process (num_devices has been checked)."""
    per_process = num_devices // jax.process_count()
    devices = [d for p in range(jax.process_count()) for d in jax.local_devices(p)[:per_process]]
    return jax.sharding.Mesh(devices, (axis,))


def cpu_hint(backend: str, num_envs: int, sps: float, steps_left: int) -> str | None:
    """On a CPU a GPU-sized batch runs slower than a small one (docs/benchmarks.md): the measured rate, the time
    left, and the setting that runs fastest there. None on an accelerator or with a CPU-sized batch."""
    if backend != "cpu" or num_envs <= 256:
        return None
    left = f"{steps_left / sps / 3600:.1f} h" if steps_left > 3600 * sps else f"{steps_left / sps / 60:.0f} min"
    return (f"cpu: {sps:,.0f} env steps/s at {num_envs} envs, about {left} to go; a CPU runs 64-256 envs fastest "
            "(e.g. --num-envs 128 --num-minibatches 4)")


# --- settings: a run's defaults from --resume CHECKPOINT, then --config FILE.yaml -------------------------------------
def saved_defaults(default, argv: list[str], algo: str, sizes: dict):
    """`default` (an Args) with the settings of the checkpoint argv resumes (--resume), then of the saved args.yaml it
    names (--config), peeked before tyro parses argv: sequences as tuples, derived and per-invocation settings left
    out. One error line for an unreadable file or an unknown setting."""
    peek = {f: next((v for a, v in zip(argv, argv[1:] + [None]) if a == f), None) for f in ("--resume", "--config")}
    peek |= {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if "=" in a and a.split("=", 1)[0] in peek}
    for flag, path in peek.items():
        if path is None:
            continue
        if flag == "--resume":
            values = read_checkpoint(path, algo, sizes)["meta"]["args"]
        else:
            try:
                values = yaml.safe_load(Path(path).read_text())
                assert isinstance(values, dict), "not a mapping of settings"
            except (OSError, yaml.YAMLError, AssertionError) as e:
                fail(f"--config {path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0]})")
        unknown = sorted(set(values) - {f.name for f in fields(default)})
        if unknown:
            fail(f"{flag} {path}: unknown settings {', '.join(unknown)}")
        values = {k: v for k, v in saved_settings(values).items() if k not in PER_INVOCATION}
        default = replace(default, **values)
    return default


# --- checkpoints ------------------------------------------------------------------------------------------------------
def write_checkpoint(path: Path, meta: dict, policy: dict, leaves: dict, keep: int = 3):
    """Writes {meta, policy, leaves} to path through a temporary file (a crash never leaves a half-written one), then
    deletes all but the latest `keep` ckpt_*.msgpack beside it."""
    meta = {"format": FORMAT} | meta
    meta["args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in meta["args"].items()}  # msgpack: no tuples
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize({"meta": meta, "policy": policy, "leaves": leaves}))
    os.replace(tmp, path)
    for old in sorted(path.parent.glob("ckpt_*.msgpack"))[:-keep]:
        old.unlink()


def read_checkpoint(path, algo: str, sizes: dict) -> dict:
    """The checkpoint as nested dicts of numpy arrays; one clear error line if it is missing, corrupt, foreign, of
    the other training file, or made for other observation/action sizes (`sizes`: SIZE_KEYS -> this env's)."""
    try:
        payload = serialization.msgpack_restore(Path(path).read_bytes())
        meta = payload["meta"]
    except FileNotFoundError:
        fail(f"--resume {path}: no such file")
    except Exception as e:  # msgpack raises several types on garbage
        fail(f"--resume {path}: not a readable checkpoint ({type(e).__name__})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "leaves" not in payload:
        fail(f"--resume {path}: not a resumable {FORMAT} checkpoint")
    if meta.get("algo") != algo:
        fail(f"--resume {path}: a checkpoint of '{meta.get('algo')}', this file trains '{algo}'")
    saved, expected = tuple(meta.get(k) for k in SIZE_KEYS), tuple(sizes[k] for k in SIZE_KEYS)
    if saved != expected:
        fail(f"--resume {path}: obs/critic-obs/action sizes {saved} do not match this env's {expected}")
    return payload


def read_policy(path, action_scale=None) -> tuple[dict, dict]:
    """(actor params, observation normalizer {mean, var, count}) as numpy, from the policy entry of any checkpoint (a
    run's or a policy-only file, of either training file); one clear error line if there is none (--init-policy), or
    if the policy was trained at another `action_scale` than this run's."""
    if not Path(path).is_file():
        fail(f"--init-policy {path}: no such file")
    try:
        payload = serialization.msgpack_restore(Path(path).read_bytes())
        assert payload["meta"]["format"] == FORMAT, f"not {FORMAT}"
        actor, norm = payload["policy"]["actor"], payload["policy"]["obs_norm"]
        norm = {k: np.asarray(norm[k]) for k in ("mean", "var", "count")}
    except Exception as e:  # garbage, another format, or a file without the entries
        fail(f"--init-policy {path}: not a policy checkpoint ({type(e).__name__})")
    check_action_scale(payload, action_scale, "--init-policy", path)
    return actor, norm


def check_action_scale(payload: dict, action_scale, flag: str, path):
    """One error line if the checkpoint's run had another --action-scale than `action_scale` (this run's; None: no
    check): the same actions would drive other servo targets. utils.rescale_actions converts a checkpoint."""
    scale = payload["meta"].get("args", {}).get("action_scale")
    if action_scale is not None and scale is not None and action_scale != scale:
        fail(f"{flag} {path}: --action-scale {action_scale} differs from the checkpoint's {scale} (its actions would "
             f"drive other servo targets); python -m utils.rescale_actions converts a checkpoint")  # fmt: skip


def restore_leaves(payload: dict, leaves: list, is_env: list[bool], path, args=None) -> list[np.ndarray]:
    """The saved leaves, each checked against and cast like `leaves` (a template's); a checkpoint without the envs'
    state takes the template's for those (`is_env`: which leaves they are), i.e. fresh episodes. A leaf that does not
    fit names the settings (`args`: this run's) that differ from the checkpoint's run."""
    check_action_scale(payload, getattr(args, "action_scale", None), "--resume", path)
    saved = payload["leaves"]
    if not payload["meta"].get("env_state", True):
        saved = saved | {str(i): np.asarray(x) for i, (x, env) in enumerate(zip(leaves, is_env)) if env}
    if len(saved) != len(leaves):  # another version of the file, with other state (no arrays are matched by guess)
        fail(f"--resume {path}: {len(saved)} arrays where this run has {len(leaves)} (an older version of the file?)")
    for i, b in enumerate(leaves):
        if (a := saved.get(str(i))) is None or a.shape != b.shape:
            fail(f"--resume {path}: array {i} does not fit this run ({getattr(a, 'shape', None)} vs {b.shape}; "
                 f"{changed_settings(payload['meta'], args) or 'another version of the file?'})")  # fmt: skip
    return [np.asarray(saved[str(i)], dtype=b.dtype) for i, b in enumerate(leaves)]


def changed_settings(meta: dict, args) -> str:
    """'settings changed since the checkpoint: --a 1 -> 2, ...' for `args` against the run that wrote `meta`, or ''."""
    saved = saved_settings(meta.get("args", {}))
    changed = [f"--{k.replace('_', '-')} {saved[k]} -> {v}" for k, v in (vars(args) if args else {}).items()
               if k in saved and k not in PER_INVOCATION and saved[k] != v]  # fmt: skip
    return f"settings changed since the checkpoint: {', '.join(changed)}" if changed else ""


def check_round_trip(restored, written, path):
    """--verify: the runner state read back from the checkpoint at `path` equals the one written, leaf by leaf."""
    if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(written))):
        fail(f"verify: checkpoint {path} does not restore the runner state", 1)
    print(f"verify: checkpoint round trip ok ({path.name})")


# --- the evaluation at the end of training ----------------------------------------------------------------------------
def make_rollout(env, policy, num_envs: int, num_steps: int, linvel: slice):
    """Deterministic policy (the mean action) on `num_envs` fresh episodes of a training file's env for `num_steps`
    control steps; `linvel`: where the pelvis velocity lies in the critic observation.

    Returns per-step arrays [num_steps, num_envs, ...]: qpos, reward, done, terminated, command, local velocity.
    """

    def rollout(params, obs_norm, rng):
        def one_step(state, _):
            mean, _ = policy(params, obs_norm, state.obs)
            nxt = jax.vmap(env.step)(state, mean)
            out = dict(qpos=state.data.qpos, reward=nxt.reward, done=nxt.done, terminated=nxt.done & ~nxt.truncated,
                       command=state.info.command, linvel=nxt.reached_critic_obs[:, linvel])  # fmt: skip
            return nxt, out

        state = jax.vmap(env.reset)(jax.random.split(rng, num_envs))
        return jax.lax.scan(one_step, state, None, num_steps)[1]

    return jax.jit(rollout)


def evaluate(rollout, params, obs_norm, rng) -> dict:
    """eval/ metrics of the deterministic policy: return over the horizon, fall rate, velocity-tracking error."""
    out = jax.device_get(rollout(params, obs_norm, rng))
    alive = np.cumsum(out["done"], axis=0) - out["done"] == 0  # (T, N) steps up to and incl. the first episode end
    vel_err = np.linalg.norm(out["linvel"][..., :2] - out["command"][..., :2], axis=-1)
    return {"eval/episodic_return": float((out["reward"] * alive).sum(0).mean()),
            "eval/falls": float(out["terminated"].any(0).mean()),
            "eval/vel_error": float((vel_err * alive).sum() / max(alive.sum(), 1))}  # fmt: skip


# --- the run folder: args.yaml, TensorBoard, metrics.csv, W&B ---------------------------------------------------------
class Logger:
    """Opens the run folder (args.yaml written atomically) and logs to TensorBoard + metrics.csv + optional W&B.
    A failing W&B warns once and is dropped; training goes on. With several processes, process 0 does it all."""

    def __init__(self, run_dir: Path, args, resume: bool = False):
        from tensorboardX import SummaryWriter

        if jax.process_index() != 0:
            self.log = self.close = lambda *_, **__: None
            return
        run_dir.mkdir(parents=True, exist_ok=resume)
        (run_dir / "args.yaml.tmp").write_text(yaml.safe_dump(asdict(args), sort_keys=False))
        os.replace(run_dir / "args.yaml.tmp", run_dir / "args.yaml")
        self.writer, self.wandb = SummaryWriter(str(run_dir)), None
        self.writer.add_text("hyperparameters", "\n".join(f"{k}: {v}  " for k, v in asdict(args).items()))
        self.csv_path, self.csv = run_dir / "metrics.csv", None
        if args.track:
            try:
                import wandb

                self.wandb = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=asdict(args),
                                        name=run_dir.name, dir=str(run_dir),
                                        settings=wandb.Settings(init_timeout=30))  # fmt: skip
            except Exception as e:  # unreachable server, missing login, ...: keep training
                print(f"warning: W&B disabled ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    def log(self, step: int, metrics: dict, csv_row: bool = True):
        """Non-finite values (no episode ended this iteration) go to the CSV as blanks and nowhere else."""
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for k, v in finite.items():
            self.writer.add_scalar(k, v, step)
        if csv_row:
            if self.csv is None:  # the first iteration fixes the columns; a resumed run appends
                new, self.csv_file = not self.csv_path.exists(), open(self.csv_path, "a", newline="")
                self.csv = csv.DictWriter(self.csv_file, ["global_step", *metrics], extrasaction="ignore")
                if new:
                    self.csv.writeheader()
            self.csv.writerow({"global_step": step, **{k: v if math.isfinite(v) else "" for k, v in metrics.items()}})
            self.csv_file.flush()
        if self.wandb is not None:
            try:
                self.wandb.log(finite, step=step)
            except Exception as e:
                print(f"warning: W&B logging failed, disabled ({type(e).__name__})")
                self.wandb = None

    def close(self):
        self.writer.close()
        if self.csv is not None:
            self.csv_file.close()
        if self.wandb is not None:
            self.wandb.finish()
