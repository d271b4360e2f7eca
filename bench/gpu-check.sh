#!/usr/bin/env bash
# GPU check of dimoo's WebGPU path on a Linux x86-64 machine that has a GPU
# driver and nothing else (no Node.js, no registry): WebGPU-vs-CPU parity on
# the golden cases, then the GPU bench rows (1b and 8B shapes).
#
# Needs the bundle from `npm run gpu-bundle` (.gpu-bundle/dimoo-gpu.tar.xz,
# git-ignored: carry it). Run from the repository root:
#
#   bash bench/gpu-check.sh [gpu-check.js options, e.g. --rows 1b:fp32 --budget-s 300]
#
# Environment: OUT (results folder; default ./gpu-check-out), DIMOO_GPU_BUNDLE
# (archive path), DIMOO_GPU_WORK (unpack folder; default /tmp/dimoo-gpu),
# DIMOO_GPU_BUDGET_S (seconds for gpu-check.js; default 300; the whole script
# is killed 60 s after that), DIMOO_GPU_BUNDLED_VULKAN=1 (use the bundled
# Vulkan loader even if the system has one), VK_DRIVER_FILES (a Vulkan ICD; NVIDIA's is found
# on its own at /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json).
set -u -o pipefail

BUNDLE=${DIMOO_GPU_BUNDLE:-.gpu-bundle/dimoo-gpu.tar.xz}
WORK=${DIMOO_GPU_WORK:-/tmp/dimoo-gpu}
RESULTS=${OUT:-$PWD/gpu-check-out}
BUDGET=${DIMOO_GPU_BUDGET_S:-300}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu-check.log"
say() { echo "gpu-check.sh: $*" | tee -a "$LOG"; }
: >"$LOG"

if [ ! -f "$BUNDLE" ]; then
  say "bundle $BUNDLE not found: run 'npm run gpu-bundle' and carry .gpu-bundle"
  exit 2
fi

# 1. Unpack (tar with xz, else Python's tarfile).
rm -rf "$WORK" && mkdir -p "$WORK"
t0=$(date +%s)
if ! tar -xJf "$BUNDLE" -C "$WORK" 2>>"$LOG"; then
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE" "$WORK" || {
    say "could not unpack $BUNDLE (needs tar+xz or python3)"
    exit 2
  }
fi
say "unpacked in $(($(date +%s) - t0)) s: $(head -1 "$WORK/MANIFEST.txt")"
NODE="$WORK/node/bin/node"

# 2. Vulkan: the system loader if there is one, else the bundled loader + GLVND.
if [ "${DIMOO_GPU_BUNDLED_VULKAN:-0}" = 1 ] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
  export LD_LIBRARY_PATH="$WORK/vulkan/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "no system libvulkan.so.1: using the bundled loader ($(ls "$WORK/vulkan/debs" | tr '\n' ' '))"
fi
# NVIDIA's driver libraries (libGLX_nvidia.so.0 implements its Vulkan ICD).
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${VK_ICD_FILENAMES:-}" ] && [ -f "$NV_ICD" ]; then
  export VK_DRIVER_FILES="$NV_ICD"
fi
say "VK_DRIVER_FILES=${VK_DRIVER_FILES:-<loader default>} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$LOG"
fi
"$NODE" --version >/dev/null 2>&1 || { say "the bundled node does not run here (glibc too old?)"; exit 2; }

# 3. The check itself, from app/ (the golden data is at app/../shared/golden).
cd "$WORK/app" || exit 2
export DIMOO_BENCH_CACHE=${DIMOO_BENCH_CACHE:-$WORK/cache}
timeout -k 10 $((BUDGET + 60)) "$NODE" dist/bench/gpu-check.js --budget-s "$BUDGET" --out "$RESULTS" "$@" 2>&1 |
  grep -v -e 'artificially reduced from' -e 'VerifyEachNodeIsAssignedToAnEp' | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "exit $rc; results in $RESULTS (gpu-check.json, gpu-check.log)"
exit "$rc"
