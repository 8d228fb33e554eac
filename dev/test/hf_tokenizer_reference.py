#!/usr/bin/env python3
"""hf_tokenizer_reference.py -- the reference side of the tokenizer comparison (see
dev/test/fixtures/README.md). Two steps:

  encode  TOKDIR CORPUSDIR OUTDIR   (on a machine with Hugging Face `tokenizers`, e.g. the GPU box)
      Encodes every non-empty line of each corpus with HF tokenizers, one thread, no BOS, for
      TOKDIR/mistral-v0.1/tokenizer.json and TOKDIR/mistral-v0.3/tokenizer.json. CORPUSDIR holds
      brown/train.txt, brown/val.txt, foldoc/foldoc.txt (the outputs of dev/data/fetch_brown.sh and
      fetch_foldoc.sh). Writes OUTDIR/hf_ids_<corpus>_<version>.u16 (all ids as uint16 LE, each line
      ended by 0xFFFF) and OUTDIR/hf_report.json (versions, timings, counts).
      Text that looks like an added token ("<s>", "[INST]") is encoded as text
      (encode_special_tokens = True), as tokenizer_encode does by default.
  fixtures OUTDIR CORPUSDIR FIXTUREDIR
      Turns those dumps into the compact committed fixtures: FIXTUREDIR/hf_line_hashes_<corpus>.bin
      (per line, uint16 LE: the fold of the FNV-1a-64 hash of the line's v0.1 ids) and
      FIXTUREDIR/hf_tokenizer_digests.txt (per corpus: each cleaned file's size, FNV-1a-64 and
      sha256, so a change in cleaning shows up as such; line and token counts; the FNV-1a-64 digest
      of all v0.1 and of all v0.3 ids). CORPUSDIR must hold the very files that were encoded.

Hash definitions (dev/test/test_tokenizer.h computes the same): FNV-1a 64 (offset 0xcbf29ce484222325,
prime 0x100000001b3) over bytes; a line's ids are fed as uint32 little-endian; the corpus digest
feeds every line's ids followed by 0xFFFFFFFF; the line hash is h ^ h>>32 ^ h>>16 ^ h>>48, low 16 bits.
Python 3 standard library only, plus `tokenizers` for the encode step.
"""
import hashlib
import json
import os
import platform
import struct
import sys
import time

CORPORA = {"brown": ["brown/train.txt", "brown/val.txt"], "foldoc": ["foldoc/foldoc.txt"]}
VERSIONS = ["v0.1", "v0.3"]
FNV_OFFSET, FNV_PRIME, MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def corpus_lines(corpus_dir, name):
    """Lines = the non-empty pieces between '\\n' of the files, in order (str.splitlines would also
    split on \\x0b, \\x1c, U+2028 ..., which the C side does not)."""
    raw, files = b"", []
    for rel in CORPORA[name]:
        with open(os.path.join(corpus_dir, rel), "rb") as f:
            data = f.read()
        files.append({"file": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        raw += data if data.endswith(b"\n") or not data else data + b"\n"
    lines = [l.decode("utf-8") for l in raw.split(b"\n") if l]
    return lines, files, raw


def encode(tokdir, corpus_dir, outdir):
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    from tokenizers import Tokenizer

    os.makedirs(outdir, exist_ok=True)
    report = {"tokenizers": tokenizers.__version__, "python": platform.python_version(),
              "cpu": cpu_name(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "corpora": {}}
    for name in CORPORA:
        lines, files, raw = corpus_lines(corpus_dir, name)
        text_bytes = sum(len(l.encode("utf-8")) for l in lines)
        entry = {"files": files, "lines": len(lines), "text_bytes": text_bytes, "versions": {}}
        all_ids = {}
        for v in VERSIONS:
            tok = Tokenizer.from_file(os.path.join(tokdir, "mistral-" + v, "tokenizer.json"))
            tok.encode_special_tokens = True
            specials = [t.content for t in tok.get_added_tokens_decoder().values()]
            with_special = sum(1 for l in lines if any(s in l for s in specials))
            tok.encode_batch(lines[:2000], add_special_tokens=False)  # warm-up
            best_batch = best_loop = 1e30
            for _ in range(3):
                t0 = time.perf_counter()
                encs = tok.encode_batch(lines, add_special_tokens=False)
                best_batch = min(best_batch, time.perf_counter() - t0)
            for _ in range(2):
                t0 = time.perf_counter()
                for l in lines:
                    tok.encode(l, add_special_tokens=False)
                best_loop = min(best_loop, time.perf_counter() - t0)
            ids = [e.ids for e in encs]
            all_ids[v] = ids
            with open(os.path.join(outdir, f"hf_ids_{name}_{v.replace('.', '')}.u16"), "wb") as f:
                for line_ids in ids:
                    f.write(struct.pack(f"<{len(line_ids) + 1}H", *line_ids, 0xFFFF))
            entry["versions"][v] = {
                "tokens": sum(len(x) for x in ids),
                "lines_containing_added_token_text": with_special,
                "encode_batch_s": best_batch, "encode_batch_MBps": text_bytes / 1e6 / best_batch,
                "encode_loop_s": best_loop, "encode_loop_MBps": text_bytes / 1e6 / best_loop,
            }
            print(name, v, json.dumps(entry["versions"][v]), flush=True)
        # v0.3 must be v0.1 with every id >= 3 shifted by 768 (DATA.md section B)
        shift = lambda i: i + 768 if i >= 3 else i
        entry["v03_equals_v01_shifted_lines"] = sum(
            1 for a, b in zip(all_ids["v0.1"], all_ids["v0.3"]) if [shift(i) for i in a] == b)
        report["corpora"][name] = entry
    with open(os.path.join(outdir, "hf_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def read_dump(path):
    with open(path, "rb") as f:
        data = f.read()
    vals = struct.unpack(f"<{len(data) // 2}H", data)
    lines, cur = [], []
    for x in vals:
        if x == 0xFFFF:
            lines.append(cur)
            cur = []
        else:
            cur.append(x)
    return lines


def ids_bytes(ids):
    return struct.pack(f"<{len(ids)}I", *ids)


def fixtures(outdir, corpus_dir, fixdir):
    with open(os.path.join(outdir, "hf_report.json")) as f:
        report = json.load(f)
    out = ["# HF tokenizers reference for dev/test/test_tokenizer.h (written by hf_tokenizer_reference.py).",
           f"# tokenizers {report['tokenizers']}, Python {report['python']}, {report['date_utc']} UTC, CPU {report['cpu']}"]
    for name, entry in report["corpora"].items():
        lines = {v: read_dump(os.path.join(outdir, f"hf_ids_{name}_{v.replace('.', '')}.u16")) for v in VERSIONS}
        assert len(lines["v0.1"]) == entry["lines"] == len(lines["v0.3"])
        hashes, digests = [], {}
        for v in VERSIONS:
            h = FNV_OFFSET
            for ids in lines[v]:
                h = fnv1a(ids_bytes(ids) + b"\xff\xff\xff\xff", h)
            digests[v] = h
        for ids in lines["v0.1"]:
            h = fnv1a(ids_bytes(ids))
            hashes.append((h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) & 0xFFFF)
        with open(os.path.join(fixdir, f"hf_line_hashes_{name}.bin"), "wb") as f:
            f.write(struct.pack(f"<{len(hashes)}H", *hashes))
        for fi in entry["files"]:
            with open(os.path.join(corpus_dir, fi["file"]), "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != fi["sha256"]:
                sys.exit(f"error: {fi['file']} in {corpus_dir} is not the file that was encoded")
            out.append(f"{name} file {fi['file']} bytes {fi['bytes']} fnv64 {fnv1a(data):016x} sha256 {fi['sha256']}")
        out.append(f"{name} lines {entry['lines']} text_bytes {entry['text_bytes']}")
        for v in VERSIONS:
            out.append(f"{name} {v} tokens {entry['versions'][v]['tokens']} digest {digests[v]:016x}")
    with open(os.path.join(fixdir, "hf_tokenizer_digests.txt"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "encode":
        encode(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "fixtures":
        fixtures(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
