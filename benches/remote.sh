#!/usr/bin/env bash
# Object storage: backup, next-day backup, restore and sync of a disk image
# against the local vault, Azurite (Azure Blob) and moto (S3), all on this
# machine, with the CPU each side used.
#
#   benches/remote.sh [V1_IMAGE V2_IMAGE]
#
# Default images: those of benches/e2e.sh (target/bench-images/2048, made
# by examples/mkimages.rs when missing; needs e2fsprogs). Starts its own
# emulators with tests/emulators/start.py (needs azurite-blob from npm and
# moto[server] from PyPI, as .ci/run installs them) and stops them at exit.
#
# Prints a Markdown table per step and backend: wall seconds, MB/s of the
# image's logical size, the CPU seconds diskvault and the emulator used
# (and as % of the wall time: Azurite and moto each serve from one
# thread, so near 100 % means the emulator is the bottleneck; on a small
# machine the two together may also fill every core), and the requests the
# step made.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 2 ]]; then
  V1=$(realpath "$1") V2=$(realpath "$2")
else
  IMAGES=${IMAGES:-target/bench-images/2048}
  cargo run --release --quiet --example mkimages -- "$IMAGES" 2048 --versions 2 > /dev/null
  V1=$(realpath "$IMAGES/disk_v1.img") V2=$(realpath "$IMAGES/disk_v2.img")
fi
cargo build --release --quiet
BIN=$PWD/target/release/diskvault
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dvremote.XXXXXX")
EMU=$WORK/emulators
cleanup() {
  [[ -f $EMU/pids ]] && kill $(cat "$EMU/pids") 2> /dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
eval "$(python3 tests/emulators/start.py "$EMU")"
mapfile -t PIDS < "$EMU/pids"
export DISKVAULT_PASSWORD=bench DISKVAULT_CACHE_DIR=$WORK/cache
export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1
export AZURE_STORAGE_ENDPOINT=${DISKVAULT_TEST_AZURITE:-}/devstoreaccount1
export AZURE_STORAGE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export AWS_ENDPOINT_URL=${DISKVAULT_TEST_S3:-} AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
LOGICAL=$(stat -c %s "$V1")
TICKS=$(getconf CLK_TCK)

cpu_of() { # pid -> CPU ticks used so far (user + system), 0 when gone
  awk '{print $14 + $15}' "/proc/$1/stat" 2> /dev/null || echo 0
}

# step backend emulator-pid command...
row() {
  local step=$1 backend=$2 pid=$3
  shift 3
  local before=0 after=0
  [[ -n $pid ]] && before=$(cpu_of "$pid")
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" > /dev/null 2> "$WORK/err" || {
    cat "$WORK/err" >&2
    exit 1
  }
  [[ -n $pid ]] && after=$(cpu_of "$pid")
  read -r wall user sys < "$WORK/time"
  local requests
  requests=$(grep '^requests to' "$WORK/err" | sed 's/^requests to [^:]*: //' | paste -sd ';' || true)
  awk -v s="$step" -v b="$backend" -v w="$wall" -v u="$user" -v y="$sys" \
    -v e="$((after - before))" -v t="$TICKS" -v n="$LOGICAL" -v r="${requests:--}" -v p="$pid" \
    'BEGIN {
       emu = p == "" ? "-" : sprintf("%.1f s, %.0f %%", e / t, 100 * e / t / w);
       printf "| %s | %s | %.2f | %.0f | %.1f s, %.0f %% | %s | %s |\n", s, b, w, n / w / 1e6, u + y, 100 * (u + y) / w, emu, r
     }'
}

echo "| step | vault | wall s | MB/s | diskvault CPU | emulator CPU | requests |"
echo "|---|---|---:|---:|---:|---:|---|"
LOCAL=$WORK/local
declare -A URL=([local]=$LOCAL)
declare -A PID=([local]=)
if [[ -n ${DISKVAULT_TEST_AZURITE:-} ]]; then URL[azure]=az://diskvault-test/bench; PID[azure]=${PIDS[0]}; fi
if [[ -n ${DISKVAULT_TEST_S3:-} ]]; then URL[s3]=s3://diskvault-test/bench; PID[s3]=${PIDS[-1]}; fi
for b in local azure s3; do
  [[ -n ${URL[$b]:-} ]] || continue
  u=${URL[$b]} p=${PID[$b]}
  "$BIN" init "$u" > /dev/null 2>&1
  row "backup v1" "$b" "$p" "$BIN" backup "$u" "$V1" --disk root
  row "backup v2 (next day)" "$b" "$p" "$BIN" backup "$u" "$V2" --disk root
  rm -rf "$WORK/cache"
  row "restore v2 (cold cache)" "$b" "$p" "$BIN" restore "$u" latest "$WORK/out.img"
  cmp -s "$WORK/out.img" "$V2" || { echo "restore from $b differs from v2" >&2; exit 1; }
  rm -f "$WORK/out.img"
done
for b in azure s3; do
  [[ -n ${URL[$b]:-} ]] || continue
  row "sync local -> $b (2 points)" "$b" "${PID[$b]}" "$BIN" sync "$LOCAL" "${URL[$b]}-replica"
done
