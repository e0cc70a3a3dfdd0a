"""The plain keys of a config file (seed, data.batch_size, train.epochs...) as `Arg`s.

One declaration per key, defaults taken from the schema: `check` checks a file's values
against it and words what was expected, `reference` documents it in the README.
"""

from __future__ import annotations

from trainctl.config.schema import (
    Config,
    DataConfig,
    DebugConfig,
    DistributedConfig,
    EarlyStoppingConfig,
    GraphConfig,
    ScheduleConfig,
    TrainConfig,
)
from trainctl.spec import Arg

TOP_ARGS = {
    "seed": Arg("int", Config.seed, "seed of every random draw", low=0),
    "mode": Arg("str", Config.mode, "how a step runs", choices=("eager", "graph")),
    "device": Arg("str", Config.device, "where it runs", choices=("cpu", "cuda", "auto")),
    "threads": Arg(
        "int_or_auto",
        Config.threads,
        "CPU threads for BLAS; auto: the usable CPUs shared equally among the trainings "
        "running on this machine, re-counted every second",
        low=1,
    ),
    "dtype": Arg(
        "str",
        Config.dtype,
        "parameter dtype; mixed_float16 and mixed_bfloat16 keep float32 weights and compute "
        "in 16 bits where it is safe (Keras's mixed precision)",
        choices=("float32", "float64", "mixed_float16", "mixed_bfloat16"),
    ),
}
DATA_ARGS = {
    "path": Arg(
        "str",
        DataConfig.path,
        "the data set's files; a relative path is read from the config file's folder",
        nullable=True,
    ),
    "download": Arg(
        "bool",
        DataConfig.download,
        "fetch mnist, fashion_mnist or cifar10 into data.path (null: the data cache, "
        "$TRAINCTL_DATA) when missing, as `trainctl data fetch` does",
    ),
    "batch_size": Arg("int", DataConfig.batch_size, "training batch size", low=1),
    "eval_batch_size": Arg(
        "int", DataConfig.eval_batch_size, "null: batch_size", low=1, nullable=True
    ),
    "val_split": Arg(
        "float",
        DataConfig.val_split,
        "fraction of train held out for validation",
        low=0,
        high=1,
        high_open=True,
    ),
    "test_split": Arg(
        "float",
        DataConfig.test_split,
        "fraction held out for test (data sets without one)",
        low=0,
        high=1,
        high_open=True,
    ),
    "shuffle": Arg("bool", DataConfig.shuffle, "reshuffle every epoch"),
    "prefetch": Arg("int", DataConfig.prefetch, "batches prepared ahead", low=0),
}
SCHEDULE_ARGS = {
    "warmup_steps": Arg("int", ScheduleConfig.warmup_steps, "updates of linear warmup", low=0),
    "warmup_start_factor": Arg(
        "float", ScheduleConfig.warmup_start_factor, "warmup starts at this * lr", low=0, high=1
    ),
}
TRAIN_ARGS = {
    "epochs": Arg("int", TrainConfig.epochs, "passes over the training set", low=1, nullable=True),
    "max_steps": Arg(
        "int", TrainConfig.max_steps, "caps the number of updates", low=1, nullable=True
    ),
    "log_every": Arg("int", TrainConfig.log_every, "updates between log lines", low=1),
    "eval_every": Arg("int", TrainConfig.eval_every, "null: every epoch end", low=1, nullable=True),
    "checkpoint_every": Arg(
        "int", TrainConfig.checkpoint_every, "null: every epoch end", low=1, nullable=True
    ),
    "grad_clip": Arg(
        "float", TrainConfig.grad_clip, "global-norm clip", low=0, low_open=True, nullable=True
    ),
    "drop_last": Arg("bool", TrainConfig.drop_last, "skip a last partial batch"),
    "best_metric": Arg("str", TrainConfig.best_metric, "picks the best checkpoint", nullable=True),
}
EARLY_STOPPING_ARGS = {
    "metric": Arg("str", EarlyStoppingConfig.metric, "validation metric watched"),
    "mode": Arg(
        "str",
        EarlyStoppingConfig.mode,
        "min, max, or auto by metric",
        choices=("min", "max", "auto"),
    ),
    "patience": Arg("int", EarlyStoppingConfig.patience, "evaluations without improvement", low=1),
    "min_delta": Arg("float", EarlyStoppingConfig.min_delta, "smallest change that counts", low=0),
}
DEBUG_ARGS = {
    "check_numerics": Arg(
        "bool",
        DebugConfig.check_numerics,
        "check every op's output for NaN/Inf and name the first (slow; like "
        "tf.debugging.check_numerics)",
    ),
}
GRAPH_ARGS = {
    "cuda_graphs": Arg(
        "bool",
        GraphConfig.cuda_graphs,
        "on a GPU, replay each compiled step as one CUDA graph (mode: graph; steps with dropout "
        "or check_numerics run op by op)",
    ),
    "max_traces": Arg(
        "int",
        GraphConfig.max_traces,
        "traces kept per input signature of a model that branches on tensor values (one per "
        "combination of guard outcomes); a step matching none of them runs eagerly",
        low=1,
    ),
}
DISTRIBUTED_ARGS = {
    "bucket_mb": Arg(
        "float",
        DistributedConfig.bucket_mb,
        "largest Allreduce message of the gradient buffer, in MiB (bigger buffers go in buckets)",
        low=0,
        low_open=True,
    ),
    "check_every": Arg(
        "int",
        DistributedConfig.check_every,
        "steps between checksums that the replicas still hold the same weights",
        low=1,
    ),
    "timeout_s": Arg(
        "float",
        DistributedConfig.timeout_s,
        "seconds a rank waits in a collective for the others before the job is aborted, naming "
        "the ranks that never came (a stopped or stuck rank); longer than any checkpoint write",
        low=0,
        low_open=True,
    ),
}
