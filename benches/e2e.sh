#!/usr/bin/env bash
# End-to-end benchmark: diskvault beside restic and rustic (when installed)
# and reference tools, on the project's own ext4 images, several runs, medians.
#
#   benches/e2e.sh [SIZE_MIB]        (default 2048; images are cached)
#
# Needs: e2fsprogs (the images), python3 (the table and chart), GNU time
# (/usr/bin/time, Debian package `time`), zstd, b3sum; restic and rustic rows
# appear when they are installed. See README "Performance" for installing them.
#
# Env: RUNS=N       runs of every row (default 3); the table shows medians
#      OUT=dir      where TABLE.md, chart.svg, runs.tsv, meta.txt go
#                   (default target/bench-results)
#      IMAGES=dir   where the images are kept (default target/bench-images/SIZE)
#      THREADS=N    passed to diskvault (default: all cores)
#      TOOLS="..."  the backup tools to run (default "diskvault restic rustic")
#      BASELINE=bin another diskvault binary (say, the last release) measured
#                   as the tool "baseline", to compare two builds in one run
#
# Each run measures, on the same images: zstd -3 -T0 of v1, b3sum of v1, a
# sparse copy of v2 (references), then for each tool in a fresh repository:
# backup of v1, next day's backup of v2, backup of v2 again, verified restore
# of v2 (checked against v2 with cmp, untimed). Wall time and peak RSS come
# from /usr/bin/time -v; bytes stored is what the repository grew by.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2048}
RUNS=${RUNS:-3}
OUT=${OUT:-target/bench-results}
IMAGES=${IMAGES:-target/bench-images/$SIZE}
TOOLS=${TOOLS:-diskvault restic rustic}
export DISKVAULT_PASSWORD=bench RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin

for t in python3 zstd b3sum; do
  command -v "$t" > /dev/null || { echo "e2e.sh needs $t (see README, Performance)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "e2e.sh needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --bin diskvault --example mkimages
BUILT=$(realpath "${CARGO_TARGET_DIR:-target}")/release
BIN=$BUILT/diskvault
mkdir -p "$IMAGES"
"$BUILT/examples/mkimages" "$IMAGES" "$SIZE" --versions 2 > "$IMAGES/report.txt" ||
  { cat "$IMAGES/report.txt"; exit 1; }
V1=$IMAGES/disk_v1.img
V2=$IMAGES/disk_v2.img
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dvbench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
THREAD_ARGS=()
[[ -n ${THREADS:-} ]] && THREAD_ARGS=(--threads "$THREADS")

TSV=$OUT/runs.tsv
printf 'run\ttool\tstep\twall_s\tpeak_rss_kib\tstored_bytes\n' > "$TSV"
RUN=0
# measure TOOL STEP COMMAND... : times COMMAND (stdin from $STDIN if set).
measure() {
  local tool=$1 step=$2; shift 2
  local tv=$WORK/time.txt
  sync
  if ! /usr/bin/time -v -o "$tv" "$@" < "${STDIN:-/dev/null}" > "$WORK/out.txt" 2>&1; then
    echo "failed: $tool $step: $*" >&2
    cat "$WORK/out.txt" "$tv" >&2
    exit 1
  fi
  WALL=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tv")
  RSS=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tv")
}
# row TOOL STEP STORED: appends the last measurement.
row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$RUN" "$1" "$2" "$WALL" "$RSS" "$3" >> "$TSV"
  printf '  run %s  %-20s %-28s %7ss  %s\n' "$RUN" "$1" "$2" "$WALL" "$3" >&2
}
repo_bytes() { du -sb "$1" | cut -f1; }

# commands TOOL REPO IMAGE RESTORE_DIR: sets INIT, BACKUP and RESTORE to
# the tool's commands (defaults everywhere; restic and rustic read the image
# from stdin, as `disk.img`).
commands() {
  local repo=$2 image=$3 dir=$4
  case $1 in
    # diskvault: encryption, fixed 16 KiB chunks, zstd; a restore verifies
    # every chunk and the whole image's hash, and writes a sparse file.
    diskvault)
      INIT=("$BIN" init "$repo")
      BACKUP=("$BIN" backup "$repo" "$image" --disk disk "${THREAD_ARGS[@]}")
      RESTORE=("$BIN" restore "$repo" latest "$dir/disk.img" "${THREAD_ARGS[@]}") ;;
    baseline)
      INIT=("$BASELINE" init "$repo")
      BACKUP=("$BASELINE" backup "$repo" "$image" --disk disk "${THREAD_ARGS[@]}")
      RESTORE=("$BASELINE" restore "$repo" latest "$dir/disk.img" "${THREAD_ARGS[@]}") ;;
    # restic: `restore --verify` reads the restored file back and checks
    # every blob.
    restic)
      INIT=(restic -q -r "$repo" init)
      BACKUP=(restic -q -r "$repo" backup --stdin --stdin-filename disk.img)
      RESTORE=(restic -q -r "$repo" restore latest --target "$dir" --verify) ;;
    # rustic: `--force` (no parent snapshot), else rustic 0.11 takes stdin
    # for unchanged (no mtime to compare) and records the parent's content.
    rustic)
      INIT=(rustic -r "$repo" init)
      BACKUP=(rustic -r "$repo" backup --force --stdin-filename disk.img -)
      RESTORE=(rustic -r "$repo" restore latest "$dir") ;;
  esac
}

# backup_steps TOOL: the four steps in a fresh repository.
backup_steps() {
  local tool=$1 repo=$WORK/$1-repo b0 b1 b2 b3
  rm -rf "$repo" "$WORK/restored"
  mkdir -p "$WORK/restored"
  commands "$tool" "$repo" "$V1" "$WORK/restored"
  "${INIT[@]}" > /dev/null 2>&1
  b0=$(repo_bytes "$repo")
  STDIN=$V1 measure "$tool" "backup v1" "${BACKUP[@]}"
  b1=$(repo_bytes "$repo"); row "$tool" "backup v1" $((b1 - b0))
  commands "$tool" "$repo" "$V2" "$WORK/restored"
  STDIN=$V2 measure "$tool" "backup v2 (next day)" "${BACKUP[@]}"
  b2=$(repo_bytes "$repo"); row "$tool" "backup v2 (next day)" $((b2 - b1))
  STDIN=$V2 measure "$tool" "backup v2 again (no change)" "${BACKUP[@]}"
  b3=$(repo_bytes "$repo"); row "$tool" "backup v2 again (no change)" $((b3 - b2))
  measure "$tool" "restore v2" "${RESTORE[@]}"
  row "$tool" "restore v2" -
  cmp "$WORK/restored/disk.img" "$V2" || { echo "$tool restored wrong bytes" >&2; exit 1; }
  rm -rf "$repo" "$WORK/restored"
}

tools=()
[[ -n ${BASELINE:-} ]] && TOOLS="baseline $TOOLS"
for t in $TOOLS; do
  if [[ $t == baseline ]]; then
    tools+=("$t")
    continue
  fi
  if [[ $t == diskvault ]] || command -v "$t" > /dev/null; then
    tools+=("$t")
  else
    echo "skipping $t: not installed (see README, Performance)" >&2
  fi
done

versions="diskvault $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
[[ -n ${BASELINE:-} ]] && versions+=", baseline $BASELINE"
command -v restic > /dev/null && versions+=", $(restic version | awk '{print $1, $2}')"
command -v rustic > /dev/null && versions+=", $(rustic --version | head -1)"
versions+=", zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1), $(b3sum --version)"
LOGICAL=$(stat -c %s "$V1")
changed=$(sed -n 's/^changed disk_v1.img -> disk_v2.img: \([0-9]*\) of.*(\(.*\) MiB.*/\2 MiB in \1 blocks of 4 KiB/p' "$IMAGES/mkimages.txt")
{
  echo "date=$(date -u +%Y-%m-%d)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "machine=$(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "command=RUNS=$RUNS benches/e2e.sh $SIZE"
  echo "tools=$versions"
  echo "image_bytes=$LOGICAL"
  echo "images=$SIZE MiB ext4 images from examples/mkimages.rs; v1 -> v2 changes $changed"
} > "$OUT/meta.txt"

echo "== $RUNS runs of: references, ${tools[*]} on $V1, $V2" >&2
for ((RUN = 1; RUN <= RUNS; RUN++)); do
  measure "zstd -3 -T0" "compress v1" zstd -3 -T0 -q -f "$V1" -o "$WORK/v1.zst"
  row "zstd -3 -T0" "compress v1" "$(stat -c %s "$WORK/v1.zst")"; rm -f "$WORK/v1.zst"
  measure b3sum "hash v1" b3sum "$V1"
  row b3sum "hash v1" -
  measure "cp --sparse=always" "copy v2" cp --sparse=always "$V2" "$WORK/copy.img"
  row "cp --sparse=always" "copy v2" -; rm -f "$WORK/copy.img"
  for t in "${tools[@]}"; do
    backup_steps "$t"
  done
done
python3 benches/e2e_report.py "$OUT"
cat "$OUT/TABLE.md"
