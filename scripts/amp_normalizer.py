"""Which statistics should normalize the discriminator's features? A measurement (docs/amp.md, session 7).

A policy's states (MJX, the 11 gait-grid commands × 4 episodes × 8 s, deterministic, the first 2 s and falls dropped)
and the reference clips' features, normalized by statistics of a stream with a given share of policy samples: what the
running normalizer saw at 8192 and 2048 envs (every policy pair of the batch + 4096 reference pairs per iteration),
equal counts, and the reference alone. Printed per choice: reference values beyond the ±10 clip and beyond ±5, policy
values clipped, and the reference's spread per feature under it (1 = the reference at unit scale).

    python scripts/amp_normalizer.py assets/policies/amp_walk_h100.msgpack
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo_amp_mjx as amp  # noqa: E402
from utils.checkpoint import load_policy_or_exit  # noqa: E402
from utils.cli import COMMANDS  # noqa: E402
from utils.evaluate import rollout_mjx  # noqa: E402
from utils.motions import load_motions  # noqa: E402
from utils.robot import WALK_MOTIONS  # noqa: E402

policy = load_policy_or_exit(sys.argv[1])
rollout = rollout_mjx(policy, np.repeat(np.array(list(COMMANDS.values()), np.float32), 4, axis=0), None, 400)
keep = rollout["valid"][:, 100:]
qpos, qvel = rollout["qpos"][:, 100:][keep], rollout["qvel"][:, 100:][keep]
env = amp.WildRobotEnv(amp.Args())
feat = np.asarray(jax.jit(jax.vmap(env.amp_observation))(jnp.asarray(qpos), jnp.asarray(qvel)))
ref = amp.reference_pairs(env, load_motions(WALK_MOTIONS))[:, : feat.shape[1]]
seen = ref.std(0) > amp.Args().feature_min_std
feat, ref, names = feat[:, seen], ref[:, seen], np.array(amp.AMP_FEATURE_NAMES)[seen]
print(f"{sys.argv[1]}: {len(feat)} policy states, {len(ref)} reference frames, {seen.sum()} features")
rng = np.random.default_rng(0)
for name, share in (("policy 97.6 % (8192 envs)", 163840 / 167936), ("policy 91 % (2048 envs)", 40960 / 45056),
                    ("equal counts", 0.5), ("reference only", 0.0)):  # fmt: skip
    k = int(200_000 * share)
    stream = np.concatenate([feat[rng.integers(0, len(feat), k)], ref[rng.integers(0, len(ref), 200_000 - k)]])
    mean, std = stream.mean(0), stream.std(0) + 1e-8
    z_ref, z_pol = (ref - mean) / std, (feat - mean) / std
    spread = z_ref.std(0)
    print(f"  {name:26s} reference clipped {100 * np.mean(np.abs(z_ref) > 10):.2f} %, beyond 5: "
          f"{100 * np.mean(np.abs(z_ref) > 5):.2f} %; policy clipped {100 * np.mean(np.abs(z_pol) > 10):.2f} %; "
          f"reference spread {spread.min():.2f} ({names[spread.argmin()]}) to {spread.max():.2f} "
          f"({names[spread.argmax()]}), median {np.median(spread):.2f}")
