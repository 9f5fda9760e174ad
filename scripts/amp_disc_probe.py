"""What does a run's discriminator look at? A measurement (docs/amp.md, session 15).

For each `ppo_amp_mjx.py` run checkpoint (it holds the discriminator, its feature normalizer and the replay of
policy windows), on up to 5,000 policy windows from the replay:
  saliency  the share of |∂D/∂x| per feature (x in the normalizer's units, every frame of a window summed): where the
            style reward's gradient pushes the policy
  swap      the mean style reward gained when one feature, in every frame, takes the values of a random reference
            window (the rest of the policy window kept): the feature alone mended
Features hidden from the discriminator (--feature-min-std) have neither; a run's --disc-feature-weights are applied
as in training (the saliency stays per normalizer unit: the chain rule multiplies each weight in).

    python scripts/amp_disc_probe.py runs/amp__1__0/checkpoints/ckpt_004800.msgpack [...] [--json probe.json]
"""

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo_amp_mjx as amp  # noqa: E402
from utils.benchmark import write_atomic  # noqa: E402
from utils.motions import load_motions  # noqa: E402


def probe(path: str, samples: int = 5000, seed: int = 0) -> dict:
    args = amp.parse_args(["--resume", path])  # the run's own settings; one error line for a bad checkpoint
    env = amp.WildRobotEnv(args)
    shapes = jax.eval_shape(amp.make_train(args, env)[0], jax.random.PRNGKey(0))
    payload = amp.read_checkpoint(path)
    rs = amp.restore_runner_state(payload, shapes, path)
    ref = amp.reference_pairs(env, load_motions(args.motion_file), args.disc_history)
    k = args.disc_history
    d = ref.shape[-1] // k
    weights = np.tile(amp.disc_input_weights(args, ref[:, :d]), k)  # the scales (0: hidden) make_train gives them
    seen, varied = weights > 0, weights[:d] > 0
    rng = np.random.default_rng(seed)
    pol = np.asarray(rs.replay)[: int(rs.replay_stored)]
    pol = pol[rng.choice(len(pol), min(len(pol), samples), replace=False)]
    ref_draw = ref[rng.choice(len(ref), len(pol))]
    logit = lambda x: amp.Discriminator().apply({"params": rs.disc_params}, x)  # noqa: E731  normalized, seen
    normalize = lambda pairs: amp.normalize_pairs(rs.amp_norm, pairs)[..., seen] * weights[seen]  # noqa: E731
    reward = jax.jit(lambda pairs: amp.style_reward(logit(normalize(pairs)), args.disc_loss).mean())
    grads = np.zeros(ref.shape[-1])
    grads[seen] = np.abs(np.asarray(jax.jit(jax.vmap(jax.grad(logit)))(normalize(pol)))).mean(0) * weights[seen]
    per_feature = grads.reshape(k, d).sum(0)
    base = float(reward(pol))
    swap = {}
    for i in np.flatnonzero(varied):
        x = pol.copy()
        x[:, i::d] = ref_draw[:, i::d]
        swap[amp.AMP_FEATURE_NAMES[i]] = float(reward(x)) - base
    share = {amp.AMP_FEATURE_NAMES[i]: float(per_feature[i] / per_feature.sum()) for i in np.flatnonzero(varied)}
    hidden = [n for n, v in zip(amp.AMP_FEATURE_NAMES, varied) if not v]
    return dict(checkpoint=path, global_step=int(payload["meta"]["global_step"]), windows=len(pol), hidden=hidden,
                style_reward_policy=base, style_reward_reference=float(reward(ref_draw)), saliency=share,
                swap_gain=swap)  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="ppo_amp_mjx.py run checkpoints (runs/*/checkpoints/*.msgpack)")
    parser.add_argument("--json", help="all numbers as JSON")
    cli = parser.parse_args(argv)
    report = []
    for path in cli.checkpoints:
        r = probe(path)
        report.append(r)
        top = lambda m, fmt: ", ".join(f"{n} {m[n]:{fmt}}" for n in sorted(m, key=m.get, reverse=True)[:8])  # noqa: E731
        print(f"{path} ({r['global_step']:,} steps): style reward {r['style_reward_policy']:.3f} on the replay's "
              f"policy windows, {r['style_reward_reference']:.3f} on the reference's")
        print(f"  saliency: {top(r['saliency'], '.1%')}\n  swap gain: {top(r['swap_gain'], '+.3f')}")
    if cli.json:
        write_atomic(Path(cli.json), lambda p: p.write_text(json.dumps(report, indent=1)))
    return report


if __name__ == "__main__":
    main()
