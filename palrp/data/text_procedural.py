"""Procedural text data of the embedded default (docs/protocols.md, section 6), in the real formats.

Three deterministic generators, each driven by a seed only (``random.Random(seed)``):

- :func:`imdb_rows`: IMDB-style reviews (``review``, ``sentiment`` in {positive, negative}, the
  Kaggle CSV layout, ``<br /><br />`` breaks included). The label is carried by a known set of
  evidence words (:data:`POSITIVE_WORDS`, :data:`NEGATIVE_WORDS`) placed among neutral filler,
  negations (:data:`NEGATIONS`: "not boring" supports *positive*) and label-neutral distractor
  adjectives (:data:`DISTRACTOR_WORDS`). Every review has a strict majority of supporting
  evidence, so the label is a function of the text; :func:`word_roles` and
  :func:`supporting_words` say which words carry it, so explanations can be checked.
- :func:`arc_items`: ARC-style multiple-choice items in the ``allenai/ai2_arc`` schema
  (``id``, ``question``, ``choices`` = {``text``, ``label``}, ``answerKey``), each answerable from
  one fact of the small world below (:data:`KINDS`, :data:`HABITAT`, :data:`COLOR`).
- :func:`wiki_articles`: Wikipedia-style articles (``id``, ``title``, ``text``) stating those facts;
  the held-out ones stop just before a fact word, which is then the next token to predict.
- :func:`build_word_tokenizer`: the word-level tokenizer of the embedded models.

ARC items are split by *content*: an item's key (question type, subject, set of choices) belongs to
the held-out part when its CRC32 is divisible by :data:`HELD_OUT_MODULUS`, so an item of the
held-out part never appears in the training part, in any order of its choices.
"""
from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path
from typing import Iterable

# --- IMDB-style reviews ----------------------------------------------------------------------

POSITIVE_WORDS = (
    "wonderful", "brilliant", "superb", "delightful", "moving", "masterful",
    "charming", "gripping", "excellent", "stunning", "beautiful", "hilarious",
)
NEGATIVE_WORDS = (
    "awful", "boring", "dreadful", "terrible", "dull", "clumsy",
    "tedious", "horrible", "lifeless", "painful", "mediocre", "pointless",
)
EVIDENCE_WORDS = {"positive": POSITIVE_WORDS, "negative": NEGATIVE_WORDS}
NEGATIONS = ("not", "never", "hardly")
# Adjectives in the same slots as the evidence words, drawn independently of the label.
DISTRACTOR_WORDS = ("long", "loud", "strange", "slow", "quiet", "famous", "simple", "dark", "old",
                    "short")
SENTIMENTS = ("positive", "negative")

# Predicate templates: the slot {w} takes an evidence or distractor adjective, or "<negation> <w>".
_REVIEW_SLOTS = (
    "The acting was {w}.", "I found the story {w}.", "The ending felt {w}.",
    "Overall the film is {w}.", "The music was {w} from start to finish.",
    "The dialogue seemed {w} to me.", "My friends thought it was {w}.",
    "The second half is {w}.", "Honestly the whole thing was {w}.",
    "The camera work looked {w}.",
)
_NAMES = ("Anna", "Marco", "Lena", "Tom", "Sofia", "Peter", "Clara", "David", "Nina", "Oscar",
          "Julia", "Victor")
_PEOPLE = ("teacher", "farmer", "sailor", "doctor", "painter", "soldier", "detective", "widow",
           "student", "baker")
_PLACES = ("a small town", "the capital", "a mining village", "an island", "the old harbour",
           "a border city", "the mountains", "a quiet suburb")
_ROLES = ("hero", "villain", "brother", "mother", "captain", "mayor", "stranger", "best friend")
_WHEN = ("last night", "on a rainy sunday", "with my family", "at the cinema", "on television",
         "twice this week", "after work", "on a long flight")
_FILLER = (
    "The story follows a {person} who lives in {place}.",
    "{name} plays the {role}.",
    "{name} also plays the {role} in a few scenes.",
    "I watched it {when}.",
    "It was released in {year}.",
    "The film runs for about {minutes} minutes.",
    "Most of it was shot in {place}.",
    "The {role} wants to leave {place}.",
    "There is a scene where the {person} meets the {role}.",
    "The director worked with {name} before.",
    "It is based on a book about a {person}.",
)

_WORD_RE = re.compile(r"\w+|[^\w\s]|\n")


def _filler_sentence(rng: random.Random) -> str:
    return rng.choice(_FILLER).format(
        person=rng.choice(_PEOPLE), place=rng.choice(_PLACES), name=rng.choice(_NAMES),
        role=rng.choice(_ROLES), when=rng.choice(_WHEN), year=rng.randint(1950, 2015),
        minutes=rng.choice((85, 90, 95, 100, 110, 120, 130, 150)))


def make_review(rng: random.Random, sentiment: str) -> str:
    """One review whose label is ``sentiment``: 2-4 sentences of supporting evidence, at most one
    negated opposite word (which also supports it), at most one plain opposite word, 0-2
    distractor sentences, 3-8 filler sentences, shuffled, with the odd ``<br /><br />``."""
    if sentiment not in EVIDENCE_WORDS:
        raise ValueError(f"unknown sentiment {sentiment!r}; expected one of {SENTIMENTS}")
    other = "negative" if sentiment == "positive" else "positive"
    slots = []
    for _ in range(rng.randint(2, 4)):
        slots.append(rng.choice(EVIDENCE_WORDS[sentiment]))
    if rng.random() < 0.35:
        slots.append(f"{rng.choice(NEGATIONS)} {rng.choice(EVIDENCE_WORDS[other])}")
    if rng.random() < 0.3:
        slots.append(rng.choice(EVIDENCE_WORDS[other]))
    for _ in range(rng.randint(0, 2)):
        slots.append(rng.choice(DISTRACTOR_WORDS))
    sentences = [rng.choice(_REVIEW_SLOTS).format(w=w) for w in slots]
    sentences += [_filler_sentence(rng) for _ in range(rng.randint(3, 8))]
    rng.shuffle(sentences)
    out = sentences[0]
    for s in sentences[1:]:
        out += (" <br /><br />" if rng.random() < 0.15 else " ") + s
    return out


def imdb_rows(n: int, seed: int) -> list[dict]:
    """``n`` rows ``{"review", "sentiment"}``, labels balanced in random order, deterministic."""
    rng = random.Random(seed)
    labels = [SENTIMENTS[i % 2] for i in range(n)]
    rng.shuffle(labels)
    return [{"review": make_review(rng, lab), "sentiment": lab} for lab in labels]


def words(text: str) -> list[str]:
    """The words of ``text`` as the embedded word-level tokenizer splits them (punctuation and
    newlines are words of their own)."""
    return _WORD_RE.findall(text)


def word_roles(text: str) -> list[tuple[str, str]]:
    """Each word of ``text`` with its role: ``positive``/``negative`` (an evidence word, read
    without its negation), ``negation``, ``distractor`` or ``filler``."""
    out = []
    for w in words(text):
        low = w.lower()
        if low in POSITIVE_WORDS:
            role = "positive"
        elif low in NEGATIVE_WORDS:
            role = "negative"
        elif low in NEGATIONS:
            role = "negation"
        elif low in DISTRACTOR_WORDS:
            role = "distractor"
        else:
            role = "filler"
        out.append((w, role))
    return out


def supporting_words(text: str, sentiment: str) -> list[bool]:
    """Per word of ``text``: does it support ``sentiment``? True for plain evidence words of that
    sentiment, and for a negation together with the opposite evidence word it negates."""
    roles = word_roles(text)
    support = [False] * len(roles)
    for i, (_, role) in enumerate(roles):
        if role not in EVIDENCE_WORDS:
            continue
        negated = i > 0 and roles[i - 1][1] == "negation"
        if (role == sentiment) != negated:
            support[i] = True
            if negated:
                support[i - 1] = True
    return support


def review_score(text: str) -> int:
    """Evidence balance of a review: +1 per word supporting positive, -1 per word supporting
    negative (negations flip the word they precede). Positive reviews score > 0."""
    roles = word_roles(text)
    score = 0
    for i, (_, role) in enumerate(roles):
        if role in EVIDENCE_WORDS:
            sign = 1 if role == "positive" else -1
            if i > 0 and roles[i - 1][1] == "negation":
                sign = -sign
            score += sign
    return score


# --- the small world of the ARC-style items and the articles ---------------------------------

KINDS = {
    "bird": ("heron", "sparrow", "falcon", "owl", "parrot", "pelican", "robin", "crane"),
    "fish": ("salmon", "trout", "tuna", "cod", "pike", "carp", "herring", "perch"),
    "mammal": ("otter", "badger", "beaver", "rabbit", "walrus", "bison", "moose", "lynx"),
    "insect": ("beetle", "ant", "wasp", "moth", "cricket", "locust", "hornet", "mantis"),
    "metal": ("iron", "copper", "silver", "zinc", "nickel", "tin", "cobalt", "lead"),
    "fruit": ("apple", "pear", "plum", "mango", "cherry", "peach", "lemon", "fig"),
    "instrument": ("violin", "flute", "drum", "harp", "trumpet", "cello", "oboe", "banjo"),
    "tool": ("hammer", "saw", "chisel", "wrench", "drill", "shovel", "rake", "pliers"),
}
KIND_OF = {member: kind for kind, members in KINDS.items() for member in members}
ANIMAL_KINDS = ("bird", "fish", "mammal", "insect")
HABITATS = ("marsh", "forest", "river", "ocean", "desert", "mountains", "meadow", "lake")
HABITAT = {
    "heron": "marsh", "sparrow": "meadow", "falcon": "mountains", "owl": "forest",
    "parrot": "forest", "pelican": "ocean", "robin": "meadow", "crane": "marsh",
    "salmon": "river", "trout": "lake", "tuna": "ocean", "cod": "ocean",
    "pike": "lake", "carp": "river", "herring": "ocean", "perch": "lake",
    "otter": "river", "badger": "forest", "beaver": "river", "rabbit": "meadow",
    "walrus": "ocean", "bison": "meadow", "moose": "forest", "lynx": "mountains",
    "beetle": "forest", "ant": "meadow", "wasp": "meadow", "moth": "forest",
    "cricket": "meadow", "locust": "desert", "hornet": "forest", "mantis": "desert",
}
COLORS = ("red", "yellow", "green", "purple", "orange", "brown")
COLOR = {"apple": "red", "pear": "green", "plum": "purple", "mango": "orange",
         "cherry": "red", "peach": "orange", "lemon": "yellow", "fig": "purple"}
USE = {"hammer": "nails", "saw": "wood", "chisel": "stone", "wrench": "bolts",
       "drill": "holes", "shovel": "soil", "rake": "leaves", "pliers": "wire"}
HELD_OUT_MODULUS = 8
QUESTION_TYPES = ("member", "kind", "habitat", "color")
LETTERS = ("A", "B", "C", "D")


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _item_key(qtype: str, subject: str, choices: Iterable[str]) -> str:
    return f"{qtype}|{subject}|{'|'.join(sorted(choices))}"


def is_held_out(qtype: str, subject: str, choices: Iterable[str]) -> bool:
    """Whether the item with this content belongs to the held-out part (module docstring)."""
    return zlib.crc32(_item_key(qtype, subject, choices).encode()) % HELD_OUT_MODULUS == 0


def _draw_item(rng: random.Random) -> tuple[str, str, str, list[str]]:
    """(type, subject, question, [answer, distractor, distractor, distractor])."""
    qtype = rng.choice(QUESTION_TYPES)
    if qtype == "member":
        kind = rng.choice(tuple(KINDS))
        others = rng.sample([k for k in KINDS if k != kind], 3)
        opts = [rng.choice(KINDS[kind])] + [rng.choice(KINDS[k]) for k in others]
        return qtype, kind, f"Which of these is {_article(kind)} {kind}?", opts
    if qtype == "kind":
        entity = rng.choice(tuple(KIND_OF))
        kind = KIND_OF[entity]
        opts = [kind] + rng.sample([k for k in KINDS if k != kind], 3)
        return qtype, entity, f"What kind of thing is the {entity}?", opts
    if qtype == "habitat":
        animal = rng.choice(tuple(HABITAT))
        opts = [HABITAT[animal]] + rng.sample([h for h in HABITATS if h != HABITAT[animal]], 3)
        return qtype, animal, f"Where does the {animal} live?", opts
    fruit = rng.choice(tuple(COLOR))
    opts = [COLOR[fruit]] + rng.sample([c for c in COLORS if c != COLOR[fruit]], 3)
    return qtype, fruit, f"What color is a ripe {fruit}?", opts


def arc_items(n: int, seed: int, held_out: bool) -> list[dict]:
    """``n`` distinct ARC-style items (``allenai/ai2_arc`` schema) of the training part
    (``held_out=False``) or of the held-out part, answer letters uniform over A-D."""
    rng = random.Random(seed)
    items, seen = [], set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"cannot draw {n} distinct ARC-style items of this part")
        qtype, subject, question, opts = _draw_item(rng)
        if is_held_out(qtype, subject, opts) != held_out:
            continue
        order = opts[:]
        rng.shuffle(order)
        key = (question, tuple(order))
        if held_out and key in seen:
            continue
        seen.add(key)
        part = "test" if held_out else "train"
        items.append({
            "id": f"{part}-{seed}-{len(items)}",
            "question": question,
            "choices": {"text": order, "label": list(LETTERS[:len(order)])},
            "answerKey": LETTERS[order.index(opts[0])],
        })
    return items


def _entity_sentences(rng: random.Random, entity: str) -> list[str]:
    kind = KIND_OF[entity]
    facts = [f"The {entity} is {_article(kind)} {kind}."]
    if entity in HABITAT:
        facts.append(f"The {entity} lives in the {HABITAT[entity]}.")
        facts.append(f"Most of the time the {entity} stays near the {HABITAT[entity]}.")
    if entity in COLOR:
        facts.append(f"When it is ripe the {entity} is {COLOR[entity]}.")
    if entity in USE:
        facts.append(f"The {entity} is used for {USE[entity]}.")
    if kind == "metal":
        facts.append(f"The {entity} is mined and then melted.")
    if kind == "instrument":
        facts.append(f"The {entity} is played in many orchestras.")
    peer = rng.choice([m for m in KINDS[kind] if m != entity])
    facts.append(f"The {entity} is often compared with the {peer}, another {kind}.")
    generic = [
        f"People have known the {entity} for a long time.",
        f"The {entity} appears in many old stories.",
        f"Scholars still study the {entity} today.",
        f"The word {entity} is very old.",
        f"Many books describe the {entity} in detail.",
        f"Children often learn about the {entity} at school.",
        f"Some museums keep a picture of the {entity}.",
        f"There are many songs about the {entity}.",
    ]
    return facts + rng.sample(generic, rng.randint(2, 5))


def _is_fact(sentence: str) -> bool:
    """A sentence whose last word is a fact of the world (kind, habitat, colour, use)."""
    return sentence.startswith("The ") and any(
        f" {verb} " in sentence for verb in ("is a", "is an", "lives in the", "is used for")) \
        or sentence.startswith("When it is ripe")


def wiki_articles(n: int, seed: int, cut: bool = False) -> list[dict]:
    """``n`` Wikipedia-style articles (``id``, ``title``, ``text``) about the world's entities
    and kinds, stating its facts with varied order and filler, deterministic for ``seed``.

    With ``cut``, each text stops just before the last word of one of its fact sentences (like
    the 512-token truncation of real articles, which stops mid-sentence), so that the next token
    is a fact: ``... The heron lives in the`` -> ``marsh``; that word is in ``next_word``."""
    rng = random.Random(seed)
    entities = tuple(KIND_OF)
    out = []
    for i in range(n):
        if rng.random() < 0.15:
            kind = rng.choice(tuple(KINDS))
            members = list(KINDS[kind])
            rng.shuffle(members)
            title = kind.capitalize()
            body = [f"This article is about the {kind}."]
            body += [f"The {m} is {_article(kind)} {kind}." for m in members[:rng.randint(3, 8)]]
        else:
            entity = rng.choice(entities)
            title = entity.capitalize()
            body = _entity_sentences(rng, entity)
            head, rest = body[0], body[1:]
            rng.shuffle(rest)
            body = [head] + rest
        next_word = None
        if cut:
            facts = [j for j, s in enumerate(body) if _is_fact(s)]
            stop = rng.choice([j for j in facts if j > 0] or facts)
            *kept, next_word = body[stop].rstrip(".").split(" ")
            body = body[:stop] + [" ".join(kept)]
        paragraphs, start = [], 0
        while start < len(body):
            step = rng.randint(2, 4)
            paragraphs.append(" ".join(body[start:start + step]))
            start += step
        record = {"id": str(i), "title": title, "text": title + "\n\n" + "\n\n".join(paragraphs)}
        if cut:
            record["next_word"] = next_word
        out.append(record)
    return out


# --- the word-level tokenizer of the embedded default ---------------------------------------

RESERVED_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def build_word_tokenizer(texts: list[str], max_length: int):
    """A word-level tokenizer over ``texts`` (words, single punctuation marks and newlines are
    tokens; case kept so that the answer letters A-D are tokens of their own), adding ``<s>`` in
    front like Llama's, wrapped as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\n"), behavior="isolated"),
    ])
    tok.train_from_iterator(texts, WordLevelTrainer(special_tokens=list(RESERVED_TOKENS),
                                                    min_frequency=1, show_progress=False))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", model_max_length=max_length)


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """``save_pretrained``, naming the class ``PreTrainedTokenizerFast`` (known to every
    transformers release the project supports)."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    from palrp.runtime.store import atomic_write_json
    atomic_write_json(cfg_path, cfg)
