#!/usr/bin/env bash
# Builds .whl/ (git-ignored): everything scripts/gpu_check.sh installs on a GPU machine whose
# image lacks it, for CPython 3.12 on manylinux x86_64: this project's wheel, the example
# plugin's wheel, and the dependencies that image does not have (pydantic and its parts,
# torch-fidelity, tomli-w). Run it here, where PyPI is reachable; the GPU machine has no network.
#   bash scripts/gpu_wheels.sh            # then: bash scripts/gpu_check.sh (on the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=.whl
rm -rf "$folder"
mkdir -p "$folder"
python3 -m pip wheel --no-deps --quiet -w "$folder" . ./plugins/sagan-extra-attention
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# What the GPU image (docs: its package list) lacks among sagan-cli's dependencies.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$folder" \
    "pydantic>=2.6,<3" pydantic-core annotated-types typing-inspection "torch-fidelity>=0.3" \
    "tomli-w>=1.0"
# pydantic pins one pydantic-core version: keep exactly that one
required=$(unzip -p "$folder"/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')
if [ -n "$required" ]; then
    find "$folder" -name 'pydantic_core-*.whl' ! -name "pydantic_core-${required}-*" -delete
    if ! ls "$folder"/pydantic_core-"${required}"-*.whl >/dev/null 2>&1; then
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp "${platforms[@]}" -d "$folder" "pydantic-core==${required}"
    fi
fi
du -sh "$folder"
ls "$folder"
