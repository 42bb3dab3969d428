#!/usr/bin/python3
"""Tiny byte-level BPE tokenizer for the ssmx test fixtures and the bundled demo model.

Three things live here, all written from docs/spec (shared/specs/model-families.md §8), nothing copied:

* `TokenizerJson` — a pure-Python encoder for Hugging Face `tokenizer.json` files of the GPT-NeoX kind
  (special added tokens cut out first, NFC, normalized added tokens, the GPT-2 pre-tokenizer regex implemented
  by hand, GPT-2 `bytes_to_unicode`, BPE with the (rank, position) min-heap of `tokenizers`). It is the oracle
  for the C++ tokenizer; `--check-neox` runs it over the 46 GPT-NeoX conformance cases in ../shared.
* `train_bpe` — byte-level BPE training (count adjacent pairs over pre-tokenized words, merge the most frequent).
* `main` — trains on a small generated English corpus and writes
    tests/data/tokenizer/tiny-tokenizer.json   (HF format, GPT-NeoX layout, 509 ids)
    tests/data/tokenizer/tiny-expected.json    ([{"text": ..., "ids": [...]}, ...] from `TokenizerJson`)

Deterministic: the corpus comes from a seeded `random.Random`; training breaks count ties by the pair itself.

    /usr/bin/python3 scripts/make_tokenizer.py [--check-neox]
"""
import argparse
import heapq
import json
import os
import random
import sys
import unicodedata
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(ROOT, "tests", "data", "tokenizer")
TINY_TOKENIZER = os.path.join(TOKENIZER_DIR, "tiny-tokenizer.json")
TINY_EXPECTED = os.path.join(TOKENIZER_DIR, "tiny-expected.json")
NEOX_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data", "gpt-neox-20b")

SPECIALS = ["<|endoftext|>", "<|padding|>"]   # ids 0 and 1, as in GPT-NeoX
SPACE_RUNS = [4, 3, 2]                        # normalized added tokens "    ", "   ", "  " (longest first, like NeoX)
TOTAL_IDS = 509                               # 2 specials + 256 bytes + merges + 3 space runs; mamba-bf16-bin vocab_size


# ------------------------------------------------------------------------------------------------------------------
# GPT-2 byte <-> unicode table


def bytes_to_unicode():
    """Byte -> printable character. Printable Latin-1 bytes map to themselves, the other 68 bytes (0x00-0x20,
    0x7F-0xA0, 0xAD) to U+0100, U+0101, ... in increasing byte order. Returned as an ordered list of (byte, char)
    in the GPT-2 order: the printable ones first, then the remapped ones."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [(b, chr(b)) for b in printable]
    n = 0
    for b in range(256):
        if b not in printable:
            table.append((b, chr(0x100 + n)))
            n += 1
    return table


BYTE_TO_CHAR = dict(bytes_to_unicode())
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


# ------------------------------------------------------------------------------------------------------------------
# GPT-2 pre-tokenizer regex, by hand:
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

# Unicode White_Space (what Oniguruma's \s matches with Unicode strings).
WHITESPACE = set(chr(c) for c in list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
                 + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
CONTRACTIONS = ["s", "t", "re", "ve", "m", "ll", "d"]


def is_space(c):
    return c in WHITESPACE


def is_letter(c):
    return unicodedata.category(c).startswith("L")


def is_number(c):
    return unicodedata.category(c) in ("Nd", "Nl", "No")


def is_other(c):
    return not (is_space(c) or is_letter(c) or is_number(c))


def gpt2_split(text):
    """Splits text into the pieces the GPT-2 regex matches (it matches every character, so pieces tile the text)."""
    pieces = []
    i, n = 0, len(text)
    while i < n:
        end = _match_at(text, i)
        assert end > i
        pieces.append(text[i:end])
        i = end
    return pieces


def _match_at(text, i):
    n = len(text)
    # 's|'t|'re|'ve|'m|'ll|'d  (alternatives in order, case-sensitive)
    if text[i] == "'":
        for c in CONTRACTIONS:
            if text.startswith(c, i + 1):
                return i + 1 + len(c)
    # ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    for cls in (is_letter, is_number, is_other):
        j = i + 1 if text[i] == " " else i
        if j < n and cls(text[j]):
            j += 1
            while j < n and cls(text[j]):
                j += 1
            return j
        # without the optional space: text[i] itself must be in the class (a space never is)
    # '\s+(?!\S)' then '\s+'
    j = i
    while j < n and is_space(text[j]):
        j += 1
    run = j - i
    if run == 0:
        raise AssertionError("unreachable: every character is a letter, number, space or other")
    if j == n:
        return j            # run reaches the end: (?!\S) holds
    if run >= 2:
        return j - 1        # backtrack one char so the next word keeps its leading space
    return j                # '\s+' fallback: a single whitespace char before a non-space


def byte_level(piece):
    return "".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


# ------------------------------------------------------------------------------------------------------------------
# Added-token matching: leftmost-longest, non-overlapping


def split_added(text, tokens):
    """Splits text on occurrences of `tokens` (dict content -> id), leftmost-longest. Returns a list of
    (string, id or None)."""
    out = []
    if not tokens:
        return [(text, None)] if text else []
    by_len = sorted(set(len(t) for t in tokens), reverse=True)
    i, start, n = 0, 0, len(text)
    while i < n:
        hit = None
        for L in by_len:
            if text[i:i + L] in tokens:
                hit = text[i:i + L]
                break
        if hit is None:
            i += 1
            continue
        if i > start:
            out.append((text[start:i], None))
        out.append((hit, tokens[hit]))
        i += len(hit)
        start = i
    if start < n:
        out.append((text[start:], None))
    return out


# ------------------------------------------------------------------------------------------------------------------
# tokenizer.json encoder


class TokenizerJson:
    def __init__(self, spec):
        model = spec["model"]
        assert model["type"] == "BPE", model["type"]
        assert not model.get("ignore_merges", False), "ignore_merges=true not implemented"
        pre = spec.get("pre_tokenizer") or {}
        assert pre.get("type") == "ByteLevel" and pre.get("use_regex", True), pre
        self.add_prefix_space = pre.get("add_prefix_space", False)
        norm = spec.get("normalizer")
        assert norm is None or norm.get("type") == "NFC", norm
        self.nfc = norm is not None
        self.vocab = model["vocab"]
        self.merges = {}                   # (a, b) -> (rank, new id)
        for rank, m in enumerate(model["merges"]):
            a, b = m.split(" ") if isinstance(m, str) else m
            if (a, b) not in self.merges:
                self.merges[(a, b)] = (rank, self.vocab[a + b])
        self.special = {}
        self.normalized = {}
        for t in spec.get("added_tokens", []):
            assert not (t.get("single_word") or t.get("lstrip") or t.get("rstrip")), t
            (self.normalized if t.get("normalized") else self.special)[t["content"]] = t["id"]
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        for t in spec.get("added_tokens", []):
            self.id_to_token[t["id"]] = t["content"]

    @classmethod
    def from_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def bpe(self, word):
        """word: byte-level string. Merges with a min-heap keyed by (rank, position), re-checking entries lazily."""
        syms = [c for c in word if c in self.vocab]      # unk_token null: unknown characters are dropped
        if not syms:
            return []
        n = len(syms)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            m = self.merges.get((syms[i], syms[i + 1]))
            if m:
                heapq.heappush(heap, (m[0], i, m[1]))
        while heap:
            rank, pos, new_id = heapq.heappop(heap)
            if not alive[pos] or nxt[pos] == -1:
                continue
            right = nxt[pos]
            m = self.merges.get((syms[pos], syms[right]))
            if m is None or m[1] != new_id:
                continue                                 # stale entry
            syms[pos] = syms[pos] + syms[right]
            alive[right] = False
            nxt[pos] = nxt[right]
            if nxt[pos] != -1:
                prev[nxt[pos]] = pos
            if prev[pos] != -1:
                m = self.merges.get((syms[prev[pos]], syms[pos]))
                if m:
                    heapq.heappush(heap, (m[0], prev[pos], m[1]))
            if nxt[pos] != -1:
                m = self.merges.get((syms[pos], syms[nxt[pos]]))
                if m:
                    heapq.heappush(heap, (m[0], pos, m[1]))
        return [self.vocab[s] for s, a in zip(syms, alive) if a]

    def encode(self, text):
        ids = []
        for seg, sid in split_added(text, self.special):
            if sid is not None:
                ids.append(sid)
                continue
            if self.nfc:
                seg = unicodedata.normalize("NFC", seg)
            for piece, nid in split_added(seg, self.normalized):
                if nid is not None:
                    ids.append(nid)
                    continue
                if self.add_prefix_space and not piece.startswith(" "):
                    piece = " " + piece
                for w in gpt2_split(piece):
                    ids.extend(self.bpe(byte_level(w)))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            s = self.id_to_token[i]
            if s in self.special or s in self.normalized:
                out += s.encode("utf-8")
            else:
                out += bytes(CHAR_TO_BYTE[c] for c in s)
        return out.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------------------------------
# Training


def train_bpe(corpus_lines, num_merges):
    """Byte-level BPE on the pre-tokenized corpus. Returns the list of merges (a, b) in rank order."""
    words = Counter()
    for line in corpus_lines:
        for w in gpt2_split(unicodedata.normalize("NFC", line)):
            words[tuple(byte_level(w))] += 1
    words = [[list(w), f] for w, f in sorted(words.items())]
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for syms, f in words:
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        a, b = best
        for w in words:
            syms = w[0]
            if len(syms) < 2:
                continue
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            w[0] = out
    return merges


def make_corpus(seed=1234, n=3000):
    """Templated English review sentences (lowercase mostly, some names, numbers and punctuation)."""
    rng = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "Emma", "Frank", "Grace", "Henry", "Ivy", "John"]
    nouns = ["movie", "film", "acting", "story", "ending", "music", "plot", "cast", "director", "book", "show",
             "scene", "script", "actor", "camera", "dialogue", "characters", "soundtrack"]
    adjs = ["good", "bad", "great", "boring", "awful", "amazing", "funny", "slow", "long", "beautiful", "terrible",
            "interesting", "perfect", "weak", "strong", "sad", "wonderful", "fine"]
    advs = ["not", "very", "really", "quite", "so", "too", "truly", "pretty", "rather", "never"]
    verbs = ["loved", "liked", "hated", "enjoyed", "watched", "saw", "remember", "recommend", "disliked", "found"]
    templates = [
        "the {n} was {a} {j}.",
        "the {n} was {j}",
        "i {a} {v} the {n}.",
        "i {v} the {n}, but the {n2} was {j}.",
        "{N} said the {n} was {a} {j}!",
        "it's a {j} {n}, and i didn't like the {n2}.",
        "we've seen {k} movies this year and this one is the {j}est.",
        "rated {k}/10 by {N}.",
        "{k} stars out of 5? {a} {j}!",
        "what a {j} {n}... i'd watch it again in {y}.",
        "they're {a} {j}; you'll {v} it.",
        "The {n} is {j}. I {v} it!",
        "\"{j}\" is the word for this {n}.",
        "in {y} the {n} cost ${k}.99 (or {k}0 euros).",
    ]
    lines = []
    for _ in range(n):
        t = rng.choice(templates)
        lines.append(t.format(n=rng.choice(nouns), n2=rng.choice(nouns), a=rng.choice(advs), j=rng.choice(adjs),
                              v=rng.choice(verbs), N=rng.choice(names), k=rng.randint(0, 12),
                              y=rng.randint(1950, 2024)))
    # a few multi-line entries so newlines and indentation occur
    text = []
    for i in range(0, len(lines), 5):
        sep = rng.choice([" ", "\n", "\n\n", " "])
        text.append(sep.join(lines[i:i + 5]))
    return text


def build_tokenizer_json(merges, num_merges):
    """GPT-NeoX layout: ids 0/1 the specials, then the 256 byte characters in bytes_to_unicode order, then one id
    per merge, then the normalized space-run added tokens."""
    vocab = {}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    for _, c in bytes_to_unicode():
        vocab[c] = len(vocab)
    kept = []
    for a, b in merges:
        if len(kept) == num_merges:
            break
        if a + b in vocab:      # a second way to build an existing token: drop it (keeps one id per merge)
            continue
        vocab[a + b] = len(vocab)
        kept.append(f"{a} {b}")
    assert len(kept) == num_merges, "corpus too small for the requested number of merges"
    added = [{"id": i, "special": True, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False} for i, s in enumerate(SPECIALS)]
    for k, n in enumerate(SPACE_RUNS):
        added.append({"id": len(vocab) + k, "special": False, "content": " " * n, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": True})
    byte_level_cfg = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", **byte_level_cfg},
        "post_processor": {"type": "ByteLevel", **byte_level_cfg},
        "decoder": {"type": "ByteLevel", **byte_level_cfg},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": kept},
    }


EXPECTED_TEXTS = [
    "the movie was not good",
    "I really loved the acting!",
    "Hello world",
    "  leading spaces",
    "trailing spaces   ",
    "a  b",
    "a      b",
    "tab\tand\nnewline",
    "a\n\nb",
    "\n\n\n",
    "don't, we've, they're, I'd, you'll, it's; DON'T",
    "rated 10/10 in 1999 (or 12345.67)",
    "<|endoftext|>the end<|endoftext|>",
    "x<|padding|>y <|endoftext|> z",
    "Führer über café",
    "e\u0301 vs \u00e9",
    "ｆｕｌｌ width",
    "нещо на Български",
    "this is 🦙.cpp 😁",
    "我想在apple工作1314151天～",
    "!!!!!! ??? ...",
    "    Hello\n    Hello",
    "",
    " ",
    "the\u00a0movie\u3000was",
]


def check_neox(verbose=True):
    """Runs the encoder over the GPT-NeoX conformance cases in ../shared (returns None when absent)."""
    tok_path = os.path.join(NEOX_DIR, "tokenizer.json")
    if not os.path.exists(tok_path):
        return None
    tok = TokenizerJson.from_file(tok_path)
    with open(os.path.join(NEOX_DIR, "conformance.inp"), encoding="utf-8") as f:
        inputs = f.read().split("\n__ggml_vocab_test__\n")   # every case is followed by the separator
    assert inputs[-1] == "", "unexpected conformance.inp layout"
    inputs.pop()
    with open(os.path.join(NEOX_DIR, "conformance.out"), encoding="utf-8") as f:
        outputs = f.read().split("\n")
    bad = 0
    for k, text in enumerate(inputs):
        want = [int(x) for x in outputs[k].split()]
        got = tok.encode(text)
        if got != want:
            bad += 1
            if verbose:
                print(f"  neox case {k} {text!r}: got {got} want {want}")
    if verbose:
        print(f"GPT-NeoX conformance: {len(inputs) - bad}/{len(inputs)} cases match")
    return bad == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-neox", action="store_true", help="only check the encoder on the GPT-NeoX cases")
    args = ap.parse_args(argv)
    ok = check_neox()
    if args.check_neox:
        sys.exit(0 if ok else 1)
    if ok is False:
        sys.exit("the encoder does not reproduce the GPT-NeoX conformance ids; not writing files")

    num_merges = TOTAL_IDS - len(SPECIALS) - 256 - len(SPACE_RUNS)
    spec = build_tokenizer_json(train_bpe(make_corpus(), num_merges + 16), num_merges)
    n_ids = len(spec["model"]["vocab"]) + len(SPACE_RUNS)
    assert n_ids == TOTAL_IDS, n_ids

    os.makedirs(TOKENIZER_DIR, exist_ok=True)
    with open(TINY_TOKENIZER, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2, ensure_ascii=False)
        f.write("\n")
    tok = TokenizerJson.from_file(TINY_TOKENIZER)
    cases = []
    for text in EXPECTED_TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < n_ids for i in ids)
        want_text = unicodedata.normalize("NFC", text)
        assert tok.decode(ids) == want_text, (text, tok.decode(ids))
        cases.append({"text": text, "ids": ids})
    with open(TINY_EXPECTED, "w", encoding="utf-8") as f:
        # ASCII-only JSON (\u escapes): combining marks, NBSP and ideographic spaces stay unambiguous
        f.write("[\n" + ",\n".join("  " + json.dumps(c, ensure_ascii=True) for c in cases) + "\n]\n")
    print(f"wrote {os.path.relpath(TINY_TOKENIZER, ROOT)} ({n_ids} ids, {len(spec['model']['merges'])} merges) "
          f"and {os.path.relpath(TINY_EXPECTED, ROOT)} ({len(cases)} cases)")
    return TINY_TOKENIZER


if __name__ == "__main__":
    main()
