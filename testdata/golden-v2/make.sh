#!/usr/bin/env bash
# Rebuilds the format-2 golden repository. Run once, by the version that
# introduced format 2; never rerun it to "fix" a failing golden test: a
# failure there means the reader broke compatibility.
#
# Format 2 seals new data chunks in groups, records chaining values in
# manifest leaves, and binds the config into the key files. The disk is
# larger than one 4 MiB leaf span so that leaves carry chaining values:
#   big.img (9 MiB) = sample.img, then sample.img with its first 64 KiB
#   rewritten, then 1 MiB of text.
# Points:
#   1. disk "root" = big.img, tag "golden"                         (forgotten)
#   2. disk "root" = big.img with three 4 KiB blocks rewritten (span 0 changes,
#      span 1 is reused from point 1's leaf), disk "data" = sample.img
#   3. disk "root" = day 2 with one more 4 KiB block rewritten in the tail, tag "keep"
# Policy: --keep-last 2 --keep-tag keep --group-by host, grace 30 days. Point 1 was
# then forgotten by that policy. Passphrase: diskvault-golden
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BIN:-../../target/release/diskvault}
export DISKVAULT_PASSWORD=diskvault-golden
rm -rf repo big.img day2.img day3.img
"$BIN" init repo >/dev/null
python3 - <<'PY'
import shutil
sample = open("../sample.img", "rb").read()
second = bytearray(sample)
second[:65536] = bytes((i * 13 + 5) % 241 for i in range(65536))
text = b"".join(b"%08d golden line of format 2, compressed beside its neighbours\n" % n
                for n in range(20000))[: 1 << 20]
open("big.img", "wb").write(sample + bytes(second) + text)
shutil.copyfile("big.img", "day2.img")
with open("day2.img", "r+b") as f:
    for n, off in enumerate([1 << 20, (2 << 20) + 8192, 3 << 20]):
        f.seek(off)
        f.write(bytes((i * 31 + n * 7) % 251 for i in range(4096)))
shutil.copyfile("day2.img", "day3.img")
with open("day3.img", "r+b") as f:
    f.seek((8 << 20) + 16384)
    f.write(bytes((i * 17 + 3) % 253 for i in range(4096)))
PY
"$BIN" backup repo big.img --disk root --tag golden --host golden-host >/dev/null
"$BIN" backup repo day2.img ../sample.img --disk root --disk data --tag golden --host golden-host >/dev/null
"$BIN" backup repo day3.img --disk root --tag keep --host golden-host >/dev/null
"$BIN" policy set repo --keep-last 2 --keep-tag keep --group-by host --grace 30d >/dev/null
{
  echo "# BLAKE3 of each disk, per point in time order (what restore must reproduce)"
  "$BIN" points repo --json | python3 -c '
import json,sys
p=json.load(sys.stdin)
for n, point in enumerate(p, 1):
    for d in point["disks"]:
        print(f"point{n}", d["name"], point["id"], d["image_blake3"])'
} > expected.txt
"$BIN" forget repo >/dev/null
rm -rf repo/locks repo/tmp big.img day2.img day3.img
du -sh repo
