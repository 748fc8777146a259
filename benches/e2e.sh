#!/usr/bin/env bash
# End-to-end benchmark: diskvault on mkimages.sh disk images, beside
# reference tools measured in the same run on the same data.
#
#   benches/e2e.sh [SIZE_MIB]        (default 2048; images are cached)
#
# Env: IMAGES=dir to keep images (default target/bench-images/SIZE),
#      THREADS=N passed to diskvault (default: all cores).
# Prints a Markdown table: wall time, MB/s of logical image bytes, peak RSS,
# bytes stored by each step. References: zstd -3 -T0 and b3sum on the v1
# image (when installed), a sparse copy of v2 (what a restore must at least
# write), and restic (when installed) doing the same steps.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2048}
IMAGES=${IMAGES:-target/bench-images/$SIZE}
MKIMAGES=${MKIMAGES:-../shared/tools/mkimages.sh}
export DISKVAULT_PASSWORD=bench RESTIC_PASSWORD=bench

cargo build --release --quiet
BIN=$PWD/target/release/diskvault
MAKE_V3=0 bash "$MKIMAGES" "$IMAGES" "$SIZE" > /dev/null
V1=$IMAGES/disk_v1.img
V2=$IMAGES/disk_v2.img
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dvbench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOGICAL=$(stat -c %s "$V1")
THREAD_ARGS=()
[[ -n ${THREADS:-} ]] && THREAD_ARGS=(--threads "$THREADS")

ROWS=()
# measure LABEL STORED_BYTES_CMD -- COMMAND...
measure() {
  local label=$1; shift
  local tv="$WORK/time.txt"
  sync
  /usr/bin/time -v -o "$tv" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tv")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tv")
  LAST_WALL=$wall
  LAST_ROW=$(awk -v l="$label" -v w="$wall" -v r="$rss" -v b="$LOGICAL" \
    'BEGIN{printf "| %s | %.2f | %.0f | %.0f |", l, w, b/w/1e6, r/1024}')
}

repo_bytes() { du -sb "$1" | cut -f1; }

echo "diskvault $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) cores, image $(basename "$V1") $SIZE MiB" >&2

if command -v zstd >/dev/null; then
  measure "zstd -3 -T0 (v1, reference)" zstd -3 -T0 -q -f "$V1" -o "$WORK/v1.zst"
  ROWS+=("$LAST_ROW $(stat -c %s "$WORK/v1.zst") |"); rm -f "$WORK/v1.zst"
fi
measure "cp --sparse=always (v2, reference)" cp --sparse=always "$V2" "$WORK/copy.img"
ROWS+=("$LAST_ROW - |"); rm -f "$WORK/copy.img"
if command -v b3sum >/dev/null; then
  measure "b3sum (v1, reference)" b3sum "$V1"
  ROWS+=("$LAST_ROW - |")
fi

R=$WORK/vault
$BIN init "$R" > /dev/null
measure "diskvault backup v1" $BIN backup "$R" "$V1" --disk root "${THREAD_ARGS[@]}"
b1=$(repo_bytes "$R"); ROWS+=("$LAST_ROW $b1 |")
measure "diskvault backup v2 (next day)" $BIN backup "$R" "$V2" --disk root "${THREAD_ARGS[@]}"
b2=$(repo_bytes "$R"); ROWS+=("$LAST_ROW $((b2 - b1)) |")
measure "diskvault backup v2 again (no change)" $BIN backup "$R" "$V2" --disk root "${THREAD_ARGS[@]}"
b3=$(repo_bytes "$R"); ROWS+=("$LAST_ROW $((b3 - b2)) |")
measure "diskvault restore v2 (verified, sparse)" $BIN restore "$R" latest "$WORK/restored.img" "${THREAD_ARGS[@]}"
ROWS+=("$LAST_ROW - |")
cmp "$WORK/restored.img" "$V2"
rm -f "$WORK/restored.img"

if command -v restic >/dev/null; then
  RR=$WORK/restic
  restic init -q -r "$RR" > /dev/null
  measure "restic backup v1 (--stdin)" sh -c "restic -q -r '$RR' backup --stdin --stdin-filename disk.img < '$V1'"
  r1=$(repo_bytes "$RR"); ROWS+=("$LAST_ROW $r1 |")
  measure "restic backup v2 (--stdin)" sh -c "restic -q -r '$RR' backup --stdin --stdin-filename disk.img < '$V2'"
  r2=$(repo_bytes "$RR"); ROWS+=("$LAST_ROW $((r2 - r1)) |")
  measure "restic backup v2 again" sh -c "restic -q -r '$RR' backup --stdin --stdin-filename disk.img < '$V2'"
  r3=$(repo_bytes "$RR"); ROWS+=("$LAST_ROW $((r3 - r2)) |")
  measure "restic restore v2" restic -q -r "$RR" restore latest --target "$WORK/rr"
  ROWS+=("$LAST_ROW - |")
fi

echo "| step | wall s | MB/s of image | peak RSS MiB | bytes stored |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
