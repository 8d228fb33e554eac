#!/usr/bin/env python3
"""hf_tokenizer_edge_cases.py -- edge cases for llmc/tokenizer.h with expected ids from Hugging Face
`tokenizers`, written as the committed fixture dev/test/fixtures/hf_edge_cases.txt.

  hf_tokenizer_edge_cases.py TOKDIR OUT_FIXTURE      (on a machine with `tokenizers`)

TOKDIR holds mistral-v0.1/tokenizer.json and mistral-v0.3/tokenizer.json (dev/data/fetch_tokenizer.sh).
Besides those two files as they are, it checks the Metaspace forms that newer Hugging Face
conversions of Llama/Mistral tokenizers use (normalizer null, pre_tokenizer Metaspace with
prepend_scheme first/always/never, split true/false), made by replacing top-level members of the
JSON; the fixture records each replacement, so the C test builds the same variants.
Texts: hand-written edge cases (empty, spaces, special-token text next to spaces, "▁" itself,
control characters, combining marks, non-BMP characters) and seeded random mixtures of them, each
encoded with BOS and/or with added tokens matched in the text, as the flags say; plus HF's decode
of the ids (skip_special_tokens=True).

Fixture lines (tab-separated): "variant NAME BASE KEY JSON" (one per replaced member) and
"case NAME FLAGS TEXT IDS DECODED"; FLAGS has b (BOS) and/or s (added tokens matched in the text),
or -; TEXT and DECODED escape \\\\ \\t \\n \\r and other control bytes as \\xHH.
"""
import json
import os
import random
import sys
import time

META = "\u2581"
VARIANTS = {  # name: (base, {member: replacement})
    "v0.1": ("v0.1", {}),
    "v0.3": ("v0.3", {}),
    "v0.1-meta-first": ("v0.1", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": False}}),
    "v0.3-meta-first": ("v0.3", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": False}}),
    "v0.1-meta-always-split": ("v0.1", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True}, "decoder": {
        "type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True}}),
    "v0.1-meta-never": ("v0.1", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": META, "prepend_scheme": "never", "split": False}}),
}
HAND = ["", " ", "  ", "a", " a", "a ", "  a  b  ", "\n", " \n ", "\t\tx", "\r\n", "Hello world!",
        "Hello  world", "<s>", "</s>", "<s>Hello</s>", " <s> Hello </s> ", "Hello</s>world",
        "[INST] What is 2+2? [/INST]", "  [INST]x", "[INST][/INST]", "<unk>", "<0x41>", META,
        META + "a", "a" + META + "b", " " + META + " ", META * 3 + "x", "\u00e9t\u00e9", "e\u0301",
        "\U0001F999\uA64A", "\u9547\u65e5\u672c\u8a9e", "\u00a0\u3000", "\x00a\x0b\x1f\x7f",
        "                grabbed", "?\",", "x" * 300, " " * 40, "\U0010FFFF\U00010000"]
ATOMS = [" ", "  ", "   ", "\n", "\t", "\r\n", "the", "The", "a", "ing", "Hello", "world", "##", '"',
         ",", '?",', ".", "2023", "3.14", "\u00e9", "\u9547", "\U0001F999", "\uA64A", META, "<s>",
         "</s>", "<unk>", "[INST]", "[/INST]", "[IMG]", "<0x41>", "\u0301", "\u00df", "\u00a0",
         "\u3000", "\x00", "\x0b"]


def escape(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\": out.append("\\\\")
        elif ch == "\t": out.append("\\t")
        elif ch == "\n": out.append("\\n")
        elif ch == "\r": out.append("\\r")
        elif o < 0x20 or o == 0x7F: out.append("\\x%02X" % o)
        else: out.append(ch)
    return "".join(out)


def cases():
    rng = random.Random(20261128)
    out = []
    for name in VARIANTS:
        for text in HAND:
            out.append((name, "b", text))
            out.append((name, "s", text))
        for _ in range(25):
            text = "".join(rng.choice(ATOMS) if rng.random() < 0.7 else chr(rng.randint(0x61, 0x7A))
                           for _ in range(rng.randint(1, 30)))
            out.append((name, rng.choice(["-", "b", "s", "bs"]), text))
    return out


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    from tokenizers import Tokenizer

    base = {}
    for v in ("v0.1", "v0.3"):
        with open(os.path.join(argv[1], "mistral-" + v, "tokenizer.json"), encoding="utf-8") as f:
            base[v] = json.load(f)
    toks = {}
    lines = ["# Edge cases for llmc/tokenizer.h with ids and decodes from HF tokenizers %s, %s UTC"
             % (tokenizers.__version__, time.strftime("%Y-%m-%d %H:%M", time.gmtime())),
             "# (written by dev/test/hf_tokenizer_edge_cases.py; format in its docstring)"]
    for name, (b, patch) in VARIANTS.items():
        doc = json.loads(json.dumps(base[b]))
        for key, value in patch.items():
            doc[key] = value
            lines.append("\t".join(["variant", name, b, key, json.dumps(value, ensure_ascii=False)]))
        if not patch:
            lines.append("\t".join(["variant", name, b, "-", "-"]))
        toks[name] = Tokenizer.from_str(json.dumps(doc))
    for name, flags, text in cases():
        tok = toks[name]
        tok.encode_special_tokens = "s" not in flags
        ids = tok.encode(text, add_special_tokens="b" in flags).ids
        decoded = tok.decode(ids, skip_special_tokens=True)
        lines.append("\t".join(["case", name, flags, escape(text), " ".join(map(str, ids)), escape(decoded)]))
    with open(argv[2], "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
