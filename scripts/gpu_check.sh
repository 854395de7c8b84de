#!/usr/bin/env bash
# The GPU check: everything the CUDA path must show, in one command, in at most ~8 minutes on
# one H100. Each step runs under its own time limit, so a slow one cannot eat the rest.
#
#   bash scripts/gpu_wheels.sh                      # here, once: builds .whl/ (needs PyPI)
#   bash scripts/gpu_check.sh                       # on the GPU machine (no network needed)
#   bash scripts/gpu_check.sh --device cpu --quick  # the rehearsal (the test suite runs it)
#
# Writes to --out (default: $OUT if set, else results/gpu-check/): log.txt, one CSV per
# measurement (ceilings, pytest, correctness, bench_train, bench_attention, training) and
# report.md, whose last lines are the targets table. Exit code: 0 when every step ran (the
# report says which targets were met), 1 when a step failed or ran out of time, 2 when it
# cannot start (no CUDA for --device cuda, nothing to install from).
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda quick="" out="${OUT:-results/gpu-check}" wheels=.whl
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick="--quick"; shift ;;
        --out) out="$2"; shift 2 ;;
        --wheels) wheels="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown option '$1' (--device cuda|cpu, --quick, --out DIR, --wheels DIR)" >&2; exit 2 ;;
    esac
done
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ -d "$wheels" ]; then
    site=${TMPDIR:-/tmp}/sagan-gpu-check-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl || exit 2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$python" -c "import sagan_cli.cli, pydantic, torch_fidelity, tomli_w" 2>/dev/null; then
    echo "gpu_check.sh: sagan-cli and its dependencies are not importable here and the wheel" \
        "folder '$wheels' does not exist. Build it where PyPI is reachable with" \
        "'bash scripts/gpu_wheels.sh' (it writes .whl/ for CPython 3.12 on manylinux x86_64)," \
        "carry it to this machine with the working tree, and run this script again." >&2
    exit 2
fi
if [ "$device" = cuda ] && ! "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check.sh: --device cuda, but torch sees no CUDA device here. Run it on a GPU" \
        "machine, or rehearse it on this one with --device cpu --quick." >&2
    exit 2
fi

mkdir -p "$out"
log="$out/log.txt"
: > "$log"
failed=0
step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s) $(date -u +%H:%M:%S)" | tee -a "$log"
    local started=$SECONDS
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1
    local code=$?
    if [ $code -eq 0 ]; then
        echo "   $name: done in $((SECONDS - started)) s" | tee -a "$log"
    else
        [ $code -eq 124 ] && why="ran out of its ${limit} s" || why="failed with exit code $code"
        echo "   $name: $why (see $log)" | tee -a "$log"
        failed=1
    fi
}
if [ -n "$quick" ]; then limits=(60 120 120 120 120 60); else limits=(30 90 75 140 110 20); fi  # with environment: 480 s
check=(scripts/gpu_check.py --device "$device" --out "$out" $quick)

step environment 15 bash -c "nvidia-smi || echo 'no nvidia-smi'; $python -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())'"
step ceilings "${limits[0]}" "$python" "${check[0]}" ceilings "${check[@]:1}"
step pytest-gpu "${limits[1]}" "$python" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
    --junitxml="$out/pytest.xml" tests plugins/sagan-extra-attention/tests
"$python" "${check[0]}" junit "${check[@]:1}" >> "$log" 2>&1
step correctness "${limits[2]}" "$python" "${check[0]}" correctness "${check[@]:1}"
step bench "${limits[3]}" "$python" "${check[0]}" bench "${check[@]:1}"
step training "${limits[4]}" "$python" "${check[0]}" training "${check[@]:1}"
step report "${limits[5]}" "$python" "${check[0]}" report "${check[@]:1}"
echo "report: $out/report.md" | tee -a "$log"
exit $failed
