#!/usr/bin/env bash
# make_shards.sh -- one command from nothing to the token shards (also: `make shards`):
#   data/shards/brown_train.bin   Brown corpus, 459 files   (training)
#   data/shards/brown_val.bin     Brown corpus, 41 files    (in-domain validation)
#   data/shards/foldoc.bin        FOLDOC, 12,014 entries    (held-out evaluation, another source)
# Packing as the paper's (docs/protocol.md §2): documents joined with "\n\n", one string, one BOS.
# Tokenizer: $TOKENIZER if set, else Mistral v0.3 (32768 ids, the Mistral-7B-v0.3 vocabulary), from
# dev/data/fetch_tokenizer.sh. For v0.1: TOKENIZER=data/tokenizers/mistral-v0.1/tokenizer.json.
# Each shard is checked against encoding its whole text in one call (--verify). Idempotent: the
# downloads are cached under data/ and the shards are rewritten deterministically.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
if [ -z "${TOKENIZER:-}" ]; then
  dev/data/fetch_tokenizer.sh
  TOKENIZER="data/tokenizers/mistral-v0.3/tokenizer.json"
fi
[ -f "$TOKENIZER" ] || { echo "error: tokenizer $TOKENIZER not found" >&2; exit 1; }
dev/data/fetch_brown.sh
dev/data/fetch_foldoc.sh
make --no-print-directory tokenize_coda
mkdir -p data/shards
./tokenize_coda --verify "$TOKENIZER" data/brown/train.txt data/shards/brown_train.bin
./tokenize_coda --verify "$TOKENIZER" data/brown/val.txt data/shards/brown_val.bin
./tokenize_coda --verify "$TOKENIZER" data/foldoc/foldoc.txt data/shards/foldoc.bin
