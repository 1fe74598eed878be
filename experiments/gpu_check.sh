#!/usr/bin/env bash
# GPU benchmark check, sized to finish in under 8 minutes on one fresh GPU machine:
#   1. LeNet-300-100 fit throughput on 1 device + the CIFAR VGG-16 train step (bench_training)
#   2. prune of VGG-16 and ResNet-50: cold first call, steady second call (bench_prune, empty
#      compilation cache), then a warm first call (bench_prune again, the cache it filled)
#   3. fresh-process prune, persistent cache cold vs warm (bench_cache)
# Every step runs under `timeout`, capped by what is left of GPU_CHECK_BUDGET_S (default 450 s).
# Output is tee'd to $OUT/gpu_check.md when $OUT is set, else experiments/results/bench/.
#
#   experiments/gpu_check.sh            # full sizes (GPU machine)
#   experiments/gpu_check.sh --quick    # tiny sizes, no installs: a logic test on any CPU
# Env: GPU_CHECK_QUICK=1 (= --quick), GPU_CHECK_INSTALL=0|1, GPU_CHECK_BUDGET_S, PYTHON.
set -u
cd "$(dirname "$0")/.."

QUICK=${GPU_CHECK_QUICK:-0}
[[ "${1:-}" == "--quick" ]] && QUICK=1
INSTALL=${GPU_CHECK_INSTALL:-$((1 - QUICK))}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
PY=${PYTHON:-python}
RESULTS=${OUT:-experiments/results/bench}
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/gpu_check.md") 2>&1
START=$SECONDS
FAILED=()

# step NAME LIMIT_S CMD...: run CMD under a timeout of min(LIMIT_S, budget left - 15 s)
step() {
    local name=$1 limit=$2 left t rc
    shift 2
    left=$((BUDGET_S - (SECONDS - START) - 15))
    t=$((limit < left ? limit : left))
    echo
    echo "## $name"
    echo
    if ((t < 20)); then
        echo "SKIPPED: the time budget (${BUDGET_S} s) is spent"
        FAILED+=("$name (skipped)")
        return
    fi
    echo "\`$*\` (timeout ${t} s, load average $(cut -d' ' -f1 /proc/loadavg))"
    echo
    local t0=$SECONDS
    timeout --kill-after=10 "$t" "$@"
    rc=$?
    echo
    if ((rc == 124 || rc == 137)); then
        echo "TIMED OUT after ${t} s"
        FAILED+=("$name (timeout)")
    elif ((rc != 0)); then
        echo "FAILED with exit status $rc"
        FAILED+=("$name (rc $rc)")
    fi
    echo "(step wall time $((SECONDS - t0)) s)"
}

backend() { timeout 60 "$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null | tail -1; }

echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), quick=$QUICK"
echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
if command -v nvidia-smi >/dev/null; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
else
    echo "- GPU: nvidia-smi not found"
fi
echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

echo
echo "## setup"
echo
if ! "$PY" -c "import jaxprune" 2>/dev/null; then
    if ((INSTALL)); then
        timeout 120 "$PY" -m pip install -q --retries 1 --timeout 15 -e ".[test]" ||
            echo "pip install -e .[test] failed"
    else
        echo "jaxprune is not importable and installs are off (GPU_CHECK_INSTALL=0)"
    fi
fi
if [[ "$(backend)" != gpu ]]; then
    if ((INSTALL)); then
        JAX_VERSION=$("$PY" -c "import jax; print(jax.__version__)" 2>/dev/null)
        for extra in cuda13 cuda12; do
            echo "no GPU backend: trying pip install \"jax[$extra]==$JAX_VERSION\""
            timeout 150 "$PY" -m pip install -q --retries 1 --timeout 15 \
                "jax[$extra]==$JAX_VERSION" &&
                [[ "$(backend)" == gpu ]] && break
        done
    else
        echo "no GPU backend; installs are off (quick mode or GPU_CHECK_INSTALL=0)"
    fi
fi
BACKEND=$(backend)
if [[ "$BACKEND" != gpu ]]; then
    echo "WARNING: JAX runs on '${BACKEND:-nothing}', not on a GPU: the numbers below are" \
         "not GPU numbers (install a CUDA jaxlib, e.g. pip install \"jax[cuda12]\")"
fi
"$PY" -c "import jax; print('- jax', jax.__version__, jax.devices())" 2>&1

DATA=""
for d in "${JAXPRUNE_DATA_DIR:-}" shared/data ../shared/data /work/shared/data; do
    [[ -n "$d" && -d "$d/mnist" ]] && DATA=$(cd "$d" && pwd) && break
done
LENET=(--skip-lenet)
if [[ -n "$DATA" ]]; then
    export JAXPRUNE_DATA_DIR=$DATA
    LENET=()
else
    echo "- MNIST IDX files not found (JAXPRUNE_DATA_DIR, shared/data): LeNet rows skipped"
fi

CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
if ((QUICK)); then
    TRAIN=(--limit-train 2048 --steps 10 --vgg16-cifar-steps 2 --vgg16-batch 8)
    SIZE=(--quick)
else
    TRAIN=(--vgg16-cifar-steps 50 --vgg16-batch 128)
    SIZE=()
fi

step "training: LeNet-300-100 fit (1 device), VGG-16 CIFAR train step" 120 \
    "$PY" experiments/bench_training.py --skip-torch --skip-multiprocess "${LENET[@]}" \
    "${TRAIN[@]}" --out "$RESULTS/gpu_training.md"
step "prune: VGG-16 and ResNet-50, cold first call + steady second call" 150 \
    env JAXPRUNE_CACHE_DIR="$CACHE" "$PY" experiments/bench_prune.py --models vgg16 resnet50 \
    "${SIZE[@]}"
step "prune: VGG-16 and ResNet-50, warm first call (the cache the cold run filled)" 90 \
    env JAXPRUNE_CACHE_DIR="$CACHE" "$PY" experiments/bench_prune.py --models vgg16 resnet50 \
    --no-latency "${SIZE[@]}"
step "cache: fresh-process prune, persistent cache cold vs warm" 120 \
    "$PY" experiments/bench_cache.py --models vgg16 resnet50 "${SIZE[@]}" \
    --out "$RESULTS/gpu_cache.md"

echo
echo "## summary"
echo
echo "backend ${BACKEND:-none}, total wall time $((SECONDS - START)) s (budget ${BUDGET_S} s)"
if ((${#FAILED[@]})); then
    printf -- '- not completed: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all steps completed"
