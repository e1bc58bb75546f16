#!/usr/bin/env bash
# Download, into bench/wheels/ (gitignored), the wheels that the GPU machines' image lacks, for
# its Python (CPython 3.12, manylinux x86_64), so that bench/gpu_check.sh can install them
# offline there (the GPU machine reaches no network). Run here, where pip reaches PyPI:
#
#     bench/fetch_wheels.sh            # then carry bench/wheels with the device tool's `run`
#
# --no-deps everywhere, with every missing dependency named below: the image already has torch,
# torchvision, triton and the nvidia-* wheels (hundreds of MiB that must not travel: the carry
# limit is 64 MiB in all), numpy, scipy, six, requests, tqdm, sortedcontainers and py-cpuinfo.
# The versions are the ones bench/results/cpu.csv was measured with (bench/README.md).
# hypothesis and pytest-benchmark are in the image too; their wheels are a fallback that
# gpu_check.sh installs only where a distribution is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${WHEELS_DIR:-$ROOT/bench/wheels}
PY=${PYTHON:-python3}
MAX_MIB=40
TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

# name==version, one per line: the packages and their dependencies missing from the image.
PACKAGES=(
    PyWavelets==1.9.0          # wavefuse's filter banks and the transforms' oracle
    pytorch_wavelets==1.3.0    # peer; needs pkg_resources -> setuptools<81
    setuptools==80.10.2        # pkg_resources for pytorch_wavelets (installed only if missing)
    ptwt==1.0.1                # peer (needs PyWavelets)
    torchwavelets==0.1.1       # peer (needs PyWavelets)
    torchattacks==3.5.1        # pgd_step's oracle and baseline
    pytest-benchmark==5.3.1    # fallback: the image has a pytest-benchmark
    py-cpuinfo2==10.1.1        # pytest-benchmark 5.3's dependency (only with the wheel above)
    hypothesis==6.170.15       # fallback: the image has a hypothesis
)

mkdir -p "$DEST"
# A second version of a package in the folder would make `pip install --find-links` ambiguous.
rm -f "$DEST"/*.whl
for spec in "${PACKAGES[@]}"; do
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$DEST" "$spec"
    then
        # No wheel for the target: build one here if the project is pure Python.
        echo "no binary wheel for $spec: building one here (must be pure Python)"
        "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "$spec"
    fi
done

# Every wheel must install on CPython 3.12 x86_64: pure, abi3 or cp312 manylinux.
bad=$(ls "$DEST" | grep -v -E -- '-(py3|py2\.py3)-none-any\.whl$|-cp312-.*(manylinux|linux_x86_64).*\.whl$|-abi3-.*manylinux.*\.whl$' || true)
if [ -n "$bad" ]; then
    echo "error: wheels that will not install on the GPU image's CPython 3.12 x86_64:" >&2
    echo "$bad" >&2
    exit 1
fi
ls -la "$DEST"
size_kib=$(du -sk "$DEST" | cut -f1)
echo "bench/wheels: $(ls "$DEST" | wc -l) wheels, $((size_kib / 1024)) MiB ($size_kib KiB)"
if [ "$size_kib" -gt $((MAX_MIB * 1024)) ]; then
    echo "error: more than $MAX_MIB MiB: the device tool carries 64 MiB in all" >&2
    exit 1
fi
