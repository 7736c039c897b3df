#!/usr/bin/env bash
# DEPO, Qwen2.5-7B-Instruct on DAPO-Math-17K (paper Table 1, 7B rows), verl 0.9.1 V1 sync trainer.
# Policy settings are the authors' 7B launcher (see docs/depo.md): 128 prompts x 8 rollouts,
# mini-batch 64, prompt 2048 / response 10240 tokens, lr 1e-6 (10 warm-up steps, wd 0.1),
# token-mean loss, no KL, clip 0.2/0.28, overlong buffer 4096 (penalty 1.0), temperature 1.0,
# vLLM TP 2, 2 nodes x 8 GPUs.
#
# Start Ray on both nodes first (ray start --head / ray start --address=...), then on the head:
#   bash examples/run_depo_qwen7b.sh [extra hydra overrides]
# Every knob below can be set from the environment: TRAIN_FILE=... DEPO=false bash ...
# The GRPO baseline and the other datasets are thin wrappers around this file:
#   run_grpo_qwen7b.sh, run_{depo,grpo}_qwen7b_or1.sh, run_{depo,grpo}_qwen7b_nt.sh
set -euo pipefail

# ---- what to train ---------------------------------------------------------------------------
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA_DIR=${DATA_DIR:-$PWD/data}                          # written by python -m data_prep.*
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/dapo_math_17k.parquet}  # data_prep.dapo_math_17k
EVAL_DIR=${EVAL_DIR:-$DATA_DIR/eval}                     # data_prep.eval_sets
EVAL_SETS=(gsm8k math500 amc23 olympiadbench minerva)   # paper Table 1's evaluation sets
DEFAULT_VAL_FILES=$(printf "'$EVAL_DIR/%s.parquet'," "${EVAL_SETS[@]}")
VAL_FILES=${VAL_FILES:-"[${DEFAULT_VAL_FILES%,}]"}
PROJECT=${PROJECT:-depo}
EXPERIMENT=${EXPERIMENT:-depo_qwen7b_dapo17k}
CKPT_DIR=${CKPT_DIR:-$PWD/checkpoints/$PROJECT/$EXPERIMENT}
# the run directory: config.yaml (hydra's composed config) and metrics.jsonl (verl's file logger),
# what `python -m recipe.depo.report --runs NAME=$RUN_DIR` reads; evaluate into $RUN_DIR/eval
RUN_DIR=${RUN_DIR:-$CKPT_DIR}
LOGGERS=${LOGGERS:-"[console,wandb,file]"}               # keep `file`: the report reads its output

# ---- method ----------------------------------------------------------------------------------
DEPO=${DEPO:-true}                     # false: plain GRPO (same settings, no estimator/filter)
ADV_ESTIMATOR=${ADV_ESTIMATOR:-grpo_depo}
FILTER=${FILTER:-true}                 # false with DEPO=true: no pre-rollout filter (GRPO + masking)
MASK_ZERO_ADV=${MASK_ZERO_ADV:-false}  # true: "DEPO + DAPO w/o dynamic sampling" / "GRPO + masking"
DYNAMIC_SAMPLING=${DYNAMIC_SAMPLING:-false}  # DAPO's group filtering (algorithm.filter_groups)

# ---- verl V1 trainer mode (docs/depo.md, "Asynchronous trainer modes"); GRPO rows take it too ----
TRAINER_MODE=${TRAINER_MODE:-sync}     # sync (the paper's) | colocate_async | separate_async
ASYNC_WARMUP_BATCHES=${ASYNC_WARMUP_BATCHES:-1}  # async: batches generated ahead (num_warmup_batches)
MAX_OFF_POLICY=${MAX_OFF_POLICY:-null}  # async: drop groups spanning more policy versions (null: keep all)
# separate_async only: rollout on nodes of its own, weights pushed by a GPU engine (verl refuses
# `naive` there), PARAM_SYNC_STEP mini-batches per step (verl: TRAIN_BATCH = PARAM_SYNC_STEP x MINI_BATCH)
ROLLOUT_NNODES=${ROLLOUT_NNODES:-1}
ROLLOUT_GPUS_PER_NODE=${ROLLOUT_GPUS_PER_NODE:-8}
CKPT_ENGINE=${CKPT_ENGINE:-nccl}
PARAM_SYNC_STEP=${PARAM_SYNC_STEP:-}   # empty: TRAIN_BATCH / MINI_BATCH

# ---- estimator (authors' launcher values) ----------------------------------------------------
EST_BACKBONE=${EST_BACKBONE:-distilbert-base-uncased}
EST_PLACEMENT=${EST_PLACEMENT:-colocated}   # colocated | separate | cpu
EST_LR=${EST_LR:-2e-4}
EST_BACKBONE_LR_SCALE=${EST_BACKBONE_LR_SCALE:-0.2}
EST_MICRO_BATCH=${EST_MICRO_BATCH:-8}
EST_PREDICT_BATCH=${EST_PREDICT_BATCH:-16}
EST_MAX_LENGTH=${EST_MAX_LENGTH:-512}
W_DISTILL=${W_DISTILL:-0.5}
W_RANKING=${W_RANKING:-3.0}
RANKING_THRESHOLD=${RANKING_THRESHOLD:-0.05}
RANKING_MARGIN=${RANKING_MARGIN:-0.5}
WARMUP_STEPS=${WARMUP_STEPS:-100}
WINDOW=${WINDOW:-"[0.15,0.85]"}
EXPLORE_RATE=${EXPLORE_RATE:-0.0}
EST_DTYPE=${EST_DTYPE:-float32}
# The paper's estimator, where depo_trainer.yaml's measured defaults differ (docs/estimator.md):
# ours are EST_LR=1e-3 EST_UPDATES_PER_STEP=2 EST_CALIBRATION=affine.
EST_UPDATES_PER_STEP=${EST_UPDATES_PER_STEP:-1}
EST_REPLAY_STEPS=${EST_REPLAY_STEPS:-1}
EST_CALIBRATION=${EST_CALIBRATION:-none}

# ---- policy optimisation (authors' 7B launcher) ----------------------------------------------
TRAIN_BATCH=${TRAIN_BATCH:-128}
N=${N:-8}
MINI_BATCH=${MINI_BATCH:-64}
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_RESPONSE=${MAX_RESPONSE:-10240}
LR=${LR:-1e-6}
LR_WARMUP_STEPS=${LR_WARMUP_STEPS:-10}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
CLIP_LOW=${CLIP_LOW:-0.2}
CLIP_HIGH=${CLIP_HIGH:-0.28}
LOSS_AGG=${LOSS_AGG:-token-mean}
OVERLONG_BUFFER=${OVERLONG_BUFFER:-4096}
OVERLONG_PENALTY=${OVERLONG_PENALTY:-1.0}
TEMPERATURE=${TEMPERATURE:-1.0}
TOTAL_STEPS=${TOTAL_STEPS:-1000}
# Validation during training is a progress signal, kept cheap: one sample per prompt on the five
# sets (2,805 prompts) every 100 steps is 11 x 2,805 = 30,855 responses, 3% of training's
# 1,000 x 128 x 8 (generation only, no actor update). Avg@32 every 50 steps was 1.88 M responses,
# more than training itself, and filled 91% of TransferQueue. The paper's Avg@32 is measured on the
# saved checkpoints afterwards: python -m recipe.depo.evaluate (docs/gpu.md).
VAL_N=${VAL_N:-1}
TEST_FREQ=${TEST_FREQ:-100}
SAVE_FREQ=${SAVE_FREQ:-50}
# Checkpoints kept (verl deletes older actor states; DEPO's depo/ folder goes with them). A 7B one
# is ~91 GB (fp32 weights + Adam); 2 = the newest for resume plus one in case it is damaged.
MAX_CKPT_TO_KEEP=${MAX_CKPT_TO_KEEP:-2}
# Dual-clip bound for negative advantages: verl-recipe's DAPO launchers use 10.0 (verl's default is
# 3.0); neither the paper nor the authors' launcher sets it, so we follow the DAPO recipe DEPO builds on.
CLIP_RATIO_C=${CLIP_RATIO_C:-10.0}

# ---- cluster ---------------------------------------------------------------------------------
NNODES=${NNODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TP=${TP:-2}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.8}      # headroom for the colocated estimator on GPU 0
ACTOR_TOKENS_PER_GPU=${ACTOR_TOKENS_PER_GPU:-$(( (MAX_PROMPT + MAX_RESPONSE) * 2 ))}
INFER_TOKENS_PER_GPU=${INFER_TOKENS_PER_GPU:-$(( (MAX_PROMPT + MAX_RESPONSE) * 3 ))}
PARAM_OFFLOAD=${PARAM_OFFLOAD:-false}
OPTIM_OFFLOAD=${OPTIM_OFFLOAD:-false}
# FSDP2: what every CPU run of these launchers exercises (FSDP1 needs an accelerator to start), and
# verl's recommended strategy; no reason found for FSDP1 at this scale.
STRATEGY=${STRATEGY:-fsdp2}
# Head-node variables every Ray worker needs, forwarded through Ray's runtime environment (verl
# forwards none of these; workers see the environment `ray start` had on their node). Secrets
# (WANDB_API_KEY, HF_TOKEN) are not forwarded: they would be written into config.yaml; set them
# on every node before `ray start`, or `wandb login` there. The cluster check verifies both.
FORWARD_ENV=${FORWARD_ENV:-"HF_HOME HF_HUB_CACHE HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_ENDPOINT WANDB_MODE WANDB_ENTITY WANDB_BASE_URL WANDB_DIR NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME NCCL_IB_HCA"}
# python -m recipe.depo.cluster_check runs first, on every node, with the same overrides
# (docs/gpu.md); false skips it. CLUSTER_CHECK_ARGS: its own options (--device cpu on CPU).
CLUSTER_CHECK=${CLUSTER_CHECK:-true}
CLUSTER_CHECK_ARGS=${CLUSTER_CHECK_ARGS:-}
PYTHON=${PYTHON:-python3}
# ----------------------------------------------------------------------------------------------

ARGS=(
  hydra.run.dir="$RUN_DIR"
  hydra.output_subdir=.
  ++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="$RUN_DIR/metrics.jsonl"
  depo.enable="$DEPO"
  depo.filter.enable="$FILTER"
  depo.filter.warmup_steps="$WARMUP_STEPS"
  depo.filter.window="$WINDOW"
  depo.filter.explore_rate="$EXPLORE_RATE"
  depo.advantage_filter.mask_zero_adv_groups="$MASK_ZERO_ADV"
  depo.estimator.backbone="$EST_BACKBONE"
  depo.estimator.placement="$EST_PLACEMENT"
  depo.estimator.lr="$EST_LR"
  depo.estimator.backbone_lr_scale="$EST_BACKBONE_LR_SCALE"
  depo.estimator.micro_batch_size="$EST_MICRO_BATCH"
  depo.estimator.predict_batch_size="$EST_PREDICT_BATCH"
  depo.estimator.max_length="$EST_MAX_LENGTH"
  depo.estimator.w_distill="$W_DISTILL"
  depo.estimator.w_ranking="$W_RANKING"
  depo.estimator.ranking_threshold="$RANKING_THRESHOLD"
  depo.estimator.ranking_margin="$RANKING_MARGIN"
  depo.estimator.dtype="$EST_DTYPE"
  depo.estimator.updates_per_step="$EST_UPDATES_PER_STEP"
  depo.estimator.replay_steps="$EST_REPLAY_STEPS"
  depo.estimator.calibration="$EST_CALIBRATION"
  algorithm.adv_estimator="$ADV_ESTIMATOR"
  algorithm.use_kl_in_reward=false
  algorithm.filter_groups.enable="$DYNAMIC_SAMPLING"
  algorithm.filter_groups.metric=acc
  data.train_files="$TRAIN_FILE"
  data.val_files="$VAL_FILES"
  data.train_batch_size="$TRAIN_BATCH"
  data.max_prompt_length="$MAX_PROMPT"
  data.max_response_length="$MAX_RESPONSE"
  data.filter_overlong_prompts=true
  data.truncation=left
  actor_rollout_ref.model.path="$MODEL"
  actor_rollout_ref.model.use_remove_padding=true
  actor_rollout_ref.model.enable_gradient_checkpointing=true
  actor_rollout_ref.actor.optim.lr="$LR"
  actor_rollout_ref.actor.optim.lr_warmup_steps="$LR_WARMUP_STEPS"
  actor_rollout_ref.actor.optim.weight_decay="$WEIGHT_DECAY"
  actor_rollout_ref.actor.ppo_mini_batch_size="$MINI_BATCH"
  actor_rollout_ref.actor.use_dynamic_bsz=true
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$ACTOR_TOKENS_PER_GPU"
  actor_rollout_ref.actor.loss_agg_mode="$LOSS_AGG"
  actor_rollout_ref.actor.clip_ratio_low="$CLIP_LOW"
  actor_rollout_ref.actor.clip_ratio_high="$CLIP_HIGH"
  actor_rollout_ref.actor.clip_ratio_c="$CLIP_RATIO_C"
  actor_rollout_ref.actor.strategy="$STRATEGY"
  actor_rollout_ref.actor.fsdp_config.strategy="$STRATEGY"
  actor_rollout_ref.ref.strategy="$STRATEGY"
  critic.strategy="$STRATEGY"
  actor_rollout_ref.actor.use_kl_loss=false
  actor_rollout_ref.actor.kl_loss_coef=0.0
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.fsdp_config.param_offload="$PARAM_OFFLOAD"
  actor_rollout_ref.actor.fsdp_config.optimizer_offload="$OPTIM_OFFLOAD"
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n="$N"
  actor_rollout_ref.rollout.temperature="$TEMPERATURE"
  actor_rollout_ref.rollout.tensor_model_parallel_size="$TP"
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM_UTIL"
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$INFER_TOKENS_PER_GPU"
  actor_rollout_ref.rollout.max_num_batched_tokens="$(( MAX_PROMPT + MAX_RESPONSE ))"
  actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
  actor_rollout_ref.rollout.val_kwargs.do_sample=true
  actor_rollout_ref.rollout.val_kwargs.temperature="$TEMPERATURE"
  reward.custom_reward_function.path=pkg://recipe.depo.reward
  reward.custom_reward_function.name=compute_score
  reward.reward_manager.name=dapo
  +reward.reward_kwargs.max_resp_len="$MAX_RESPONSE"
  +reward.reward_kwargs.overlong_buffer_cfg.enable=true
  +reward.reward_kwargs.overlong_buffer_cfg.len="$OVERLONG_BUFFER"
  +reward.reward_kwargs.overlong_buffer_cfg.penalty_factor="$OVERLONG_PENALTY"
  +reward.reward_kwargs.overlong_buffer_cfg.log=false
  trainer.logger="$LOGGERS"
  trainer.project_name="$PROJECT"
  trainer.experiment_name="$EXPERIMENT"
  trainer.nnodes="$NNODES"
  trainer.n_gpus_per_node="$GPUS_PER_NODE"
  trainer.total_training_steps="$TOTAL_STEPS"
  trainer.total_epochs=100
  trainer.val_before_train=true
  trainer.test_freq="$TEST_FREQ"
  trainer.save_freq="$SAVE_FREQ"
  trainer.max_actor_ckpt_to_keep="$MAX_CKPT_TO_KEEP"
  trainer.resume_mode=auto
  trainer.default_local_dir="$CKPT_DIR"
)
case "$TRAINER_MODE" in
  sync) ;;
  colocate_async)
    ARGS+=(
      trainer.v1.trainer_mode=colocate_async
      trainer.v1.colocate_async.num_warmup_batches="$ASYNC_WARMUP_BATCHES"
      trainer.v1.sampler.max_off_policy_threshold="$MAX_OFF_POLICY"
    ) ;;
  separate_async)
    ARGS+=(
      trainer.v1.trainer_mode=separate_async
      trainer.v1.separate_async.num_warmup_batches="$ASYNC_WARMUP_BATCHES"
      trainer.v1.separate_async.parameter_sync_step="${PARAM_SYNC_STEP:-$(( TRAIN_BATCH / MINI_BATCH ))}"
      trainer.v1.sampler.max_off_policy_threshold="$MAX_OFF_POLICY"
      actor_rollout_ref.rollout.nnodes="$ROLLOUT_NNODES"
      actor_rollout_ref.rollout.n_gpus_per_node="$ROLLOUT_GPUS_PER_NODE"
      actor_rollout_ref.rollout.checkpoint_engine.backend="$CKPT_ENGINE"
    ) ;;
  *) echo "TRAINER_MODE must be 'sync', 'colocate_async' or 'separate_async', got '$TRAINER_MODE'" >&2; exit 2 ;;
esac
for name in $FORWARD_ENV; do
  if [[ -n "${!name:-}" ]]; then
    value=${!name//\\/\\\\}
    ARGS+=("++ray_kwargs.ray_init.runtime_env.env_vars.$name='${value//\'/\\\'}'")  # quoted: Ray wants strings
  fi
done

if [[ "$CLUSTER_CHECK" == true ]]; then
  # shellcheck disable=SC2086  # CLUSTER_CHECK_ARGS is a list of options
  $PYTHON -m recipe.depo.cluster_check $CLUSTER_CHECK_ARGS "${ARGS[@]}" "$@"
fi

mkdir -p "$RUN_DIR"
# verl's file logger truncates its file when a run starts: keep a resumed run's earlier steps as
# metrics.<time>.jsonl (the report reads the parts in order)
if [[ -s "$RUN_DIR/metrics.jsonl" ]]; then
  mv "$RUN_DIR/metrics.jsonl" "$RUN_DIR/metrics.$(date +%s).jsonl"
fi

$PYTHON -m recipe.depo.main_depo "${ARGS[@]}" "$@"
