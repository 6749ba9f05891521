"""The sweep driver: Tune trials that each run a Ray Train job, and their results on disk."""

import os

# Ray reads these when it starts processes; they keep a CPU sweep's console readable.
RAY_ENV = {
    # Train's state actor polls the dashboard's State API; quiet when the dashboard is off.
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    # One "PreemptionWatcher" error line per Train run otherwise.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Workers' report() waits for the controller's poll; 2 s default slows short trials.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "TOKENIZERS_PARALLELISM": "false",
    # Per-file progress bars of datasets/transformers drown didray's own stage lines.
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # The classic reporter: a periodic trial table with the axes and chosen metrics.
    "RAY_AIR_NEW_OUTPUT": "0",
    # didray's results callback rewrites Parquet; on 2 busy cores that can pass Tune's
    # 0.5 s "performance bottleneck" warning threshold without slowing anything real.
    "TUNE_WARN_THRESHOLD_S": "2",
    # Tune warns (8 times in a short sweep) when saving its experiment state takes over 5 s,
    # which on 2 busy cores it does while trials start; didray's own progress says more.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # A trial whose Train workers cannot start yet (another trial's workers or evaluation
    # actor hold the CPUs; Tune restarts every errored trial of a resumed sweep at once) waits
    # for them instead of failing after Train's default 60 s.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3600",
}

# Ray reads them when it is imported and when it starts processes, so they are set before any
# didray.sweep module imports ray; ray.init also passes them to every worker's runtime_env.
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)
