"""Noise measures and rules for document text, at pretraining-pipeline standard.

`measure_text` turns a text column into float32 measure columns, one row per text, free of thresholds;
`text_rules` bounds them (RowRules of family "noise") with one of two built-in profiles:

- "long": the published thresholds for web/pretraining documents: Gopher quality and repetition
  (Rae et al. 2021, Table A1), C4's line rules and FineWeb's quality rules, with the semantics of
  datatrove 0.10.1's GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter (defaults) and
  FineWebQualityFilter. Words are English tokens as spaCy's English tokenizer splits them (punctuation
  marks are tokens of their own, "don't" is "do" + "n't", "U.S." and "3.5" stay whole), emulated here.
- "short": reviews, posts, headlines: document-length minimums off, repetition caught by rules that can
  only fire on enough repeated text, character-level repetition for scripts written without spaces.

Everything is computed on whole chunks of the corpus at once: the texts of a chunk are joined by NUL into
one code-point array, and every measure is an array operation over characters, tokens or lines of that
array (token and n-gram identities are 64-bit polynomial hashes). Per-document Python runs only for
duplicate lines and paragraphs of multi-line texts and for Gopher's greedy duplicate n-gram scan of texts
that repeat a 5-gram at all.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from data_checks.expectations import HTML_REGEX
from data_checks.io import DoclifeError
from data_checks.rulebook import QUARANTINE, WARN, RowRule

PROFILES = ("long", "short")

SCRIPTS = ("han", "latin", "kana", "hangul", "cyrillic", "arabic", "greek", "hebrew", "devanagari", "thai", "other")
_SCRIPT_ID = {name: i + 1 for i, name in enumerate(SCRIPTS)}  # 0 = not a letter
_UNSPACED = ("han", "kana", "thai")
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "zh": ("han",), "ja": ("han", "kana"), "ko": ("hangul", "han"), "th": ("thai",),
    "ru": ("cyrillic",), "uk": ("cyrillic",), "bg": ("cyrillic",), "sr": ("cyrillic", "latin"), "kk": ("cyrillic",),
    "ar": ("arabic",), "fa": ("arabic",), "ur": ("arabic",), "el": ("greek",), "he": ("hebrew",),
    "hi": ("devanagari",), "mr": ("devanagari",), "ne": ("devanagari",),
    **{code: ("latin",) for code in "en fr de es it pt nl sv da no nb fi pl cs sk hu ro tr id ms vi ca hr sl et lv lt".split()},
}

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
CHAR_NGRAMS = (3, 5, 10)
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# Sentence-final marks: FineWeb's line-end test and the sentence splitter (spaCy's sentencizer set, common part).
TERMINAL = ".!?。！？｡．﹒﹖﹗‼‽⁇⁈⁉։؟۔܀܁܂।॥။።፧፨᙮᠃᠉"
_C4_END = ".?!\"'"
# spaCy English keeps these abbreviations whole, so their period ends no sentence.
_ABBREVIATIONS = ("Adm Ak Ala Apr Ariz Ark Aug Bros Calif Co Colo Conn Corp Dec Del Dr Feb Fla Ga Gen Gov Ia Id Ill "
                  "Inc Ind Jan Jr Jul Jun Kan Kans Ky La Ltd Mar Mass Md Messrs Mich Minn Miss Mo Mont Mr Mrs Ms Mt "
                  "Neb Nebr Nev Nov Oct Okla Ore Pa Prof Rep Rev Sen Sep Sept St Tenn Va Wash Wis co vs").split()

MEASURES = (
    "chars", "words", "mean_word_length", "hash_per_word", "ellipsis_per_word", "bullet_lines_frac",
    "ellipsis_lines_frac", "alpha_words_frac", "stop_words",
    "dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac",
    *(f"top_{n}gram_char_frac" for n in TOP_NGRAMS), *(f"dup_{n}gram_char_frac" for n in DUP_NGRAMS),
    "c4_kept_lines", "c4_sentences", "c4_lorem_ipsum", "c4_curly_bracket", "c4_javascript_lines", "c4_policy_lines",
    "line_punct_frac", "short_line_frac", "line_dup_char_frac", "newline_per_word",
    "html_residue", "url_char_frac", "email_char_frac", "max_char_run", "max_letter_run", "max_punct_run",
    "symbol_frac", "digit_frac", "han_frac", "latin_frac", "other_letter_frac", "foreign_script_frac",
    *(f"char_dup_{n}gram_frac" for n in CHAR_NGRAMS),
)


@dataclass
class TextQualityConfig:
    """Noise rules on the text column: which built-in profile, and what the corpus is written in."""

    profile: str = "short"
    """long (web/pretraining documents: Gopher, C4 and FineWeb thresholds) | short (reviews, posts, headlines)."""
    languages: list[str] = field(default_factory=lambda: ["zh", "en"])
    """Declared languages (ISO 639-1); letters outside their scripts count towards foreign_script_frac."""
    chunk_rows: int = 200_000
    """Texts measured together in one array pass; bounds memory (about 40 bytes per character)."""

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise DoclifeError(f"params.yaml: validate.text_quality: {message}")

        need(self.profile in PROFILES, f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        self.languages = [str(code).lower() for code in self.languages]
        unknown = [code for code in self.languages if code not in LANGUAGE_SCRIPTS]
        need(not unknown, f"unknown language code(s) {', '.join(unknown)} (known: {', '.join(sorted(LANGUAGE_SCRIPTS))})")
        need(self.chunk_rows >= 1, f"chunk_rows must be >= 1, got {self.chunk_rows}")


# --- character classes ------------------------------------------------------------------------------

SPACE, WORD, ALPHA, DIGIT, PUNCT, SYMBOL_SO, UPPER, LOWER = (1 << i for i in range(8))
_SCRIPT_RANGES = {
    "han": [(0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3100, 0x312F),
            (0x31A0, 0x31BF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)],
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xAA, 0xAA), (0xBA, 0xBA), (0xC0, 0x2AF), (0x1D00, 0x1DBF),
              (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF), (0xAB30, 0xAB6F), (0xFB00, 0xFB06),
              (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)],
    "kana": [(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)],
    "hangul": [(0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xFFA0, 0xFFDC)],
    "cyrillic": [(0x400, 0x52F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)],
    "arabic": [(0x600, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    "greek": [(0x370, 0x3FF), (0x1F00, 0x1FFF)],
    "hebrew": [(0x590, 0x5FF), (0xFB1D, 0xFB4F)],
    "devanagari": [(0x900, 0x97F)],
    "thai": [(0xE00, 0xE7F)],
}


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(flags uint16, script uint8) indexed by code point; planes 4-16 hold no letters and stay 0."""
    limit = 0x40000
    cats = [unicodedata.category(chr(i)) for i in range(limit)]
    bits = {"L": WORD | ALPHA, "N": WORD, "M": WORD, "P": PUNCT}
    flags = np.zeros(0x110000, np.uint16)
    flags[:limit] = [bits.get(c[0], 0) | (DIGIT if c == "Nd" else 0) | (SYMBOL_SO if c == "So" else 0)
                     | (UPPER if c in ("Lu", "Lt") else 0) | (LOWER if c == "Ll" else 0) for c in cats]
    spaces = [i for i in range(0x3001) if chr(i).isspace()] + [0]  # NUL separates the texts of a chunk
    flags[spaces] = SPACE
    script = np.zeros(0x110000, np.uint8)
    letters = (flags & ALPHA) != 0
    script[letters] = _SCRIPT_ID["other"]
    for name, ranges in _SCRIPT_RANGES.items():
        for lo, hi in ranges:
            part = slice(lo, hi + 1)
            script[part] = np.where(letters[part], _SCRIPT_ID[name], script[part])
    return flags, script


def _codes(chars: str) -> np.ndarray:
    return np.array([ord(c) for c in chars], np.uint32)


def _shift(a: np.ndarray, k: int, fill) -> np.ndarray:
    """a moved k places right (k > 0: out[i] = a[i-k]) or left (k < 0), the gap filled with `fill`."""
    out = np.empty_like(a)
    if k > 0:
        out[:k], out[k:] = fill, a[:-k]
    else:
        out[k:], out[:k] = fill, a[-k:]
    return out


_P1, _P2 = np.uint64(0x100000001B3), np.uint64(0x9E3779B97F4A7C15)


def _span_hash(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """64-bit polynomial hash (wrapping arithmetic) of each run values[starts[k]:starts[k+1]]."""
    lengths = np.diff(np.append(starts, values.size))
    offsets = np.arange(values.size) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(max(int(lengths.max(initial=1)), 1), _P1, np.uint64)) // _P1  # P**0, P**1, ...
    with np.errstate(over="ignore"):
        h = np.add.reduceat((values.astype(np.uint64) + np.uint64(1)) * powers[offsets], starts) if starts.size else starts.astype(np.uint64)
        return h * _P2 + lengths.astype(np.uint64)


# --- the measures -----------------------------------------------------------------------------------


def measure_text(text: pd.Series, cfg: TextQualityConfig | None = None) -> pd.DataFrame:
    """The noise measures of every text: one float32 column per name in MEASURES, same index as `text`.

    Null or blank text gives NaN throughout; word measures are NaN on text without words. Ratios are per
    word (spaCy-style English tokens, punctuation included, as Gopher counts them) unless named per char;
    `url_char_frac`, `email_char_frac`, `symbol_frac` and `digit_frac` are shares of the non-space
    characters; script shares are shares of the letters; char_dup_* apply to text mostly written in
    scripts without spaces (Han, kana, Thai) and are NaN elsewhere.
    """
    cfg = cfg or TextQualityConfig()
    values = text.astype(object).where(text.notna(), "").map(str).str.replace("\x00", " ", regex=False).tolist()
    parts = [_measure_chunk(values[i:i + cfg.chunk_rows], cfg) for i in range(0, len(values), cfg.chunk_rows)]
    data = np.concatenate(parts) if parts else np.zeros((0, len(MEASURES)), np.float32)
    out = pd.DataFrame(data, index=text.index, columns=list(MEASURES))
    blank = ~text.notna().to_numpy() | (out["chars"].to_numpy() == 0)
    out.loc[blank, :] = np.nan
    return out


def _measure_chunk(texts: list[str], cfg: TextQualityConfig) -> np.ndarray:
    flags_of, script_of = _tables()
    n_docs = len(texts)
    big = "\x00".join(texts) + "\x00"
    cp = np.frombuffer(big.encode("utf-32-le"), np.uint32)
    lengths = np.array([len(t) for t in texts], np.int64)
    off = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))  # doc k is cp[off[k]:off[k]+lengths[k]]
    doc = np.repeat(np.arange(n_docs), lengths + 1)
    f = flags_of[cp]
    space, word = (f & SPACE) != 0, (f & WORD) != 0
    alpha, digit, punct = (f & ALPHA) != 0, (f & DIGIT) != 0, (f & PUNCT) != 0
    other = ~space & ~word
    m: dict[str, np.ndarray] = {}

    def per_doc(weights: np.ndarray | None = None, index: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(doc if index is None else doc[index], weights=weights, minlength=n_docs)

    chars = per_doc(~space)
    m["chars"] = chars

    # Character composition and scripts.
    with np.errstate(invalid="ignore", divide="ignore"):
        m["symbol_frac"] = per_doc(other) / chars
        m["digit_frac"] = per_doc(digit) / chars
        scr = script_of[cp]
        letters = per_doc(scr > 0)
        han, latin = per_doc(scr == _SCRIPT_ID["han"]), per_doc(scr == _SCRIPT_ID["latin"])
        m["han_frac"], m["latin_frac"] = han / letters, latin / letters
        m["other_letter_frac"] = (letters - han - latin) / letters
        allowed = np.zeros(len(SCRIPTS) + 1, bool)
        allowed[0] = True
        for code in cfg.languages:
            allowed[[_SCRIPT_ID[s] for s in LANGUAGE_SCRIPTS[code]]] = True
        m["foreign_script_frac"] = per_doc(~allowed[scr]) / letters if cfg.languages else np.zeros(n_docs)
        unspaced = per_doc(np.isin(scr, [_SCRIPT_ID[s] for s in _UNSPACED]))
        mostly_unspaced = unspaced * 2 > letters

    # Longest run of one repeated non-space character, over all / letter-digit / other characters.
    run_start = np.flatnonzero(cp != _shift(cp, 1, np.uint32(0xFFFFFFFF)))
    run_len = np.diff(np.append(run_start, cp.size))
    first = run_start[np.searchsorted(run_start, off)]  # every text begins a run (NUL precedes it)
    doc_runs = np.searchsorted(run_start, first)
    for name, cls in (("max_char_run", ~space), ("max_letter_run", word), ("max_punct_run", other)):
        m[name] = np.maximum.reduceat(np.where(cls[run_start], run_len, 0), doc_runs)

    # Regex findings: HTML tags/entities, URLs, e-mail addresses, ellipses, citations.
    m["html_residue"] = _count_matches(_HTML, big, doc, n_docs)
    m["url_char_frac"] = _span_chars(_URL, big, doc, n_docs) / chars
    m["email_char_frac"] = _email_chars(big, cp, f, doc, n_docs) / chars

    tok = _tokens(big, cp, f, space, word, other)
    _word_measures(m, tok, cp, f, doc, off, lengths, n_docs, big)
    _line_measures(m, texts, tok, big, cp, f, space, doc, off, lengths, n_docs)
    _char_ngrams(m, cp, space, doc, mostly_unspaced, n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.column_stack([np.asarray(m[name], np.float64) for name in MEASURES]).astype(np.float32)


_HTML = re.compile(HTML_REGEX)
_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)[^\s\x00<>\"]+[^\s\x00<>\".,;:!?)\]'}]")
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_ELLIPSIS = re.compile(r"\.\.\.|…")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_ABBREV = re.compile(r"(?<![^\W\d_])(?:" + "|".join(_ABBREVIATIONS) + r")(\.)(?![^\W_])")
_C4_FLAGS = re.compile(r"(lorem ipsum)|(javascript)|(\{)|(" + "|".join(POLICY_SUBSTRINGS) + ")", re.IGNORECASE)


def _match_positions(pattern: re.Pattern, big: str) -> tuple[np.ndarray, np.ndarray]:
    spans = [m.span() for m in pattern.finditer(big)]
    if not spans:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = np.array(spans, np.int64)
    return a[:, 0], a[:, 1]


def _count_matches(pattern: re.Pattern, big: str, doc: np.ndarray, n_docs: int) -> np.ndarray:
    s, e = _match_positions(pattern, big)
    inside = doc[s] == doc[np.maximum(e - 1, s)]  # a match must not run across the NUL between texts
    return np.bincount(doc[s[inside]], minlength=n_docs)


def _span_chars(pattern: re.Pattern, big: str, doc: np.ndarray, n_docs: int) -> np.ndarray:
    s, e = _match_positions(pattern, big)
    return np.bincount(doc[s], weights=e - s, minlength=n_docs)


def _email_chars(big: str, cp: np.ndarray, f: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    # Scanning from "@" is far faster than from every letter; the local part is the run of
    # [word . _ + -] characters just before it.
    s, e = _match_positions(_EMAIL_DOMAIN, big)
    if not s.size:
        return np.zeros(n_docs)
    local_ok = ((f & WORD) != 0) | np.isin(cp, _codes("._+-"))
    breaks = np.flatnonzero(~local_ok)
    local_start = breaks[np.searchsorted(breaks, s) - 1] + 1  # s itself is "@", never a local character
    keep = local_start < s
    return np.bincount(doc[s[keep]], weights=(e - local_start)[keep], minlength=n_docs)


@dataclass
class _Tokens:
    start: np.ndarray  # first character of each token (positions in the chunk array)
    length: np.ndarray
    hash: np.ndarray  # uint64 identity of the token text
    doc: np.ndarray
    words: np.ndarray  # bool: has a letter, digit or mark (Gopher's "non-symbol word")
    alpha: np.ndarray  # bool: has a letter
    is_punct: np.ndarray  # bool: every character is punctuation (spaCy's is_punct)
    stop: np.ndarray  # bool: ends a sentence (a one-character sentence mark)


def _tokens(big: str, cp: np.ndarray, f: np.ndarray, space, word, other) -> _Tokens:
    """English tokens the way spaCy's tokenizer splits them, as array operations.

    Word characters (letters, digits, marks) run together; every other non-space character is a token of
    its own, except: a mark between two word characters stays inside the word (3.5, AT&T, google.com)
    unless spaCy's infix rules split it (1-2, well-known, and/or, a,b, lower.Upper); "..." stays whole;
    "n't" and "'s 're 'll 've 'd 'm" are split off; a final period stays after a digit, after a lone
    capital, in dotted abbreviations (U.S., e.g.) and in spaCy's abbreviation list (Mr., Inc.); URLs stay whole.
    """
    alpha, digit = (f & ALPHA) != 0, (f & DIGIT) != 0
    upper, lower = (f & UPPER) != 0, (f & LOWER) != 0
    pw, nw = _shift(word, 1, False), _shift(word, -1, False)
    start = ~space & (_shift(space, 1, True) | other | _shift(other, 1, False))

    def isin(chars: str) -> np.ndarray:
        return np.isin(cp, _codes(chars))

    infix = other & pw & nw
    na = _shift(alpha, -1, False)
    split = ((isin("+-*^") & _shift(digit, 1, False) & _shift(digit, -1, False))
             | ((cp == 46) & _shift(lower, 1, False) & _shift(upper, -1, False))
             | ((cp == 44) & _shift(alpha, 1, False) & na)
             | (isin("-–—~:<>=/") & na) | ((f & SYMBOL_SO) != 0))
    apos = infix & isin("'’")
    # "'s"-style suffixes: the apostrophe opens the suffix token; "n't" moves the split before the n.
    nxt = [_shift(cp, -k, np.uint32(0)) for k in (1, 2, 3)]
    after = [_shift(word, -k, False) for k in (2, 3, 4)]
    suffix = apos & (((np.isin(nxt[0], _codes("sSdDmM"))) & ~after[0])
                     | (np.isin(nxt[0], _codes("rRvVlL")) & np.isin(nxt[1], _codes("eElL")) & ~after[1]))
    nt = apos & np.isin(_shift(cp, 1, np.uint32(0)), _codes("nN")) & np.isin(nxt[0], _codes("tT")) & ~after[0] \
        & _shift(word, 2, False)
    join = infix & ~split & ~(suffix | nt)
    start[join] = False
    start[np.flatnonzero(join | suffix | nt) + 1] = False
    start[nt] = False
    start[np.flatnonzero(nt) - 1] = True
    # Periods that stay on their word: "..." runs, 1990., J., U.S. / e.g., listed abbreviations.
    dot = cp == 46
    p1, p2 = _shift(cp, 1, np.uint32(0)), _shift(cp, 2, np.uint32(0))
    end = dot & ~_shift(word, -1, False) & ~_shift(dot, -1, False)
    keep = (dot & (p1 == 46)) | (end & (p1 != 46) & (_shift(digit, 1, False)
                                                      | (_shift(upper, 1, False) & ~_shift(upper, 2, False) & ~_shift(lower, 2, False))
                                                      | (_shift(alpha, 1, False) & (p2 == 46))
                                                      | (_shift(lower, 1, False) & _shift(space, 2, True))))
    start[keep] = False
    start[[hit.start(1) for hit in _ABBREV.finditer(big)]] = False
    us, ue = _match_positions(_URL, big)
    if us.size:  # URLs: one token each
        cover = np.zeros(cp.size + 1, np.int64)
        np.add.at(cover, us + 1, 1)
        np.add.at(cover, ue, -1)
        start[np.cumsum(cover)[:-1] > 0] = False
        start[us] = True
    start &= ~space

    starts = np.flatnonzero(start)
    nz = np.flatnonzero(~space)
    tok_of = np.cumsum(start)[nz] - 1  # token of each non-space character
    n_tok = starts.size
    length = np.bincount(tok_of, minlength=n_tok)
    compact_starts = np.concatenate(([0], np.cumsum(length)[:-1])) if n_tok else np.zeros(0, np.int64)
    words = np.bincount(tok_of, weights=word[nz], minlength=n_tok) > 0
    alpha_t = np.bincount(tok_of, weights=alpha[nz], minlength=n_tok) > 0
    not_p = np.bincount(tok_of, weights=((f & PUNCT) == 0)[nz], minlength=n_tok)
    stop = (length == 1) & np.isin(cp[starts], _codes(TERMINAL))
    return _Tokens(starts, length, _span_hash(cp[nz], compact_starts), np.zeros(0), words, alpha_t, not_p == 0, stop)


_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _doc_keys(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return g ^ (d.astype(np.uint64) * _GOLD)


def _word_measures(m, tok: _Tokens, cp, f, doc, off, lengths, n_docs: int, big: str) -> None:
    """Gopher quality (word based) and Gopher repetition (n-gram based) measures."""
    d = tok.doc = doc[tok.start]
    n_tok = np.bincount(d, minlength=n_docs)
    n_words = np.bincount(d, weights=tok.words, minlength=n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_tok = np.where(n_tok > 0, 1.0 / np.maximum(n_tok, 1), np.nan)
        m["words"] = n_words
        m["mean_word_length"] = np.bincount(d, weights=tok.length * tok.words, minlength=n_docs) / n_words
        m["hash_per_word"] = np.bincount(doc, weights=cp == 35, minlength=n_docs) * per_tok
        m["ellipsis_per_word"] = _count_matches(_ELLIPSIS, big, doc, n_docs) * per_tok
        m["alpha_words_frac"] = np.bincount(d, weights=tok.alpha, minlength=n_docs) * per_tok
        m["newline_per_word"] = np.bincount(doc, weights=cp == 10, minlength=n_docs) * per_tok
    # Distinct stop words, matched case-sensitively as Gopher does.
    sw = np.concatenate([_codes(w) for w in STOP_WORDS])
    sw_hash = _span_hash(sw, np.concatenate(([0], np.cumsum([len(w) for w in STOP_WORDS])[:-1])))
    hit = np.flatnonzero(np.isin(tok.hash, sw_hash))
    pairs = np.unique(d[hit].astype(np.int64) * 16 + np.searchsorted(np.sort(sw_hash), tok.hash[hit]))
    m["stop_words"] = np.bincount(pairs // 16, minlength=n_docs)

    # n-grams over tokens: g holds the hash of the n-gram starting at each token (shape T-n+1).
    T = d.size
    csum = np.concatenate(([0], np.cumsum(tok.length)))
    first = np.searchsorted(d, np.arange(n_docs))
    Q = np.uint64(0x2545F4914F6CDD1D)
    g = tok.hash.copy()
    candidates = np.zeros(n_docs, bool)
    dup_docs = np.zeros(0, np.int64)
    for n in range(2, max(DUP_NGRAMS[0], *TOP_NGRAMS) + 1):
        with np.errstate(over="ignore"):
            g = g[:-1] * Q + tok.hash[n - 1:]
        idx = np.flatnonzero(d[: T - n + 1] == d[n - 1:])
        if n == 2:  # a text repeats no longer n-gram unless it repeats a bigram
            rep = pd.Series(_doc_keys(g[idx], d[idx])).duplicated().to_numpy()
            candidates[d[idx[rep]]] = True
        if n in TOP_NGRAMS:
            top = np.full(n_docs, np.nan)
            has = n_tok >= n  # no n-grams: not applicable (datatrove skips the test)
            ft = first[has]
            top[has] = csum[ft + n] - csum[ft] + n - 1  # without repeats the top n-gram is the first one
            sel = idx[candidates[d[idx]]]
            if sel.size:
                _top_repeated(top, g[sel], d[sel], sel, csum[sel + n] - csum[sel] + n - 1)
            m[f"top_{n}gram_char_frac"] = top / lengths
        if n == DUP_NGRAMS[0]:
            sel = idx[candidates[d[idx]]]
            rep = pd.Series(_doc_keys(g[sel], d[sel])).duplicated().to_numpy()
            dup_docs = np.unique(d[sel[rep]])
    # Gopher's greedy duplicate n-gram scan, only where some 5-gram repeats.
    dup = np.zeros((len(DUP_NGRAMS), n_docs))
    for k in dup_docs:
        a, b = first[k], first[k] + n_tok[k]
        hashes, lens = tok.hash[a:b].tolist(), tok.length[a:b].tolist()
        for row, n in enumerate(DUP_NGRAMS):
            dup[row, k] = _greedy_duplicate_chars(hashes, lens, n)
    for row, n in enumerate(DUP_NGRAMS):
        m[f"dup_{n}gram_char_frac"] = dup[row] / np.maximum(lengths, 1)


def _top_repeated(top: np.ndarray, keys, docs, pos, clen) -> None:
    """Gopher's top n-gram (most frequent; ties go to the first seen) char count, for texts with repeats."""
    order = np.lexsort((pos, keys, docs))  # by text, n-gram, position
    k_s, d_s = keys[order], docs[order]
    new = np.ones(order.size, bool)
    new[1:] = (k_s[1:] != k_s[:-1]) | (d_s[1:] != d_s[:-1])
    gs = np.flatnonzero(new)
    counts = np.diff(np.append(gs, order.size))
    gdoc, gpos, glen = d_s[gs], pos[order][gs], clen[order][gs]
    best = np.lexsort((gpos, -counts, gdoc))
    firsts = best[np.flatnonzero(np.diff(np.concatenate(([-1], gdoc[best]))) != 0)]
    top[gdoc[firsts]] = glen[firsts] * counts[firsts]


def _greedy_duplicate_chars(hashes: list[int], lens: list[int], n: int) -> int:
    # datatrove's find_all_duplicate: a repeated n-gram adds its characters and the scan jumps past it.
    seen: set[tuple[int, ...]] = set()
    repeated, i = 0, 0
    while i < len(hashes) - n + 1:
        gram = tuple(hashes[i:i + n])
        if gram in seen:
            repeated += sum(lens[i:i + n])
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines breaks on
_PARAGRAPH = re.compile(r"\n{2,}")
_NEWLINES = re.compile(r"\n+")


def _line_measures(m, texts, tok: _Tokens, big, cp, f, space, doc, off, lengths, n_docs: int) -> None:
    """Gopher's bullet/ellipsis line shares, C4's line filter, FineWeb's line rules, duplicate lines."""
    # Lines as str.splitlines() cuts them; the NUL after each text closes its last line. \r\n is one break.
    brk = np.isin(cp, _codes(_BREAKS)) & ~((cp == 10) & (_shift(cp, 1, np.uint32(0)) == 13))
    ends = brk | (cp == 0)
    line_of = np.cumsum(ends) - ends
    n_lines = int(ends.sum())
    line_doc = doc[np.flatnonzero(ends)]
    line_start = np.concatenate(([0], np.flatnonzero(ends)[:-1] + 1))
    nz = np.flatnonzero(~space)
    ln = line_of[nz]
    firsts = np.flatnonzero(np.diff(np.concatenate(([-1], ln))) != 0)
    lasts = np.flatnonzero(np.diff(np.append(ln, n_lines)) != 0)
    first_char = np.zeros(n_lines, np.uint32)
    first_char[ln[firsts]] = cp[nz[firsts]]
    last_pos = np.zeros(n_lines, np.int64)
    last_pos[ln[lasts]] = nz[lasts]
    has_text = np.zeros(n_lines, bool)
    has_text[ln[firsts]] = True
    last_char = np.where(has_text, cp[last_pos], 0)
    three_dots = has_text & (last_char == 46) & (cp[np.maximum(last_pos - 1, 0)] == 46) & (cp[np.maximum(last_pos - 2, 0)] == 46)

    def per_doc(weights) -> np.ndarray:
        return np.bincount(line_doc, weights=weights, minlength=n_docs)

    # Gopher: a text ending in a line break has no empty last line; blank text has none at all.
    ends_in_break = np.zeros(n_docs, bool)
    nonempty = lengths > 0
    ends_in_break[nonempty] = brk[off[nonempty] + lengths[nonempty] - 1]
    gopher_lines = np.bincount(doc, weights=brk, minlength=n_docs) + 1 - ends_in_break
    with np.errstate(invalid="ignore", divide="ignore"):
        m["bullet_lines_frac"] = per_doc(np.isin(first_char, _codes("•-"))) / gopher_lines
        m["ellipsis_lines_frac"] = per_doc((last_char == 0x2026) | three_dots) / gopher_lines

    # C4: which lines survive, and what the surviving ones hold.
    words_in_line = np.bincount(line_of[~space & _shift(space, 1, True)], minlength=n_lines)
    chunk_s = np.flatnonzero(~space & _shift(space, 1, True))
    chunk_e = np.flatnonzero(~space & _shift(space, -1, True))
    too_long = np.zeros(n_lines, bool)
    too_long[line_of[chunk_s[chunk_e - chunk_s + 1 > 1000]]] = True
    terminal = np.isin(last_char, _codes(_C4_END)) & ~three_dots
    for hit in _CITATION.finditer(big):  # rare: decide the line end again without the citation
        k = line_of[hit.start()]
        line = _CITATION.sub("", big[line_start[k]:last_pos[k] + 1].strip())
        terminal[k] = line.endswith(tuple(_C4_END)) and not line.endswith("...")
    flag = np.zeros((4, n_lines), bool)  # lorem ipsum, javascript, curly bracket, policy
    for hit in _C4_FLAGS.finditer(big):
        flag[hit.lastindex - 1, line_of[hit.start()]] = True
    lorem, js, curly, policy = flag
    eligible = ~too_long & terminal & (words_in_line >= 3)
    kept = eligible & ~lorem & ~js & ~curly & ~policy
    m["c4_kept_lines"] = per_doc(kept)
    m["c4_sentences"] = per_doc(kept * _sentences_per_line(tok, line_of, n_lines))
    m["c4_lorem_ipsum"] = per_doc(eligible & lorem) > 0
    m["c4_curly_bracket"] = per_doc(eligible & ~lorem & ~js & curly) > 0
    m["c4_javascript_lines"] = per_doc(eligible & ~lorem & js)
    m["c4_policy_lines"] = per_doc(eligible & ~lorem & ~js & ~curly & policy)

    # FineWeb on one-line texts; duplicates of lines and paragraphs are all 0 there.
    last = np.where(nonempty, cp[np.maximum(off + lengths - 1, 0)], 0)
    m["line_punct_frac"] = np.isin(last, _codes(TERMINAL)).astype(float)
    m["short_line_frac"] = (lengths <= 30).astype(float)
    for name in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac", "line_dup_char_frac"):
        m[name] = np.zeros(n_docs)
    multi = np.flatnonzero(np.bincount(doc, weights=cp == 10, minlength=n_docs) > 0)
    for k in multi:
        for name, value in _multiline(texts[k]).items():
            m[name][k] = value


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def _multiline(text: str) -> dict[str, float]:
    """Line and paragraph duplicates (Gopher) and FineWeb's line rules for a text with line breaks."""
    paragraphs = _PARAGRAPH.split(text.strip())
    lines = _NEWLINES.split(text)
    para_dups, para_chars = _find_duplicates(paragraphs)
    line_dups, line_chars = _find_duplicates(lines)
    fw = [line for line in text.split("\n") if line.strip()]
    out = {"dup_para_frac": para_dups / len(paragraphs), "dup_para_char_frac": para_chars / len(text),
           "dup_line_frac": line_dups / len(lines), "dup_line_char_frac": line_chars / len(text)}
    if fw:
        stop = tuple(TERMINAL)
        out["line_punct_frac"] = sum(line.endswith(stop) for line in fw) / len(fw)
        out["short_line_frac"] = sum(len(line) <= 30 for line in fw) / len(fw)
        out["line_dup_char_frac"] = _find_duplicates(fw)[1] / max(len(text.replace("\n", "")), 1)
    return out


def _sentences_per_line(tok: _Tokens, line_of: np.ndarray, n_lines: int) -> np.ndarray:
    """Sentences per line as spaCy's sentencizer counts them: after a sentence mark, the next token that is
    not punctuation opens a new sentence."""
    t_line = line_of[tok.start]
    counts = (np.bincount(t_line, minlength=n_lines) > 0).astype(np.int64)
    q = np.flatnonzero(~tok.is_punct)
    if not q.size:
        return counts
    marks = np.concatenate(([0], np.cumsum(tok.stop)))  # marks before token i: marks[i]
    line_first = np.searchsorted(t_line, t_line[q])
    since = np.maximum(np.concatenate(([0], q[:-1] + 1)), line_first)
    opens = marks[q] - marks[since] > 0
    return counts + np.bincount(t_line[q[opens]], minlength=n_lines)


def _char_ngrams(m, cp, space, doc, mostly_unspaced, n_docs: int) -> None:
    """Share of characters inside a repeat of an earlier character n-gram, for unspaced scripts."""
    sel = np.flatnonzero(~space & mostly_unspaced[doc])
    x, d = cp[sel].astype(np.uint64) + np.uint64(1), doc[sel]
    chars = np.bincount(d, minlength=n_docs)
    g = x.copy()
    for n in range(2, max(CHAR_NGRAMS) + 1):
        with np.errstate(over="ignore"):
            g = g[:-1] * _P1 + x[n - 1:]
        if n not in CHAR_NGRAMS:
            continue
        idx = np.flatnonzero(d[: d.size - n + 1] == d[n - 1:])
        rep = idx[pd.Series(_doc_keys(g[idx], d[idx])).duplicated().to_numpy()]
        cover = np.zeros(d.size + 1, np.int64)  # +1 where a repeat starts, -1 where it ends
        np.add.at(cover, rep, 1)
        np.add.at(cover, rep + n, -1)
        covered = np.cumsum(cover)[:-1] > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.bincount(d, weights=covered, minlength=n_docs) / chars
        m[f"char_dup_{n}gram_frac"] = np.where(mostly_unspaced, frac, np.nan)
