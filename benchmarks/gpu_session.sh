#!/usr/bin/env bash
# Everything trainctl checks on a lent NVIDIA GPU machine, in one go, logs into $OUT.
#
# That machine has Python with CuPy, PyTorch and the rest of trainctl's dependencies, but no
# network: trainctl is installed without dependencies, its build backend (hatchling) from
# wheels carried in .whl/ (see docs/gpu.md). Each part has its own time limit, so one part
# that hangs cannot eat the others' time; the summary at the end says what each part did.
#
#   OUT=gpu-logs bash benchmarks/gpu_session.sh            # everything
#   PARTS="tests bench" bash benchmarks/gpu_session.sh     # some parts
#
# Parts: env install devices tests configs mixed resume compare bench. `DEVICE=cpu` runs the same
# parts on the CPU (the gpu tests skip): that is how the script itself is tried out before
# GPU time is spent on it.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-logs}"
PARTS="${PARTS:-env install devices tests configs mixed resume compare bench}"
BENCH_ARGS="${BENCH_ARGS:-}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}" # DEVICE=cpu tries the script out on a machine without a GPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d)"
LOG="$OUT/session.log"
: >"$LOG"
declare -a SUMMARY=()

say() { echo "$*" | tee -a "$LOG"; }

# part NAME SECONDS COMMAND...: run COMMAND under a time limit, output appended to the log.
part() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    say "=== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "=== $name: exit $rc after $((SECONDS - start))s"
    SUMMARY+=("$name: exit $rc, $((SECONDS - start))s")
}

wanted() { [[ " $PARTS " == *" $1 "* ]]; }

env_report() {
    nvidia-smi || true
    "$PYTHON" --version
    "$PYTHON" -m pip list 2>/dev/null | grep -i -E '^(cupy|numpy|numba|torch|safetensors|typer|rich|pyyaml|pytest|hypothesis|tensorboard|ml.dtypes) '
    nproc
}

install() {
    if ! "$PYTHON" -c "import hatchling" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl || return 1
    fi
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    trainctl --version
}

gpu_tests() {
    local parallel=()
    "$PYTHON" -c "import xdist" 2>/dev/null && parallel=(-n 4)
    "$PYTHON" -m pytest -m gpu -p no:cacheprovider -q -rfEs --tb=short --durations=15 \
        --junitxml="$OUT/gpu-tests.xml" "${parallel[@]}" tests
}

# Every example config, briefly, on cuda in both modes; the downloadable sets get stand-ins.
train_configs() {
    "$PYTHON" benchmarks/stand_in_data.py "$WORK/data" || return 1
    local failed=0 config name mode data
    for config in configs/*.yaml; do
        name=$(basename "$config" .yaml)
        data=()
        case $name in
        mnist_*) data=(--set "data.path=$WORK/data/mnist") ;;
        fashion_mnist_*) data=(--set "data.path=$WORK/data/fashion_mnist") ;;
        cifar10_*) data=(--set "data.path=$WORK/data/cifar10") ;;
        esac
        for mode in eager graph; do
            if trainctl train "$config" --set device=$DEVICE --set "mode=$mode" \
                --set train.max_steps=30 "${data[@]}" --runs-root "$WORK/runs" \
                --name "$name-$mode" --quiet; then
                echo "config $name $mode: ok"
            else
                echo "config $name $mode: FAILED"
                failed=1
            fi
        done
    done
    return $failed
}

# Mixed precision on the GPU: the quickstart and the digits CNN in both modes, to the end.
train_mixed() {
    local failed=0 config mode
    for config in configs/digits_mlp.yaml configs/digits_cnn.yaml; do
        for mode in eager graph; do
            trainctl train "$config" --set device=$DEVICE --set "mode=$mode" \
                --set dtype=mixed_float16 --runs-root "$WORK/mixed" --quiet || failed=1
        done
        trainctl train "$config" --set device=$DEVICE --set mode=graph \
            --runs-root "$WORK/mixed" --quiet || failed=1
    done
    return $failed
}

# A run checkpointed on the GPU goes on on the CPU, and one from the CPU goes on on the GPU.
resume_across_devices() {
    local config=configs/digits_mlp.yaml
    trainctl train $config --set device=$DEVICE --set mode=graph --set train.max_steps=40 \
        --run-dir "$WORK/gpu-first" --quiet || return 1
    trainctl train $config --resume "$WORK/gpu-first" --set device=cpu \
        --set train.max_steps=80 --force --quiet || return 1
    trainctl train $config --set device=cpu --set train.max_steps=40 \
        --run-dir "$WORK/cpu-first" --quiet || return 1
    trainctl train $config --resume "$WORK/cpu-first" --set device=$DEVICE \
        --set mode=graph --set train.max_steps=80 --force --quiet || return 1
    trainctl eval "$WORK/gpu-first" && trainctl eval "$WORK/cpu-first"
}

compare_on_gpu() {
    trainctl compare configs/digits_mlp.yaml --set device=$DEVICE --steps 200 \
        --runs-root "$WORK/compare" &&
        trainctl compare configs/digits_cnn.yaml --set device=$DEVICE --steps 100 \
            --runs-root "$WORK/compare"
}

export OUT LOG WORK PYTHON DEVICE
export -f say env_report install gpu_tests train_configs train_mixed resume_across_devices \
    compare_on_gpu

wanted env && part env 30 env_report
wanted install && part install 90 install
if ! command -v trainctl >/dev/null; then # no install: run the checkout as it is
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexec %s -m trainctl "$@"\n' "$PYTHON" >"$WORK/bin/trainctl"
    chmod +x "$WORK/bin/trainctl"
    export PATH="$WORK/bin:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    say "trainctl not installed: running it from the checkout"
fi
wanted devices && part devices 30 trainctl devices
wanted tests && part tests 180 gpu_tests
wanted configs && part configs 180 train_configs
wanted mixed && part mixed 120 train_mixed
wanted resume && part resume 90 resume_across_devices
wanted compare && part compare 90 compare_on_gpu
# shellcheck disable=SC2086
wanted bench && part bench 240 "$PYTHON" benchmarks/gpu_step.py --device "$DEVICE" \
    --json "$OUT/bench.json" $BENCH_ARGS

say "=== summary"
for line in "${SUMMARY[@]}"; do say "$line"; done
rm -rf "$WORK"
