"""Brax's PPO trainer (the original WildRobot project's) on this project's WildRobotEnv, for side-by-side benchmarks.

Brax is used here and nowhere else (requirements.txt pins brax 0.14.2 for this tool; the training files never import
it). Where it is missing: pip install brax==0.14.2

    python -m utils.brax_ppo --num-envs 64 --num-iterations 20        # ppo_mjx.py's flags
    python -m utils.benchmark --variants ppo_mjx.py brax --num-envs 64 256 --iterations 20

The env is ppo_mjx.py's `WildRobotEnv` as is (its own auto-reset, randomization, pushes and truncation); a thin
adapter batches it for Brax (`wrap_env=False`) and hands Brax the actor obs as "state" and the critic obs as
"privileged_state". ppo_mjx.py's flags map onto `brax.training.agents.ppo.train`:

    --num-envs, --seed                    num_envs, seed
    --num-steps                           unroll_length (one unroll per env per iteration, as in ppo_mjx.py)
    --num-minibatches                     num_minibatches (batch_size = num_envs / num_minibatches unrolls)
    --update-epochs                       num_updates_per_batch
    --learning-rate --ent-coef --gamma --gae-lambda --clip-coef --max-grad-norm --norm-adv --vf-coef   the same
    actor (256, 128, 128) / critic (256, 256, 128), swish     policy_/value_hidden_layer_sizes, activation

What stays Brax's own: a constant learning rate (no --anneal-lr), an unclipped value loss (no --clip-vloss), a
tanh-squashed Gaussian with a learned scalar std (no --init-std / --min-std), truncated steps masked out of GAE
rather than bootstrapped from the state reached, and no checkpoints. The return in metrics.csv
(`charts/episodic_return`) is Brax's training-episode logger: the mean over the last 100 episodes ended, where
ppo_mjx.py averages the episodes ended in the iteration. Brax compiles inside its first training epoch; the compile
time printed is that epoch's time minus the median of the later ones (an estimate; needs --num-iterations >= 2).

The run folder (runs/<exp-name>__<seed>__<time>/) holds args.yaml, metrics.csv, TensorBoard events and eval.json:
the same deterministic evaluation as ppo_mjx.py (`evaluate`, --eval-episodes episodes) of Brax's final policy.
"""

import functools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ppo_mjx
from utils import runs
from utils.cli import RUNS, fail

INSTALL = "pip install brax==0.14.2"


def device_put_replicated(tree, devices, axis_name):
    """The jax.device_put_replicated Brax 0.14.2 calls (gone from current JAX): one copy per device, stacked, laid out
    as Brax's pmapped epoch returns its state (a mesh over Brax's pmap axis), so the epoch compiles once, not twice."""
    sharding = NamedSharding(jax.sharding.Mesh(np.array(devices), (axis_name,)), P(axis_name))
    return jax.tree.map(lambda x: jax.device_put(jp.broadcast_to(x, (len(devices),) + jp.shape(x)), sharding), tree)


def import_brax():
    """Brax's PPO modules, with the shim in place; one error line saying how to install Brax if it is missing."""
    try:
        from brax.envs.base import Env, State
        from brax.training.agents.ppo import networks
        from brax.training.agents.ppo import train as ppo
    except ImportError as e:
        fail(f"Brax is not installed ({e}): {INSTALL}")
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = functools.partial(device_put_replicated, axis_name=ppo._PMAP_AXIS_NAME)
    return Env, State, networks, ppo


def make_adapter(env: ppo_mjx.WildRobotEnv):
    """A Brax env over a batch of WildRobotEnvs (Brax's wrap_env=False): reset takes (N, 2) keys, step (N, A)."""
    Env, State, _, _ = import_brax()

    def brax_state(s: ppo_mjx.EnvState, reward, done, truncation):
        ended = dict(sum_reward=s.metrics["episode_return"], length=s.metrics["episode_length"])  # read at done
        info = dict(truncation=truncation, episode_done=done, episode_metrics=ended)  # the fields Brax's PPO reads
        return State(s, dict(state=s.obs, privileged_state=s.critic_obs), reward, done, {}, info)

    class WildRobotBrax(Env):
        def reset(self, rng):
            s = jax.vmap(env.reset)(rng)
            zero = jp.zeros(rng.shape[:1])
            return brax_state(s, zero, zero, zero)

        def step(self, state, action):
            s = jax.vmap(env.step)(state.pipeline_state, action)
            f32 = lambda x: x.astype(jp.float32)  # noqa: E731
            return brax_state(s, s.reward, f32(s.done), f32(s.truncated))

        observation_size = property(lambda self: dict(state=(env.OBS_SIZE,), privileged_state=(env.CRITIC_OBS_SIZE,)))
        action_size = property(lambda self: env.ACTION_SIZE)
        backend = property(lambda self: "mjx")

    return WildRobotBrax()


def brax_kwargs(args: ppo_mjx.Args, networks) -> dict:
    """ppo_mjx.py's settings as `ppo.train` keyword arguments (the table in the module docstring)."""
    factory = functools.partial(
        networks.make_ppo_networks, policy_hidden_layer_sizes=ppo_mjx.Actor.hidden,
        value_hidden_layer_sizes=ppo_mjx.Critic.hidden, activation=jax.nn.swish,
        policy_obs_key="state", value_obs_key="privileged_state")  # fmt: skip
    return dict(
        num_timesteps=args.total_timesteps, num_evals=args.num_iterations + 1, run_evals=False,
        log_training_metrics=True, training_metrics_steps=args.batch_size, max_devices_per_host=args.num_devices,
        wrap_env=False, num_envs=args.num_envs, episode_length=round(args.episode_seconds / ppo_mjx.CTRL_DT),
        unroll_length=args.num_steps, batch_size=args.num_envs // args.num_minibatches,
        num_minibatches=args.num_minibatches, num_updates_per_batch=args.update_epochs,
        learning_rate=args.learning_rate, entropy_cost=args.ent_coef, discounting=args.gamma,
        gae_lambda=args.gae_lambda, clipping_epsilon=args.clip_coef, max_grad_norm=args.max_grad_norm,
        normalize_advantage=args.norm_adv, vf_loss_coefficient=args.vf_coef, normalize_observations=True,
        network_factory=factory, seed=args.seed,
    )  # fmt: skip


def train(args: ppo_mjx.Args):
    """Train with Brax's PPO; writes the run folder like ppo_mjx.py does. Returns (run_dir, rows of metrics.csv)."""
    _, _, networks, ppo = import_brax()
    if args.num_envs % args.num_minibatches:
        fail(f"brax: --num-envs {args.num_envs} must be divisible by --num-minibatches {args.num_minibatches} "
             "(Brax's minibatches are whole unrolls)")  # fmt: skip
    env = ppo_mjx.WildRobotEnv(args)
    run_dir = Path(RUNS) / f"{args.exp_name}__{args.seed}__{int(time.time())}"  # as ppo_mjx.py names it
    logger = runs.Logger(run_dir, args)  # the run folder with its args.yaml, as ppo_mjx.py opens it
    print(f"run folder: {run_dir}")
    print(f"brax PPO: {args.num_envs} envs × {args.num_steps} steps = batch {args.batch_size}, "
          f"{args.num_iterations} iterations, on {jax.devices()[0]}")

    # progress_fn is called twice per epoch: by Brax's episode logger (episode/ metrics), then after the epoch
    # (training/ metrics with training/walltime, the epochs' time so far); the second call writes the row
    episodes, epochs, rows = {}, [], []

    def progress(step, metrics):
        if "training/walltime" not in metrics:
            episodes.update(metrics)
            return
        epochs.append(float(metrics["training/walltime"]))
        losses = {f"brax/{k.split('/', 1)[1]}": float(v) for k, v in metrics.items() if k.startswith("training/")}
        rows.append(dict(step=int(step), walltime=epochs[-1], ret=float(episodes.get("episode/sum_reward", math.nan)),
                         length=float(episodes.get("episode/length", math.nan)), losses=losses))  # fmt: skip
        print(f"it {len(rows):5d} | step {int(step):>11,} | epoch {np.diff([0.0] + epochs)[-1]:6.2f} s | "
              f"return {rows[-1]['ret']:7.3f} | length {rows[-1]['length']:6.1f}", flush=True)

    kwargs = brax_kwargs(args, networks)
    make_policy, params, _ = ppo.train(environment=make_adapter(env), progress_fn=progress, **kwargs)

    # the compile time, estimated: the first epoch (compile + one epoch) minus a typical later epoch
    durations = np.diff([0.0] + epochs)
    compile_s = float(durations[0] - np.median(durations[1:])) if len(durations) > 1 else math.nan
    print(f"compiled in {compile_s:.1f} s (estimated: first iteration - median of the others)")
    shift = 0.0 if math.isnan(compile_s) else compile_s
    logger.log(rows[0]["step"] if rows else 0, {"charts/compile_seconds": compile_s}, csv_row=False)
    for r in rows:  # the columns ppo_mjx.py writes, so utils.benchmark and utils.plot_runs read both alike
        sps = r["step"] / max(r["walltime"] - shift, 1e-9)
        logger.log(r["step"], {"charts/SPS": sps, "charts/episodic_return": r["ret"],
                               "charts/episodic_length": r["length"], **r["losses"]})  # fmt: skip

    # the same deterministic evaluation as ppo_mjx.py, of Brax's final policy (critic obs unused by the actor)
    infer = make_policy(params, deterministic=True)

    def policy(_params, _norm, obs):  # ppo_mjx's rollout calls policy(params, obs_norm, obs) -> (mean, std)
        full = dict(state=obs, privileged_state=jp.zeros(obs.shape[:-1] + (env.CRITIC_OBS_SIZE,)))
        return infer(full, jax.random.PRNGKey(0))[0], None

    linvel = ppo_mjx.obs_slices(ppo_mjx.CRITIC_LAYOUT)["linvel"]
    rollout = runs.make_rollout(env, policy, args.eval_episodes, env.episode_steps, linvel)
    eval_metrics = runs.evaluate(rollout, None, None, jax.random.PRNGKey(args.seed + 1))
    logger.log(rows[-1]["step"] if rows else 0, eval_metrics, csv_row=False)
    (run_dir / "eval.json").write_text(json.dumps(eval_metrics, indent=2))
    print("eval: " + ", ".join(f"{k} {v:.3f}" for k, v in eval_metrics.items()))
    logger.close()
    return run_dir, rows


NOT_BRAX = ("--resume", "--init-policy", "--critic-warmup-iterations", "--target-kl", "--init-std", "--min-std",
            "--anneal-lr", "--no-anneal-lr", "--clip-vloss", "--no-clip-vloss", "--capture-video")  # ppo_mjx.py's own


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    import_brax()  # a missing Brax is the first thing said
    if "-h" in argv or "--help" in argv:
        print(__doc__)  # then ppo_mjx.py's flags, from tyro
    if taken := [a for a in argv if a.split("=")[0] in NOT_BRAX]:
        fail(f"brax: {', '.join(taken)} is ppo_mjx.py's only (Brax's PPO here: see python -m utils.brax_ppo --help)")
    args = ppo_mjx.parse_args(argv)
    if not any(a.startswith("--exp-name") for a in argv):
        args = replace(args, exp_name="brax_ppo")
    train(args)


if __name__ == "__main__":
    main()
