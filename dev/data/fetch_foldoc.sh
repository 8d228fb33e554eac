#!/usr/bin/env bash
# fetch_foldoc.sh -- fetches FOLDOC, the Free On-line Dictionary of Computing (Debian package
# dict-foldoc 20230119-1, GFDL), and writes the cleaned text:
#   data/foldoc/foldoc.txt   one document per dictionary entry, separated by blank lines
# Entries are cut with foldoc.index (not by column-0 lines: some entries contain unindented lines);
# link braces, <category> tags, "(YYYY-MM-DD)" date lines and URLs are removed
# (dev/data/clean_corpus.py says exactly how).
# The .deb is downloaded with `apt-get download` and unpacked with `dpkg-deb -x`, so nothing is
# installed (a plain apt-get install would pull in the dictd daemon). Idempotent.
# Needs: apt-get + dpkg-deb (Debian/Ubuntu), python3. Nothing here is committed (data/ is ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/data/foldoc"
VER="20230119-1"
DEB="$OUT/dict-foldoc_${VER}_all.deb"
SHA256="745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3"

mkdir -p "$OUT"
if [ -f "$DEB" ] && ! echo "$SHA256  $DEB" | sha256sum -c --status; then
  echo "fetch_foldoc: $DEB has the wrong checksum; downloading it again" >&2
  rm -f "$DEB"
fi
if [ ! -f "$DEB" ]; then
  for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "error: $tool not found: this script needs Debian's package tools. Place $DEB there by hand" >&2
      echo "       (from https://deb.debian.org/debian/pool/main/d/dict-foldoc/) and run it again." >&2
      exit 1
    fi
  done
  echo "fetch_foldoc: apt-get download dict-foldoc=$VER" >&2
  # apt-get download writes into the current directory. As root, apt would hand the download to
  # its unprivileged _apt user, find that _apt cannot write to data/, and print a "Download is
  # performed unsandboxed as root" warning that reads like a failure; saying up front that root
  # downloads itself avoids it (the file is checked against its sha256 below either way).
  sandbox=()
  if [ "$(id -u)" = 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
  if ! (cd "$OUT" && apt-get ${sandbox[@]+"${sandbox[@]}"} download "dict-foldoc=$VER"); then
    echo "error: 'apt-get download dict-foldoc=$VER' failed. If apt says the version is not found," >&2
    echo "       run 'apt-get update' first (Debian 12 bookworm carries $VER)." >&2
    exit 1
  fi
  if ! echo "$SHA256  $DEB" | sha256sum -c --status; then
    echo "error: $DEB does not have the expected sha256 $SHA256" >&2
    exit 1
  fi
fi
rm -rf "$OUT/deb"
dpkg-deb -x "$DEB" "$OUT/deb"
python3 "$ROOT/dev/data/clean_corpus.py" foldoc \
  "$OUT/deb/usr/share/dictd/foldoc.dict.dz" "$OUT/deb/usr/share/dictd/foldoc.index" "$OUT/foldoc.txt"
echo "fetch_foldoc: wrote $OUT/foldoc.txt" >&2
