#!/usr/bin/env bash
# Prune at scale: the cost of prune's mark-and-plan phase and of a whole
# prune, with time and peak memory, on a vault of many small chunks.
#
#   benches/prune.sh [CHUNKS [halves|interleaved]]   (default 1048576 halves)
#
# Builds two points of one disk cut into 512-byte chunks (fixed chunker,
# no compression, encryption on): A, CHUNKS chunks of random data, and B,
# A with half of it rewritten: its second half (`halves`: A's packs of that
# half become wholly unused and are deleted), or every other MiB
# (`interleaved`: every pack of A is half unused and is repacked). The
# index then holds 1.5 x CHUNKS chunks. A is forgotten; `prune --dry-run`
# times mark and plan alone, then `prune` does the work. Needs only the
# release build and coreutils; /usr/bin/time (Debian package `time`)
# reports peak memory when present. Set WORK to choose the directory
# (it needs about 2.3 x CHUNKS x 512 bytes; default: a new temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
chunks=${1:-1048576}
layout=${2:-halves}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
cargo build --release --quiet
bin=$PWD/target/release/diskvault
export DISKVAULT_PASSWORD=benchmark
cd "$work"
rm -rf vault A.img B.img

mib=$(( (chunks * 512 + 1048575) / 1048576 ))
head -c $((mib * 1048576)) /dev/urandom > A.img
cp A.img B.img
if [ "$layout" = interleaved ]; then
  for ((m = 1; m < mib; m += 2)); do
    dd if=/dev/urandom of=B.img bs=1M seek=$m count=1 conv=notrunc status=none
  done
else
  dd if=/dev/urandom of=B.img bs=1M seek=$((mib / 2)) count=$((mib - mib / 2)) conv=notrunc status=none
fi

timed() { # label, command...
  local label=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "$label: %e s wall, %M KiB peak RSS" "$@"
  else
    local start=$SECONDS; "$@"; echo "$label: $((SECONDS - start)) s wall"
  fi
}

"$bin" init vault --chunker fixed:512 --compression none >/dev/null
timed "backup A" "$bin" backup vault A.img --disk d >/dev/null
timed "backup B" "$bin" backup vault B.img --disk d >/dev/null
first=$("$bin" points vault --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])' 2>/dev/null \
  || "$bin" points vault | awk 'NR==2 {print $1}')
"$bin" forget vault "$first" >/dev/null
echo "index: $(du -sh vault/index | cut -f1) in $(ls vault/index | wc -l) files; packs: $(du -sh vault/packs | cut -f1)"
timed "prune --dry-run (mark and plan)" "$bin" prune vault --now --dry-run
timed "prune" "$bin" prune vault --now
timed "check" "$bin" check vault >/dev/null
[ -z "${WORK:-}" ] && rm -rf "$work"
