#!/usr/bin/python3
"""Generated English review sentences for the bundled demo model (models/sentiment-mamba), with the words that
decide each label recorded — the ground truth for scoring attributions.

Every example is a causal-LM prompt and its next token:

    "review: the acting was not bad , but the plot was dull . sentiment:"   ->   " negative"

Labelling rule (mechanical, no exceptions):

1. A *sentiment clause* holds exactly one sentiment word: an adjective (good, dull, ...) or a verb (loved, hated,
   ...) of fixed polarity. Its polarity is the word's, flipped when the clause negates it: `not`, `never` or
   `hardly` in front of the word ("was not good", "never liked", "did not enjoy", "was hardly boring",
   "it was not a good film"). Intensifiers (very, really, ...) never change it.
2. A *neutral clause* holds no sentiment word (distractors: "i watched it on friday", "the phone was black").
3. Every review has exactly one *decisive* sentiment clause. In "A , but B", "although A , B" and "B , although A"
   the clause B is decisive and the clause A is *overridden* (its polarity is drawn independently of the label):
   the clause after `but` wins, the clause that `although` introduces loses. Otherwise the review has exactly one
   sentiment clause, which is decisive. Neutral clauses can stand before or after (never after "although A").
4. label = polarity of the decisive clause. Evidence = the decisive sentiment word, plus its negation word when
   there is one. (`but` / `although` are recorded separately as the contrast word, overridden sentiment and
   negation words as distractors.)

Words are the text split on single spaces (punctuation is spaced: " , " " . "; `review:` and `sentiment:` are words
of their own); `evidence_words` index that list and `evidence_char_spans` give [begin, end) byte offsets into the
text (all ASCII). Everything is deterministic: one `random.Random(seed)` per split.

    /usr/bin/python3 scripts/make_demo_text.py [--n 5] [--seed 7]      print a few examples with their evidence
"""
import argparse
import json
import random

PREFIX = "review:"
SUFFIX = "sentiment:"
LABELS = {"positive": " positive", "negative": " negative"}   # label -> target token string (one BPE token each)

POS_ADJ = ["good", "great", "excellent", "wonderful", "brilliant", "superb", "amazing", "fantastic", "delightful",
           "charming", "enjoyable", "lovely", "clever", "beautiful", "gripping", "funny", "perfect", "solid",
           "touching", "fun"]
NEG_ADJ = ["bad", "terrible", "awful", "boring", "dull", "poor", "weak", "horrible", "dreadful", "tedious", "bland",
           "clumsy", "disappointing", "mediocre", "messy", "annoying", "forgettable", "painful", "lame", "ugly"]
# (past tense, base form)
POS_VERB = [("loved", "love"), ("liked", "like"), ("enjoyed", "enjoy"), ("adored", "adore"), ("admired", "admire"),
            ("appreciated", "appreciate")]
NEG_VERB = [("hated", "hate"), ("disliked", "dislike"), ("detested", "detest"), ("loathed", "loathe"),
            ("despised", "despise"), ("resented", "resent")]

ADJ_NEGATIONS = ["not", "never", "hardly"]
ADJ_INTENSIFIERS = ["very", "really", "truly", "quite", "so", "extremely", "incredibly", "rather"]
VERB_INTENSIFIERS = ["really", "truly", "absolutely", "honestly"]

# (noun, plural)
NOUNS = [("film", False), ("movie", False), ("plot", False), ("acting", False), ("story", False), ("ending", False),
         ("script", False), ("cast", False), ("soundtrack", False), ("music", False), ("dialogue", False),
         ("pacing", False), ("director", False), ("sequel", False), ("characters", True), ("actors", True),
         ("effects", True), ("book", False), ("novel", False), ("chapter", False), ("phone", False),
         ("battery", False), ("screen", False), ("keyboard", False), ("laptop", False), ("camera", False),
         ("blender", False), ("charger", False), ("headphones", True), ("service", False), ("delivery", False),
         ("design", False), ("sound", False), ("app", False), ("restaurant", False), ("food", False),
         ("waiter", False), ("hotel", False), ("room", False), ("show", False)]
# singular nouns that take "a"/"an" ("it was a good film")
COUNTABLE = ["film", "movie", "plot", "story", "ending", "script", "soundtrack", "director", "sequel", "book", "novel",
             "chapter", "phone", "battery", "screen", "keyboard", "laptop", "camera", "blender", "charger", "app",
             "restaurant", "waiter", "hotel", "room", "show"]
DETERMINERS = ["the", "this", "that", "the", "the"]
NEUTRAL_MODIFIERS = ["new", "old", "first", "second", "final", "main", "original", "latest"]
# Neutral predicates for "<subject> was/were <x>" distractors (no polarity).
NEUTRAL_PREDICATES = ["black", "white", "red", "blue", "french", "german", "new", "old", "small", "large", "square",
                      "plastic", "metal", "expected", "available", "finished", "delivered", "printed", "in english",
                      "in color", "on sale", "on time"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PEOPLE = ["sister", "brother", "friend", "mother", "father", "wife", "husband", "son", "daughter", "kids",
          "neighbor", "boss"]
PLACES = ["paris", "london", "tokyo", "rome", "berlin", "boston", "madrid", "chicago"]
NUMBERS = ["two", "three", "four", "five", "ten", "twenty", "ninety"]
NEUTRAL_TEMPLATES = [
    "i watched it on {day}", "i saw it with my {person}", "we bought it last {period}", "it arrived on {day}",
    "my {person} picked it", "it costs {num} dollars", "it runs {num} minutes", "i read it in {place}",
    "the story is set in {place}", "the director is from {place}", "we went there on {day}",
    "i ordered it for my {person}", "it came out {num} years ago", "my {person} works in {place}",
    "i used it for {num} weeks", "{subj} {be} {pred}", "i saw {subj} in {place}", "there were {num} of us",
    "it was my {person} who chose it", "i got it on {day}",
]
PERIODS = ["week", "month", "year", "summer", "winter"]
SENTIMENT_WORDS = set(POS_ADJ + NEG_ADJ + [w for p in POS_VERB + NEG_VERB for w in p])
NEGATION_WORDS = {"not", "never", "hardly"}


def _article(next_word):
    return "an" if next_word[0] in "aeiou" else "a"


class Clause:
    """A list of words with role tags: 'sent' (the sentiment word), 'neg' (its negation), or None."""

    def __init__(self, words, roles, polarity=None):
        self.words, self.roles, self.polarity = words, roles, polarity


def _subject(rng):
    noun, plural = rng.choice(NOUNS)
    det = rng.choice(DETERMINERS)
    if plural and det in ("this", "that"):
        det = "these" if det == "this" else "those"
    words = [det]
    if rng.random() < 0.2:
        words.append(rng.choice(NEUTRAL_MODIFIERS))
    words.append(noun)
    return words, plural


def sentiment_clause(rng, polarity_word, negated):
    """A clause whose sentiment word has polarity `polarity_word` ('positive'/'negative'), negated or not."""
    kind = rng.choices(["adj", "adj_a", "verb", "thought"], weights=[4, 2, 3, 1])[0]
    words, roles = [], []

    def add(ws, role=None):
        for w in ws.split(" ") if isinstance(ws, str) else ws:
            words.append(w)
            roles.append(role)

    if kind in ("adj", "thought"):
        adj = rng.choice(POS_ADJ if polarity_word == "positive" else NEG_ADJ)
        if kind == "thought":
            add(rng.choice(["i thought", "i felt", "we thought", "honestly ,"]))
        subj, plural = _subject(rng)
        add(subj)
        add(rng.choice(["were", "are"] if plural else ["was", "is"]))
        neg = rng.choice(ADJ_NEGATIONS) if negated else None
        if neg:
            add(neg, "neg")
        if neg in (None, "not") and rng.random() < 0.35:    # "not very good", "very good"; no "hardly very good"
            add(rng.choice(ADJ_INTENSIFIERS))
        add(adj, "sent")
    elif kind == "adj_a":
        adj = rng.choice(POS_ADJ if polarity_word == "positive" else NEG_ADJ)
        noun = rng.choice(COUNTABLE)
        add(rng.choice(["it was", "this is", "it is", "that was"]))
        if negated:
            add("not", "neg")
        intens = rng.choice(ADJ_INTENSIFIERS) if rng.random() < 0.35 else None
        add(_article(intens or adj))
        if intens:
            add(intens)
        add(adj, "sent")
        add(noun)
    else:
        past, base = rng.choice(POS_VERB if polarity_word == "positive" else NEG_VERB)
        add(rng.choice(["i", "i", "we", "my " + rng.choice(PEOPLE)]))
        neg = rng.choice(["did not", "never", "hardly"]) if negated else None
        intens = rng.choice(VERB_INTENSIFIERS) if neg in (None, "did not") and rng.random() < 0.3 else None
        if neg == "did not":
            add("did")
            add("not", "neg")
            if intens:
                add(intens)
            add(base, "sent")
        else:
            if neg:
                add(neg, "neg")
            if intens:
                add(intens)
            add(past, "sent")
        subj, _ = _subject(rng)
        add(subj)
    flip = {"positive": "negative", "negative": "positive"}
    return Clause(words, roles, flip[polarity_word] if negated else polarity_word)


def neutral_clause(rng):
    t = rng.choice(NEUTRAL_TEMPLATES)
    subj, plural = _subject(rng)
    text = t.format(day=rng.choice(DAYS), person=rng.choice(PEOPLE), period=rng.choice(PERIODS),
                    num=rng.choice(NUMBERS), place=rng.choice(PLACES), subj=" ".join(subj),
                    be="were" if plural else "was", pred=rng.choice(NEUTRAL_PREDICATES))
    ws = text.split(" ")
    assert not (set(ws) & (SENTIMENT_WORDS | NEGATION_WORDS)), text
    return Clause(ws, [None] * len(ws))


def _random_sentiment(rng, polarity=None, p_neg=0.5):
    """A sentiment clause of the given (or random) final polarity, negated with probability p_neg."""
    final = polarity or rng.choice(["positive", "negative"])
    negated = rng.random() < p_neg
    flip = {"positive": "negative", "negative": "positive"}
    return sentiment_clause(rng, flip[final] if negated else final, negated)


def make_example(rng):
    label = rng.choice(["positive", "negative"])
    structure = rng.choices(["single", "but", "although_first", "although_last"], weights=[8, 6, 3, 3])[0]
    decisive = _random_sentiment(rng, label)
    assert decisive.polarity == label
    parts = []   # list of (Clause or connector string, role): role 'decisive', 'overridden', 'neutral', 'conn'
    if structure == "single":
        parts.append((decisive, "decisive"))
    elif structure == "but":
        parts += [(_random_sentiment(rng), "overridden"), (",", "conn"), ("but", "contrast"), (decisive, "decisive")]
    elif structure == "although_first":
        parts += [("although", "contrast"), (_random_sentiment(rng), "overridden"), (",", "conn"),
                  (decisive, "decisive")]
    else:
        parts += [(decisive, "decisive"), (",", "conn"), ("although", "contrast"),
                  (_random_sentiment(rng), "overridden")]
    # neutral distractor clauses before and/or after (at most two, at most one with a contrast)
    if structure == "single":
        n_before, n_after = rng.choice([(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (1, 0), (0, 1)])
    elif structure == "although_last":          # nothing after the although clause (its extent stays clear)
        n_before, n_after = (1 if rng.random() < 0.3 else 0), 0
    else:
        n_before = 1 if structure == "but" and rng.random() < 0.15 else 0
        n_after = 1 if n_before == 0 and rng.random() < 0.3 else 0
    for _ in range(n_before):
        parts = [(neutral_clause(rng), "neutral"), (rng.choice([",", ".", "and"]), "conn")] + parts
    for _ in range(n_after):
        parts += [(rng.choice([",", ".", "and"]), "conn"), (neutral_clause(rng), "neutral")]

    words = [PREFIX]
    evidence, contrast, distractors = [], [], []
    for item, role in parts:
        if isinstance(item, str):
            if role == "contrast":
                contrast.append(len(words))
            words.append(item)
            continue
        for w, r in zip(item.words, item.roles):
            if role == "decisive" and r in ("sent", "neg"):
                evidence.append(len(words))
            elif role == "overridden" and r in ("sent", "neg"):
                distractors.append(len(words))
            words.append(w)
    words += [".", SUFFIX]
    # spans of the words in the text (single spaces, ASCII)
    spans, pos = [], 0
    for w in words:
        spans.append([pos, pos + len(w)])
        pos += len(w) + 1
    text = " ".join(words)
    assert all(text[b:e] == w for (b, e), w in zip(spans, words))
    negated = any(words[i] in NEGATION_WORDS for i in evidence)
    return {
        "text": text,
        "label": label,
        "target": LABELS[label],
        "evidence_words": evidence,
        "evidence": [words[i] for i in evidence],
        "evidence_char_spans": [spans[i] for i in evidence],
        "structure": structure,
        "negated": negated,
        "contrast_words": contrast,
        "distractor_words": distractors,
    }


def make_split(seed, n, exclude=()):
    """n distinct examples (texts not in `exclude`)."""
    rng = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < n:
        ex = make_example(rng)
        if ex["text"] in seen:
            continue
        seen.add(ex["text"])
        out.append(ex)
    return out


def write_jsonl(path, examples, keys=None):
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            obj = {k: ex[k] for k in keys} if keys else ex
            f.write(json.dumps(obj, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    for ex in make_split(a.seed, a.n):
        print(f"{ex['text']!r} -> {ex['target']!r}   evidence {ex['evidence']} at words {ex['evidence_words']}"
              f" ({ex['structure']})")
