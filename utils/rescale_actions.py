"""Move a checkpoint to another --action-scale without changing what its policy does.

    python -m utils.rescale_actions runs/amp__1__0/checkpoints/ckpt_008000.msgpack --action-scale 0.7 \\
        --out runs/amp_wide__1__0/checkpoints/ckpt_008000.msgpack          # a copy of the run folder, then:
    python ppo_amp_mjx.py --resume runs/amp_wide__1__0/checkpoints/ckpt_008000.msgpack --min-std 0.0286
    python -m utils.rescale_actions assets/policies/ppo_walk_h100.msgpack --action-scale 0.7 --out ppo_walk_07.msgpack
    python ppo_amp_mjx.py --init-policy ppo_walk_07.msgpack ...     # AMP from the PPO gait at its default scale

The env maps an action a in [-1, 1] to the servo target default pose + action_scale · a, so a policy trained at 0.4
can never ask for more than 0.4 rad from `home`: the shipped clips swing the knee 0.64 rad past it (docs/amp.md,
session 21). With k = old scale / new scale this multiplies by k the actor's output layer (its mean) and the Adam
moments of that layer (the second moment by k²), adds log k to its log-std, and scales every stored last action (the
observations in the envs' state, the two normalizers' statistics of that part, the envs' info) to the new units. The
policy's targets stay the same wherever its actions were inside [-1, 1]; beyond, it can now reach further. The std
floor --min-std is in the new units: resume with --min-std × k to keep the exploration noise as it was.

A run checkpoint is rebuilt through its training file (the names of its runner state's arrays); a policy-only file
(assets/policies/*.msgpack) has only its policy entry. Bad input is one `error:` line, exit code 2, nothing written.
"""

import argparse
import os
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from utils.checkpoint import dense_names, load_policy_or_exit
from utils.cli import fail

ENV_OBS = (".env_state.obs", ".env_state.critic_obs", ".env_state.reached_critic_obs")  # (N, O or C): raw obs


def rescale_actor(actor: dict, k: float) -> dict:
    """The actor's params with its mean output (the last Dense layer) × k and its std × k."""
    out = dense_names(actor)[-1]
    return actor | {out: {n: np.asarray(v) * k for n, v in actor[out].items()}, "log_std": actor["log_std"] + np.log(k)}


def rescale_norm(norm: dict, k: float, last_action: slice) -> dict:
    """An observation normalizer's {mean, var, count} with the last-action part in the new units."""
    mean, var = np.array(norm["mean"]), np.array(norm["var"])
    mean[last_action] *= k
    var[last_action] *= k * k
    return norm | {"mean": mean, "var": var}


def rescale_leaves(leaves: dict, paths: list[str], k: float, last_action: slice, out_layer: str) -> dict:
    """The runner state's saved arrays ({"i": array}, `paths[i]` their names) in the new units; `out_layer` is the
    actor's output layer (the last of `dense_names`)."""
    out = dict(leaves)
    for key, x in leaves.items():
        p, x = paths[int(key)], np.array(x)
        if f"['actor']['{out_layer}']" in p and p.startswith((".params", ".opt_state")):
            x *= k * k if ".nu" in p else k  # Adam: first moment × k, second × k²
        elif p == ".params['actor']['log_std']":
            x += np.log(k)  # its Adam moments stay: the gradient of a shifted log-std is the same
        elif p in (".obs_norm.mean", ".critic_norm.mean"):
            x[last_action] *= k
        elif p in (".obs_norm.var", ".critic_norm.var"):
            x[last_action] *= k * k
        elif p in ENV_OBS:  # the critic obs begin with the actor's
            x[..., last_action] *= k
        elif p == ".env_state.info.last_action":
            x *= k
        else:
            continue
        out[key] = x
    return out


def state_paths(module, ckpt: Path) -> list[str]:
    """The names of the runner state's arrays, in checkpoint order, for the run that wrote `ckpt`."""
    args = module.parse_args(["--resume", str(ckpt)])
    init = module.make_train(args, module.WildRobotEnv(args))[0]
    flat = jax.tree_util.tree_flatten_with_path(jax.eval_shape(init, jax.random.PRNGKey(0)))[0]
    return [jax.tree_util.keystr(p) for p, _ in flat]


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a run's ckpt_*.msgpack or a policy-only file")
    parser.add_argument("--action-scale", type=float, required=True, help="the new scale (rad per unit action)")
    parser.add_argument("--out", type=Path, required=True, help="the converted checkpoint (a new file)")
    args = parser.parse_args(argv)
    policy = load_policy_or_exit(args.checkpoint)  # a checkpoint of either training file, or one error line
    module, old = policy.module, float(policy.args.action_scale)
    if not args.action_scale > 0 or args.action_scale == old:
        fail(f"--action-scale must be > 0 and differ from the checkpoint's {old}, got {args.action_scale}")
    if args.out.exists():
        fail(f"--out {args.out}: exists (write the converted checkpoint to a new file)")
    last_action, k = module.obs_slices(module.OBS_LAYOUT)["last_action"], old / args.action_scale
    payload = serialization.msgpack_restore(policy.path.read_bytes())
    saved = payload["policy"]
    payload["policy"] = dict(
        actor=rescale_actor(saved["actor"], k), obs_norm=rescale_norm(saved["obs_norm"], k, last_action)
    )
    if "leaves" in payload:
        paths, out_layer = state_paths(module, policy.path), dense_names(saved["actor"])[-1]
        payload["leaves"] = rescale_leaves(payload["leaves"], paths, k, last_action, out_layer)
    payload["meta"]["args"]["action_scale"] = args.action_scale
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(payload))
    os.replace(tmp, args.out)  # atomic: a crash leaves no half-written checkpoint
    print(
        f"wrote {args.out}: action scale {old} -> {args.action_scale} (k = {k:.4f}); resume with --min-std "
        f"{policy.args.min_std * k:.4g} to keep the exploration noise"
    )
    return args.out


if __name__ == "__main__":
    main()
