#!/usr/bin/env bash
# One unattended GPU check of wavefuse, for a lent GPU machine (the device tool's `run`; see
# bench/README.md, "GPU runs"). Run from the repository root, with bench/wheels carried
# (bench/fetch_wheels.sh fills it, here, where pip reaches PyPI):
#
#     bench/gpu_check.sh PHASE...   one or more of, in order:
#       setup      install the carried wheels offline, build the extension in place with CUDA for
#                  the visible GPU, python -m wavefuse.info (every other phase runs it first)
#       tests      the full test suite: first the tests marked gpu (-m gpu), then the rest
#       tests_gpu  only the tests marked gpu (for a short lease: the rest is CI's, on a CPU)
#       bench_dwt  bench_gpu.py --only dwt (forward, adjoint, fwd+bwd)            then plot.py
#       bench_ops  bench_gpu.py --only hf_penalty, then --only pgd_step, then
#                  --only wavelet_pgd_step                                       then plot.py
#       bench      bench_dwt + bench_ops
#       at_step    bench_at_step.py (PGD-10 AT step, two models, agreement check) then plot.py
#       routes     bench_routes.py: the blind route choices (cascade / pairs / levels of
#                  wavelet_pgd_step's chain, cascade / levels of hf_penalty) timed side by side
#                  (results/gpu-<slug>-routes.csv)
#       sanitize   compute-sanitizer memcheck + racecheck of the CUDA kernels and memcheck of the
#                  Triton kernels, driven by bench/sanitize.py (full reports: gpu-<slug>-sanitize-*.txt)
#       all        tests bench at_step (about 25 min on one H100)
#     A prebuilt extension (built here for the image's torch, see bench/README.md, "Prebuilt
#     extension") is used when carried with its stamp: wavefuse/_C.abi3.so, build/.gpu_check_stamp.
#     The repository root is put on PYTHONPATH, so nothing needs an editable install to import.
#     bench/gpu_check.sh unpack DIR  (here, not on the GPU) merge what a call returned (DIR: the
#                  device tool's files_at) into bench/results/: CSV rows by case, logs appended
#
# The device tool allows 10 min a command, so run the phases as separate commands (see
# bench/README.md): setup skips what is already done on a machine kept warm (wheels installed, an
# extension built from the same sources), and the results of earlier commands on the same machine
# are kept in /tmp/wavefuse-gpu-results and merged back in, so the CSV a command returns holds
# every phase run on that machine so far. Each step runs under `timeout` inside the command's
# budget (GPU_CHECK_BUDGET_S: default 570 s, 1500 s with `all`); a failing step is logged and the
# next one runs; the exit status is 1 if any step failed or timed out.
#
# Writes bench/results/gpu-<device-slug>.csv (+ -<family>-notes.md, -at_step-notes.md,
# -at_step.json, -roofline.png, -speedup.png) and appends to bench/results/gpu-<device-slug>.log.
# With $OUT set (the device tool returns what is under it): the CSV, this command's log
# gpu-<slug>.<phases>.log and gpu-<slug>-results.tar.gz (every gpu-<slug>* result but the log).
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S, GPU_CHECK_TEST_WORKERS (pytest-xdist
# workers for the tests, default 8, 0 = none), GPU_CHECK_TESTS_GPU_S and GPU_CHECK_AT_STEP_S (the
# limits of the steps tests:gpu and bench_at_step, default 300 and 480: to fit a short lease),
# GPU_CHECK_SKIP_BUILD=1 (use the extension as it is: to test this script on a machine where
# nothing may be built).
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
WHEELS=$ROOT/bench/wheels
RESULTS=$ROOT/bench/results
STATE=/tmp/wavefuse-gpu-results  # survives between commands while the machine stays warm
export PYTHONUNBUFFERED=1
# wavefuse imports from the checkout (bench/*.py run from bench/), installed or not
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
USAGE="usage: bench/gpu_check.sh setup|tests|tests_gpu|bench_dwt|bench_ops|bench|at_step|routes|sanitize|all ... | unpack DIR"

# ---------------------------------------------------------------------------------------- unpack

if [ "${1:-}" = unpack ]; then
    src=${2:?"$USAGE"}
    shopt -s nullglob
    tmp=$(mktemp -d)
    for tarball in "$src"/gpu-*-results.tar.gz; do
        tar -xzf "$tarball" -C "$tmp" || exit 1
        for f in "$tmp"/*; do
            name=$(basename "$f")
            if [[ $name == gpu-*.csv && $name != *-routes.csv ]]; then  # rows by case: the returned cases replace ours
                "$PY" "$ROOT/bench/_gpu.py" merge "$f" "$RESULTS/$name" || exit 1
            else
                cp "$f" "$RESULTS/$name"
            fi
            echo "unpacked $name"
        done
        rm -f "$tmp"/*
    done
    for log in "$src"/gpu-*.*.log; do  # gpu-<slug>.<phases>.log -> gpu-<slug>.log
        slug=$(basename "$log" | cut -d. -f1 | sed 's/^gpu-//')
        cat "$log" >>"$RESULTS/gpu-$slug.log" && echo "appended $(basename "$log") to gpu-$slug.log"
    done
    rmdir "$tmp"
    exit 0
fi

# ---------------------------------------------------------------------------------------- phases

PHASES=("$@")
[ ${#PHASES[@]} -eq 0 ] && PHASES=(all)
for p in "${PHASES[@]}"; do
    case $p in
        setup | tests | tests_gpu | bench_dwt | bench_ops | bench | at_step | routes | sanitize | all | _install_wheels | _build_extension) ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
done
[[ " ${PHASES[*]} " == *" all "* ]] && default_budget=1500 || default_budget=570
BUDGET=${GPU_CHECK_BUDGET_S:-$default_budget}
START=$(date +%s)
FAILED=()

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LIMIT_S CMD...: run CMD under timeout (LIMIT_S, or what is left of the budget less a
# margin for the copy to $OUT), log its status, never stop the script.
step() {
    local name=$1 limit=$2 left rc t0
    shift 2
    left=$(($(remaining) - 25))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "== $name: SKIPPED, the budget of ${BUDGET}s is spent"
        FAILED+=("$name(no time)")
        return 1
    fi
    echo "== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    t0=$(date +%s)
    timeout --signal=TERM --kill-after=15 "$limit" "$@"
    rc=$?
    echo "== $name: rc=$rc after $(($(date +%s) - t0))s"
    [ $rc -eq 124 ] && echo "== $name: TIMED OUT"
    [ $rc -ne 0 ] && FAILED+=("$name(rc=$rc)")
    declare -F sync_out >/dev/null && sync_out
    return $rc
}

# ---------------------------------------------------------------------------------------- setup

install_wheels() {
    # The image's own packages win: a carried wheel is installed only where its distribution is
    # missing (pytorch_wavelets, ptwt, torchwavelets, torchattacks, PyWavelets: absent from the
    # image; hypothesis, pytest-benchmark: carried as a fallback). setuptools only if
    # pkg_resources (pytorch_wavelets imports it) is missing; py-cpuinfo2 only where no module
    # cpuinfo is (pytest-benchmark's dependency).
    local whl dist v ok=0 bad=0
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "no wheels in $WHEELS: carry bench/wheels (bench/fetch_wheels.sh) for the peers"
        return 1
    fi
    for whl in "${wheels[@]}"; do
        dist=$(basename "$whl" | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | tr '_.' '--')
        case $dist in
            setuptools)
                if "$PY" -c "import pkg_resources" 2>/dev/null; then
                    echo "skip $dist: pkg_resources is importable"; continue
                fi ;;
            py-cpuinfo2)
                if "$PY" -c "import cpuinfo" 2>/dev/null; then
                    echo "skip $dist: a module cpuinfo is there"; continue
                fi ;;
            *)
                if v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist" 2>/dev/null); then
                    echo "skip $dist: the image has $v"; continue
                fi ;;
        esac
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --find-links "$WHEELS" "$whl"; then
            echo "installed $(basename "$whl")"; ok=$((ok + 1))
        else
            echo "FAILED to install $(basename "$whl") (pip's reason above); going on without it"
            bad=$((bad + 1))
        fi
    done
    echo "wheels: $ok installed, $bad failed"
    [ $bad -eq 0 ]
}

sources_hash() {
    cat setup.py pyproject.toml $(find csrc kernels -type f -not -name '*.pyc' | LC_ALL=C sort) 2>/dev/null | sha256sum | cut -c1-16
}

build_extension() {
    local stamp=build/.gpu_check_stamp arch hash
    if [ -n "${GPU_CHECK_SKIP_BUILD:-}" ]; then
        echo "GPU_CHECK_SKIP_BUILD is set: the extension is used as it is"
        return 0
    fi
    hash=$(sources_hash)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] &&
        "$PY" -c "import sys, wavefuse.backends as b; sys.exit(0 if b.built_with_cuda() else 1)" 2>/dev/null; then
        echo "extension already built with CUDA from these sources: skipped"
        return 0
    fi
    arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    echo "building for TORCH_CUDA_ARCH_LIST=$arch, MAX_JOBS=$(nproc)"
    if TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) WAVEFUSE_CUDA=1 \
        "$PY" -m pip install -e . --no-build-isolation --no-deps; then
        mkdir -p build && echo "$hash" >"$stamp"
        return 0
    fi
    echo "CUDA build FAILED; building without WAVEFUSE_CUDA=1 so that the rest can run"
    TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) "$PY" -m pip install -e . --no-build-isolation --no-deps
    return 1  # the CUDA build failed: the step fails either way
}

case ${PHASES[0]} in  # the internal steps, re-entered by `step` (their output goes to its log)
    _install_wheels) install_wheels; exit ;;
    _build_extension) build_extension; exit ;;
esac

SLUG=$("$PY" "$ROOT/bench/_gpu.py" slug 2>/dev/null || echo unknown)
NAME=$(IFS=-; echo "${PHASES[*]}")  # for file names: letters, digits, '.', '_', '-' only
mkdir -p "$RESULTS" "$STATE"
LOG=$RESULTS/gpu-$SLUG.log
OUTLOG=/dev/null
if [ -n "${OUT:-}" ]; then  # written as it goes: if the tool ends the command, the log is there
    mkdir -p "$OUT"
    OUTLOG=$OUT/gpu-$SLUG.$NAME.log
fi
exec > >(tee -a "$LOG" "$OUTLOG") 2>&1

# sync_out: the results so far into $STATE (kept on a warm machine) and $OUT (returned), after
# every step, so that a command the tool ends early still returns what it measured.
sync_out() {
    local f
    shopt -s nullglob
    for f in "$RESULTS"/gpu-"$SLUG"*; do
        [[ $f == *.log ]] || cp "$f" "$STATE/"
    done
    if [ -n "${OUT:-}" ]; then
        [ -f "$RESULTS/gpu-$SLUG.csv" ] && cp "$RESULTS/gpu-$SLUG.csv" "$OUT/"
        (cd "$RESULTS" && tar -czf "$OUT/gpu-$SLUG-results.tar.gz" --exclude='*.log' gpu-"$SLUG"*) 2>/dev/null || true
    fi
}

restore_state() {
    # Earlier commands on this machine: their rows join this command's CSV.
    local f
    shopt -s nullglob
    for f in "$STATE"/gpu-"$SLUG"*; do
        case $f in
            *-routes.csv) cp "$f" "$RESULTS/" ;;  # one table, rewritten by every routes run
            *.csv) "$PY" bench/_gpu.py merge "$f" "$RESULTS/$(basename "$f")" ;;
            *) [ -e "$RESULTS/$(basename "$f")" ] || cp "$f" "$RESULTS/" ;;
        esac
    done
}

setup() {
    echo "######## gpu_check.sh $NAME on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 || true
    "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__, 'GPU', torch.cuda.get_device_name())" || true
    restore_state
    # timeout runs programs, not shell functions: these two re-enter this script.
    step install_wheels 180 "$0" _install_wheels
    step build 420 "$0" _build_extension
    # `pip install -e .` maps kernels/ to wavefuse.kernels; a carried prebuilt module skips it,
    # and without this link the triton backend is not live (tests skip, benchmarks leave it out)
    if ! "$PY" -c "import wavefuse.kernels" 2>/dev/null; then
        ln -sfn ../kernels wavefuse/kernels && echo "linked wavefuse/kernels -> ../kernels"
    fi
    step info 60 "$PY" -m wavefuse.info
}

run_tests() {  # run_tests [gpu_only]
    local xdist=() per_test=()
    local workers=${GPU_CHECK_TEST_WORKERS:-8}
    if [ "$workers" -gt 0 ] && "$PY" -c "import xdist" 2>/dev/null; then
        xdist=(-n "$workers")
    fi
    "$PY" -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout=300)
    # The tests marked gpu first: nothing else runs them (CI has no GPU), so their results must
    # come back even when the rest of the suite runs out of time. Then everything else, with the
    # build checks of tests/test_build.py asserting what this build must contain.
    step tests:gpu "${GPU_CHECK_TESTS_GPU_S:-300}" env WAVEFUSE_EXPECT_EXT=1 WAVEFUSE_EXPECT_CUDA=1 \
        "$PY" -m pytest -q -p no:cacheprovider -m gpu "${xdist[@]}" "${per_test[@]}"
    [ "${1:-}" = gpu_only ] && return 0
    step tests:rest 540 env WAVEFUSE_EXPECT_EXT=1 WAVEFUSE_EXPECT_CUDA=1 \
        "$PY" -m pytest -q -p no:cacheprovider -m "not gpu" "${xdist[@]}" "${per_test[@]}"
}

# bench_family FAMILY SHARE: bench_gpu.py --only FAMILY with SHARE % of the time left (less a
# reserve for later steps); --budget-s makes it stop starting cases and write what it has
# before `timeout` would end it.
bench_family() {
    local fam=$1 share=$2 avail limit
    avail=$(($(remaining) - 90))
    limit=$((avail * share / 100))
    [ "$limit" -lt 40 ] && limit=40
    step "bench_gpu:$fam" "$((limit + 25))" \
        "$PY" bench/bench_gpu.py --only "$fam" --budget-s "$limit"
}

# sanitize: compute-sanitizer (from PATH, else the toolkit of CUDA_HOME or /usr/local/cuda*) over
# bench/sanitize.py; each tool's full report is kept as a result. A tool finding an error, or a
# result that differs from the reference, exits 1. Not part of `all` (budget): run it on its own.
run_sanitize() {
    local cs
    cs=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/nonexistent}"/bin/compute-sanitizer \
        /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    if [ -z "$cs" ]; then
        echo "== sanitize: compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda*/bin)"
        FAILED+=("sanitize(no compute-sanitizer)")
        return 1
    fi
    local tool backend
    for run in memcheck:cuda racecheck:cuda memcheck:triton; do
        tool=${run%%:*} backend=${run##*:}
        # without the caching allocator, an access past a tensor is past its own allocation
        step "sanitize:$tool:$backend" 240 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 bash -c \
            "'$cs' --tool $tool --error-exitcode 1 --print-limit 50 '$PY' bench/sanitize.py \
             --backend $backend > '$RESULTS/gpu-$SLUG-sanitize-$tool-$backend.txt' 2>&1; rc=\$?; \
             tail -n 15 '$RESULTS/gpu-$SLUG-sanitize-$tool-$backend.txt'; exit \$rc"
    done
}

run_plot() {
    if [ ! -f "$RESULTS/gpu-$SLUG.csv" ]; then
        echo "no $RESULTS/gpu-$SLUG.csv: nothing to plot"
    elif "$PY" -c "import matplotlib" 2>/dev/null; then
        step plot 60 "$PY" bench/plot.py "$RESULTS/gpu-$SLUG.csv"
    else
        echo "matplotlib is missing: no plots (python bench/plot.py makes them from the CSV)"
    fi
}

setup
plots=0
for p in "${PHASES[@]}"; do
    case $p in
        tests) run_tests ;;
        tests_gpu) run_tests gpu_only ;;
        bench_dwt) bench_family dwt 100; plots=1 ;;
        bench_ops)
            bench_family hf_penalty 45; bench_family pgd_step 40
            bench_family wavelet_pgd_step 100; plots=1 ;;
        bench)
            bench_family dwt 60; bench_family hf_penalty 45; bench_family pgd_step 40
            bench_family wavelet_pgd_step 100; plots=1 ;;
        at_step) step bench_at_step "${GPU_CHECK_AT_STEP_S:-480}" "$PY" bench/bench_at_step.py; plots=1 ;;
        routes) step bench_routes 300 "$PY" bench/bench_routes.py ;;
        sanitize) run_sanitize ;;
        all)
            run_tests
            # wavelet_pgd_step's share comes out of the other families': bench_at_step keeps
            # the ~29% of the time left that it had before
            bench_family dwt 35; bench_family hf_penalty 25; bench_family pgd_step 20
            bench_family wavelet_pgd_step 25
            step bench_at_step 480 "$PY" bench/bench_at_step.py; plots=1 ;;
    esac
done
[ $plots -eq 1 ] && run_plot

# ---------------------------------------------------------------------------------------- results
sync_out
echo "######## $NAME done in $(($(date +%s) - START))s; failed steps: ${FAILED[*]:-none}"
[ -n "${OUT:-}" ] && echo "in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
[ ${#FAILED[@]} -eq 0 ]
