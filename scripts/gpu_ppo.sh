#!/usr/bin/env bash
# The GPU measurement behind docs/benchmarks.md, run as ONE call on a lent H100 (the device tool runs it from the
# repo root with the carried wheels in .whl/ and an empty $OUT folder). Steps:
#   1. install the carried wheels (mujoco, mujoco-mjx, tyro, tensorboardX, ...) next to the machine's CUDA JAX
#   2. the raw MJX physics ceiling at the training batch size (SKIP_PHYSICS=1 skips it: 35 s of a 15-minute lease)
#   3. PPO at that batch size, for at most TRAIN_SECONDS (checkpoints every 10 iterations survive a timeout)
#   4. copy back the log, metrics.csv, args.yaml and the kept checkpoints without their env state (policy + meta)
# The wheels (Python 3.12, x86-64), made here once:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     mujoco==4.0.0 mujoco-core==4.0.0 mujoco-mjx==3.17.0 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 \
#     tensorboardX==2.6.5 trimesh==5.2.0 glfw==2.11.0 pyopengl==3.1.10
# Usage there: NUM_ENVS=8192 TRAIN_SECONDS=430 TOTAL=100000000 CKPT=50 bash scripts/gpu_ppo.sh [ppo_mjx.py|ppo_amp_mjx.py] [extra flags]
# The two AMP runs in docs/amp.md (checkpoints at 1/3, 2/3 and the end of 100M steps; 6 min each; they ran at the
# then-default --action-scale 0.4, add it to repeat them: the default is 0.7 since session 22):
#   SKIP_PHYSICS=1 NUM_ENVS=8192 TRAIN_SECONDS=500 CKPT=205 bash scripts/gpu_ppo.sh ppo_amp_mjx.py --num-minibatches 16 [--disc-updates 8]
# Robust walking from scratch on the training ground (docs/robustness.md; not yet run on a GPU):
#   NUM_ENVS=8192 TRAIN_SECONDS=500 CKPT=100 bash scripts/gpu_ppo.sh ppo_mjx.py --scene assets/scene_terrain.xml
# Per-device scaling on a machine with several GPUs (SCALING=1: NUM_ENVS per device on 1, 2, 4, ... of them, 10
# iterations each, before the training run; SPS and compile time per count into $OUT/scaling.txt):
#   SCALING=1 SKIP_PHYSICS=1 NUM_ENVS=4096 TRAIN_SECONDS=200 bash scripts/gpu_ppo.sh ppo_mjx.py
# The Brax row (BRAX=N: ppo_mjx.py and Brax's PPO, utils/brax_ppo.py, N iterations each at NUM_ENVS through
# utils.benchmark, before the training run; table, plots and results into $OUT/brax/). Add to the wheels:
#   brax==0.14.2 jaxopt==0.8.5 ml-collections==1.1.0 (and absl-py, etils, orbax-checkpoint where that machine lacks them)
#   BRAX=100 SKIP_PHYSICS=1 NUM_ENVS=8192 TRAIN_SECONDS=200 bash scripts/gpu_ppo.sh ppo_mjx.py
set -o pipefail
SCRIPT=${1:-ppo_mjx.py}; shift || true
NUM_ENVS=${NUM_ENVS:-4096}; TRAIN_SECONDS=${TRAIN_SECONDS:-400}; TOTAL=${TOTAL:-100000000}; CKPT=${CKPT:-10}
[ -n "$SKIP_INSTALL" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1; export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1; unset MUJOCO_GL  # no EGL libraries there: mujoco must not try to load them on import
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/device.txt
python3 -c "import jax, mujoco; print('jax', jax.__version__, jax.devices(), 'mujoco', mujoco.__version__)" | tee -a $OUT/device.txt
[ -n "$SKIP_PHYSICS" ] || timeout 90 python3 -m utils.benchmark --physics-only --num-envs $NUM_ENVS 2>&1 | grep -v warp \
  | tee -a $OUT/device.txt  # one file with the device lines: at most 8 files come back, 3 of them policies
if [ -n "$SCALING" ]; then
  GPUS=$(nvidia-smi -L | wc -l)
  for ((d = 1; d <= GPUS; d *= 2)); do
    timeout 300 python3 $SCRIPT --num-envs $((NUM_ENVS * d)) --num-devices $d --num-iterations 10 --no-save-model \
      --eval-episodes 1 --exp-name scaling_$d "$@" 2>&1 | grep -a -E "^compiled|^it +10 " | sed "s/^/$d devices: /" \
      | tee -a $OUT/scaling.txt
  done
fi
if [ -n "$BRAX" ]; then
  timeout 400 python3 -m utils.benchmark --variants ppo_mjx.py brax --num-envs $NUM_ENVS --iterations $BRAX \
    --out $OUT/brax 2>&1 | grep -v warp | tee $OUT/brax.txt; rm -rf $OUT/brax/logs
fi
NAME=gpu_${SCRIPT%.py}
timeout $TRAIN_SECONDS python3 $SCRIPT --num-envs $NUM_ENVS --total-timesteps $TOTAL --checkpoint-interval $CKPT \
  --exp-name $NAME "$@" 2>&1 | grep -v -E "warp|it/s\]$" | tee $OUT/train.log
# the folder this run printed (not `ls runs/`: a warm machine keeps the last call's runs, and --exp-name may be overridden)
RUN=$(grep -a -m1 -o 'run folder: [^ ]*' $OUT/train.log | cut -d' ' -f3); [ -d "$RUN" ] || { echo 'no run folder in train.log'; exit 1; }
cp $RUN/metrics.csv $RUN/args.yaml $OUT/ ; cp $RUN/eval.json $OUT/ 2>/dev/null
python3 - "$RUN" "$OUT" <<'PY'
import sys
from pathlib import Path
from flax import serialization
run, out = Path(sys.argv[1]), Path(sys.argv[2])
for ckpt in sorted((run / "checkpoints").glob("ckpt_*.msgpack")):  # the latest three: style over training for AMP
    payload = serialization.msgpack_restore(ckpt.read_bytes())
    payload.pop("leaves")  # the env state of thousands of envs: only needed to resume, too big to bring back
    (out / f"{run.name.split('__')[0]}_policy_{ckpt.stem}.msgpack").write_bytes(serialization.msgpack_serialize(payload))
    print("policy from", ckpt)
PY
