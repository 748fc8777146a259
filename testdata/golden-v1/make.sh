#!/usr/bin/env bash
# Rebuilds the format-v1 golden repository. Run once, by the version that
# introduced format v1; never rerun it to "fix" a failing golden test: a
# failure there means the reader broke compatibility. A later format version
# adds testdata/golden-vN/ of its own beside this one.
#
# Points:
#   1. disk "root" = testdata/sample.img (a 4 MiB ext4 image)
#   2. disk "root" = sample.img with three 4 KiB blocks rewritten in place,
#      disk "data" = sample.img again (fully deduplicated)
# Passphrase: diskvault-golden
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BIN:-../../target/release/diskvault}
export DISKVAULT_PASSWORD=diskvault-golden
rm -rf repo day2.img
"$BIN" init repo >/dev/null
"$BIN" backup repo ../sample.img --disk root --tag golden --host golden-host >/dev/null
python3 - <<'PY'
import shutil
shutil.copyfile("../sample.img", "day2.img")
with open("day2.img", "r+b") as f:
    for n, off in enumerate([1 << 20, (2 << 20) + 8192, 3 << 20]):
        f.seek(off)
        f.write(bytes((i * 31 + n * 7) % 251 for i in range(4096)))
PY
"$BIN" backup repo day2.img ../sample.img --disk root --disk data --tag golden --host golden-host >/dev/null
{
  echo "# BLAKE3 of each disk, per point in time order (what restore must reproduce)"
  "$BIN" points repo --json | python3 -c '
import json,sys
p=json.load(sys.stdin)
for n, point in enumerate(p, 1):
    for d in point["disks"]:
        print(f"point{n}", d["name"], point["id"], d["image_blake3"])'
} > expected.txt
rm -f day2.img
du -sh repo
