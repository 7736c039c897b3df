#!/usr/bin/env bash
# Table 3 end to end: route queries between a small and a large model by the small model's DEPO
# estimator. Evaluates both models on the five eval sets (Avg@N per query, resumable), then sweeps
# the thresholds: a query whose predicted accuracy is >= tau stays on the small model.
#
#   bash examples/run_table3_routing.sh                       # knobs below; each can be set from the environment
#   SMALL_CKPT=checkpoints/depo/depo_qwen1.5b_dapo17k/global_step_1000 bash examples/run_table3_routing.sh
#
# The small model is the 1.5B DEPO checkpoint (its actor is merged to HF form by verl's model merger;
# its depo/estimator does the routing); the large one the 7B (a hub id, an HF directory or a verl
# checkpoint). Outputs: $OUT_DIR/{small,large}/<set>.jsonl + summary.md, and $OUT_DIR/table3.{md,json}.
set -euo pipefail

# ---- knobs ---------------------------------------------------------------------------------
SMALL_CKPT=${SMALL_CKPT:-$PWD/checkpoints/depo/depo_qwen1.5b_dapo17k}  # verl checkpoint root or global_step_N
SMALL_MODEL=${SMALL_MODEL:-$SMALL_CKPT}                  # what the small model is evaluated from
ESTIMATOR=${ESTIMATOR:-$SMALL_CKPT}                      # estimator checkpoint or step folder with depo/estimator
LARGE_MODEL=${LARGE_MODEL:-Qwen/Qwen2.5-7B-Instruct}     # or the 7B DEPO checkpoint
SMALL_NAME=${SMALL_NAME:-1.5B}
LARGE_NAME=${LARGE_NAME:-7B}
EVAL_DIR=${EVAL_DIR:-$PWD/data/eval}                     # python -m data_prep.eval_sets --output data/eval
OUT_DIR=${OUT_DIR:-$PWD/runs/table3}
N=${N:-32}                                               # Avg@32, as the paper
TEMPERATURE=${TEMPERATURE:-1.0}
TOP_P=${TOP_P:-1.0}
MAX_RESPONSE=${MAX_RESPONSE:-10240}
SEED=${SEED:-0}
BACKEND=${BACKEND:-auto}                                 # auto: vLLM on a GPU, transformers otherwise
SMALL_TP=${SMALL_TP:-1}                                  # vLLM tensor parallelism per model
LARGE_TP=${LARGE_TP:-2}
LIMIT=${LIMIT:-}                                         # first N queries per set (smoke runs)
THRESHOLDS=${THRESHOLDS:-"0.75 0.7 0.5 0.3"}
PYTHON=${PYTHON:-python3}
# --------------------------------------------------------------------------------------------

# shellcheck disable=SC2206  # word splitting of THRESHOLDS is intended
TAUS=($THRESHOLDS)
COMMON=(--data "$EVAL_DIR" --n "$N" --temperature "$TEMPERATURE" --top-p "$TOP_P"
        --max-response-length "$MAX_RESPONSE" --seed "$SEED" --backend "$BACKEND")
if [[ -n "$LIMIT" ]]; then COMMON+=(--limit "$LIMIT"); fi

echo "== [1/3] small model ($SMALL_NAME): $SMALL_MODEL"
"$PYTHON" -m recipe.depo.evaluate --model "$SMALL_MODEL" --output "$OUT_DIR/small" \
  --tensor-parallel-size "$SMALL_TP" "${COMMON[@]}"
echo "== [2/3] large model ($LARGE_NAME): $LARGE_MODEL"
"$PYTHON" -m recipe.depo.evaluate --model "$LARGE_MODEL" --output "$OUT_DIR/large" \
  --tensor-parallel-size "$LARGE_TP" "${COMMON[@]}"

echo "== [3/3] routing sweep, tau = ${TAUS[*]}"
"$PYTHON" -m recipe.depo.router --estimator "$ESTIMATOR" --data "$EVAL_DIR" \
  --small-results "$OUT_DIR/small" --large-results "$OUT_DIR/large" \
  --small-name "$SMALL_NAME" --large-name "$LARGE_NAME" --thresholds "${TAUS[@]}" \
  --json-output "$OUT_DIR/table3.json" | tee "$OUT_DIR/table3.md"
