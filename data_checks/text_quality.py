"""Noise measures and rules for document text, at pretraining-pipeline standard.

`measure_text` turns a text column into float32 measure columns, one row per text, free of thresholds;
`text_rules` bounds them (RowRules of family "noise") with one of two built-in profiles:

- "long": the published thresholds for web/pretraining documents: Gopher quality and repetition
  (Rae et al. 2021, Table A1), C4's line rules and FineWeb's quality rules, with the semantics of
  datatrove 0.10.1's GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter (defaults) and
  FineWebQualityFilter. What those filters drop as a document is quarantined; C4's JavaScript and policy
  rules, which there remove a line and keep the document, only warn (doclife does not cut rows). Words
  are English tokens as spaCy's English tokenizer splits them (punctuation marks are tokens of their own,
  "don't" is "do" + "n't", "U.S." and "3.5" stay whole), emulated here.
- "short": reviews, posts, headlines: document-length and English-only rules off; repetition measured
  on characters (letters and digits, spaces and punctuation left out), so it needs no word boundaries
  and catches "好评好评好评..." as well as a pasted-over English sentence.

Everything is computed on whole chunks of the corpus at once: the texts of a chunk are joined by NUL into
one code-point array, and every measure is an array operation over characters, tokens or lines of that
array (token and n-gram identities are 64-bit polynomial hashes). Per-document Python runs only for
duplicate lines and paragraphs of multi-line texts and for Gopher's greedy duplicate n-gram scan of texts
that repeat a 5-gram at all. The character classes, hashes and English tokens these measures are built
from live in `text_arrays`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data_checks.config import need
from data_checks.rulebook import QUARANTINE, WARN, RowRule
from data_checks.text_arrays import (
    DIGIT, HASH_BASE, SCRIPT_ID, SCRIPTS, SPACE, TERMINAL, WORD, Tokens, char_tables, code_points, doc_keys,
    english_tokens, find_all, member_table, repeats, segment_sums, shifted, span_hash,
)

PROFILES = ("long", "short")

LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "zh": ("han",), "ja": ("han", "kana"), "ko": ("hangul", "han"), "th": ("thai",),
    "ru": ("cyrillic",), "uk": ("cyrillic",), "bg": ("cyrillic",), "sr": ("cyrillic", "latin"), "kk": ("cyrillic",),
    "ar": ("arabic",), "fa": ("arabic",), "ur": ("arabic",), "el": ("greek",), "he": ("hebrew",),
    "hi": ("devanagari",), "mr": ("devanagari",), "ne": ("devanagari",),
    **{code: ("latin",) for code in "en fr de es it pt nl sv da no nb fi pl cs sk hu ro tr id ms vi ca hr sl et lv lt".split()},
}

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
CHAR_NGRAMS = (5, 10)
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_C4_END = ".?!\"'"

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


# Tags (<div>, </p>, <br/>, <span class="x">) and character entities (&nbsp; &amp; &#39; &#x27;).
# A letter must follow "<" so that "a < b" or "<3" stay legal text.
HTML_REGEX = r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z]{2,8}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});"


@dataclass
class TextQualityConfig:
    """Noise rules on the text column: which built-in profile, and what the corpus is written in."""

    profile: str = "short"
    """long (web/pretraining documents: Gopher, C4 and FineWeb thresholds) | short (reviews, posts, headlines)."""
    languages: list[str] = field(default_factory=lambda: ["zh", "en"])
    """Declared languages (ISO 639-1); letters outside their scripts count towards foreign_script_frac."""
    chunk_chars: int = 300_000
    """Characters measured together in one array pass (whole texts, at least one per pass); passes that
    fit the CPU caches run about twice as fast as huge ones, and memory stays near 60 bytes a character."""

    def __post_init__(self) -> None:
        section = "validate.text_quality"
        need(self.profile in PROFILES, section, f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        self.languages = [str(code).lower() for code in self.languages]
        unknown = [code for code in self.languages if code not in LANGUAGE_SCRIPTS]
        need(not unknown, section, f"unknown language code(s) {', '.join(unknown)} (known: {', '.join(sorted(LANGUAGE_SCRIPTS))})")
        need(self.chunk_chars >= 1, section, f"chunk_chars must be >= 1, got {self.chunk_chars}")


# --- the measures -----------------------------------------------------------------------------------


def measure_text(text: pd.Series, cfg: TextQualityConfig | None = None) -> pd.DataFrame:
    """The noise measures of every text: one float32 column per name in MEASURES, same index as `text`.

    Null text gives NaN throughout (nothing to measure: text_missing's finding). Empty or whitespace-only
    text is measured like any other: no characters, no words, no C4 sentences, no line ending in
    punctuation, so the long profile's word-count, stop-word, C4-sentence and FineWeb line rules reject it
    as datatrove's filters drop it (validation reports such a row as text_blank alone). Word measures are
    NaN on text without words. Ratios are per word (spaCy-style English tokens, punctuation included, as
    Gopher counts them) unless named per char;
    `url_char_frac`, `email_char_frac`, `symbol_frac` and `digit_frac` are shares of the non-space
    characters; script shares are shares of the letters; char_dup_* are shares of the letters and digits
    (NaN on text without any).
    """
    cfg = cfg or TextQualityConfig()
    # NUL separates the texts of a chunk, so a NUL inside a text becomes a space.
    values = [t.replace("\x00", " ") if "\x00" in t else t
              for t in (v if isinstance(v, str) else "" if v is None or v != v else str(v) for v in text.tolist())]
    # Chunks of whole texts, cut after the text that crosses each multiple of chunk_chars.
    ends = np.cumsum(np.fromiter(map(len, values), np.int64, len(values)) + 1)
    marks = np.arange(cfg.chunk_chars, ends[-1] if len(values) else 0, cfg.chunk_chars)
    cuts = np.unique(np.searchsorted(ends, marks, side="right"))
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(values)], len(values)]
    parts = [_measure_chunk(values[a:b], cfg) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    data = np.concatenate(parts) if parts else np.zeros((0, len(MEASURES)), np.float32)
    out = pd.DataFrame(data, index=text.index, columns=list(MEASURES))
    out.loc[~text.notna().to_numpy(), :] = np.nan
    return out


def _measure_chunk(texts: list[str], cfg: TextQualityConfig) -> np.ndarray:
    flags_of, script_of = char_tables()
    n_docs = len(texts)
    big = "\x00" + "\x00".join(texts) + "\x00"
    cp = np.frombuffer(big.encode("utf-32-le"), np.uint32)
    lengths = np.fromiter(map(len, texts), np.int64, n_docs)
    off = np.concatenate(([1], np.cumsum(lengths + 1)[:-1] + 1))  # doc k is cp[off[k]:off[k]+lengths[k]]
    doc = np.repeat(np.arange(-1, n_docs, dtype=np.int32), np.concatenate(([1], lengths + 1)))
    doc[0] = 0  # the leading NUL counts with the first text (it is a space, so it changes no measure)
    f = flags_of[cp]
    space, word = (f & SPACE) != 0, (f & WORD) != 0
    digit = (f & DIGIT) != 0
    other = ~space & ~word
    m: dict[str, np.ndarray] = {}

    def per_doc(values: np.ndarray) -> np.ndarray:
        return segment_sums(values, off)

    chars = per_doc(~space)
    m["chars"] = chars

    # Character composition and scripts.
    with np.errstate(invalid="ignore", divide="ignore"):
        m["symbol_frac"] = per_doc(other) / chars
        m["digit_frac"] = per_doc(digit) / chars
        scr = script_of[cp]
        letters = per_doc(scr > 0)
        han, latin = per_doc(scr == SCRIPT_ID["han"]), per_doc(scr == SCRIPT_ID["latin"])
        m["han_frac"], m["latin_frac"] = han / letters, latin / letters
        m["other_letter_frac"] = (letters - han - latin) / letters
        allowed = np.zeros(len(SCRIPTS) + 1, bool)
        allowed[0] = True
        for code in cfg.languages:
            allowed[[SCRIPT_ID[s] for s in LANGUAGE_SCRIPTS[code]]] = True
        m["foreign_script_frac"] = per_doc(~allowed[scr]) / letters if cfg.languages else np.zeros(n_docs)

    # Longest run of one repeated non-space character, over all / letter-digit / other characters.
    run_start = np.flatnonzero(cp != shifted(cp, 1, np.uint32(0xFFFFFFFF)))
    run_len = np.diff(np.append(run_start, cp.size)).astype(np.int32)
    run_doc = doc[run_start]
    doc_runs = np.minimum(np.searchsorted(run_doc, np.arange(n_docs)), run_start.size - 1)
    has_runs = run_doc[doc_runs] == np.arange(n_docs)  # blank texts may start none
    for name, cls in (("max_char_run", ~space), ("max_letter_run", word), ("max_punct_run", other)):
        m[name] = np.where(has_runs, np.maximum.reduceat(np.where(cls[run_start], run_len, 0), doc_runs), 0)

    # Regex findings: HTML tags/entities, URLs, e-mail addresses, ellipses, citations.
    m["html_residue"] = _count_matches(_HTML, big, doc, n_docs)
    urls = _url_spans(big)
    with np.errstate(invalid="ignore", divide="ignore"):
        m["url_char_frac"] = np.bincount(doc[urls[0]], weights=urls[1] - urls[0], minlength=n_docs) / chars
        m["email_char_frac"] = _email_chars(big, cp, f, doc, n_docs) / chars

    tok = english_tokens(big, cp, f, space, word, other, urls)
    _word_measures(m, tok, cp, doc, off, lengths, n_docs, big)
    _line_measures(m, texts, tok, big, cp, f, space, doc, off, lengths, n_docs)
    _char_ngrams(m, cp, word, doc, per_doc(word) > 0, n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.column_stack([np.asarray(m[name], np.float64) for name in MEASURES]).astype(np.float32)


_HTML = re.compile(HTML_REGEX)
_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)[^\s\x00<>\"]+[^\s\x00<>\".,;:!?)\]'}]")
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


def _url_spans(big: str) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of URLs, matched only where "://" or "www." occurs."""
    spans = {}
    for at in find_all(big, "://").tolist():
        for back in (5, 4, 3):
            hit = _URL.match(big, max(at - back, 0))
            if hit and hit.start() not in spans:
                spans[hit.start()] = hit.end()
                break
    found = np.array(sorted(spans), np.int64)
    found_end = np.array([spans[k] for k in found.tolist()], np.int64)
    for at in find_all(big, "www.").tolist():
        k = np.searchsorted(found, at, side="right") - 1
        if k >= 0 and found_end[k] > at:  # inside an http(s):// URL already
            continue
        hit = _URL.match(big, at)
        if hit:
            spans[at] = hit.end()
    starts = np.array(sorted(spans), np.int64)
    return starts, np.array([spans[k] for k in starts.tolist()], np.int64)


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


def _email_chars(big: str, cp: np.ndarray, f: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    # Scanning from "@" is far faster than from every letter; the local part is the run of
    # [word . _ + -] characters just before it.
    s, e = _match_positions(_EMAIL_DOMAIN, big)
    if not s.size:
        return np.zeros(n_docs)
    local_ok = ((f & WORD) != 0) | member_table("._+-")[cp]
    breaks = np.flatnonzero(~local_ok)
    local_start = breaks[np.searchsorted(breaks, s) - 1] + 1  # s itself is "@", never a local character
    keep = local_start < s
    return np.bincount(doc[s[keep]], weights=(e - local_start)[keep], minlength=n_docs)


def _word_measures(m, tok: Tokens, cp, doc, off, lengths, n_docs: int, big: str) -> None:
    """Gopher quality (word based) and Gopher repetition (n-gram based) measures."""
    d = tok.doc = doc[tok.start]
    n_tok = np.bincount(d, minlength=n_docs)
    n_words = np.bincount(d, weights=tok.words, minlength=n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_tok = np.where(n_tok > 0, 1.0 / np.maximum(n_tok, 1), np.nan)
        m["words"] = n_words
        m["mean_word_length"] = np.bincount(d, weights=tok.length * tok.words, minlength=n_docs) / n_words
        m["hash_per_word"] = segment_sums(cp == 35, off) * per_tok
        ellipses = np.concatenate((find_all(big, "...", step=3), find_all(big, "…")))  # as str.count counts
        m["ellipsis_per_word"] = np.bincount(doc[ellipses], minlength=n_docs) * per_tok
        m["alpha_words_frac"] = np.bincount(d, weights=tok.alpha, minlength=n_docs) * per_tok
        m["newline_per_word"] = segment_sums(cp == 10, off) * per_tok
    # Distinct stop words, matched case-sensitively as Gopher does.
    sw = np.concatenate([code_points(w) for w in STOP_WORDS])
    sw_hash = span_hash(sw, np.concatenate(([0], np.cumsum([len(w) for w in STOP_WORDS])[:-1])))
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
        size = max(T - n + 1, 0)
        idx = np.flatnonzero(d[:size] == d[n - 1:n - 1 + size])
        if n == 2:  # a text repeats no longer n-gram unless it repeats a bigram
            rep = repeats(doc_keys(g[idx], d[idx]))
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
            rep = repeats(doc_keys(g[sel], d[sel]))
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
    # factorize numbers the (text, n-gram) groups in order of first occurrence, so no sort is needed.
    codes = pd.factorize(doc_keys(keys, docs))[0]
    counts = np.bincount(codes)
    first = np.flatnonzero(codes > np.maximum.accumulate(np.concatenate(([-1], codes[:-1]))))
    gdoc = docs[first]  # ascending: texts come in order
    seg = np.flatnonzero(np.diff(np.concatenate(([-1], gdoc))) != 0)
    # Most frequent wins, the earlier first occurrence breaks ties: maximise count * 2**40 - position.
    score = counts.astype(np.int64) * (1 << 40) - pos[first]
    best = score == np.repeat(np.maximum.reduceat(score, seg), np.diff(np.append(seg, score.size)))
    top[gdoc[best]] = clen[first[best]] * counts[best]


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


def _line_measures(m, texts, tok: Tokens, big, cp, f, space, doc, off, lengths, n_docs: int) -> None:
    """Gopher's bullet/ellipsis line shares, C4's line filter, FineWeb's line rules, duplicate lines."""
    # Lines as str.splitlines() cuts them; the NUL after each text closes its last line. \r\n is one break.
    brk = member_table(_BREAKS)[cp]
    brk[np.flatnonzero(cp[:-1] == 13) + 1] &= cp[np.flatnonzero(cp[:-1] == 13) + 1] != 10
    line_end = np.flatnonzero(brk | (cp == 0))  # position of the break (or NUL) closing each line

    ends = np.zeros(cp.size, np.int32)
    ends[line_end] = 1
    line_index = np.cumsum(ends, dtype=np.int32) - ends  # line of every character

    def line_of(positions: np.ndarray) -> np.ndarray:
        return line_index[positions]

    n_lines = line_end.size
    line_doc = doc[line_end]
    line_start = np.concatenate(([0], line_end[:-1] + 1))
    nz = tok.nonspace
    first_pos = nz[np.minimum(np.searchsorted(nz, line_start), nz.size - 1)] if nz.size else np.zeros(n_lines, np.int64)
    has_text = (first_pos >= line_start) & (first_pos < line_end) if nz.size else np.zeros(n_lines, bool)
    last_pos = nz[np.maximum(np.searchsorted(nz, line_end) - 1, 0)] if nz.size else np.zeros(n_lines, np.int64)
    first_char = np.where(has_text, cp[first_pos], 0)
    last_char = np.where(has_text, cp[last_pos], 0)
    three_dots = has_text & (last_char == 46) & (cp[np.maximum(last_pos - 1, 0)] == 46) & (cp[np.maximum(last_pos - 2, 0)] == 46)

    def per_doc(weights) -> np.ndarray:
        return np.bincount(line_doc, weights=weights, minlength=n_docs)

    # Gopher: a text ending in a line break has no empty last line; blank text has none at all.
    ends_in_break = np.zeros(n_docs, bool)
    nonempty = lengths > 0
    ends_in_break[nonempty] = brk[off[nonempty] + lengths[nonempty] - 1]
    gopher_lines = segment_sums(brk, off) + 1 - ends_in_break
    with np.errstate(invalid="ignore", divide="ignore"):
        m["bullet_lines_frac"] = per_doc(member_table("•-")[first_char]) / gopher_lines
        m["ellipsis_lines_frac"] = per_doc((last_char == 0x2026) | three_dots) / gopher_lines

    # C4: which lines survive, and what the surviving ones hold.
    chunk_s = np.flatnonzero(~space & shifted(space, 1, True))
    chunk_e = np.flatnonzero(~space & shifted(space, -1, True))
    words_in_line = np.bincount(line_of(chunk_s), minlength=n_lines)
    too_long = np.zeros(n_lines, bool)
    too_long[line_of(chunk_s[chunk_e - chunk_s + 1 > 1000])] = True
    terminal = member_table(_C4_END)[last_char] & ~three_dots
    for hit in _CITATION.finditer(big):  # rare: decide the line end again without the citation
        k = line_of(hit.start())
        line = _CITATION.sub("", big[line_start[k]:last_pos[k] + 1].strip())
        terminal[k] = line.endswith(tuple(_C4_END)) and not line.endswith("...")
    flag = np.zeros((4, n_lines), bool)  # lorem ipsum, javascript, curly bracket, policy
    lowered = big.lower()
    if len(lowered) != len(big):  # a few characters lower-case to two; keep positions exact
        lowered = big
    for row, needles in enumerate((("lorem ipsum",), ("javascript",), ("{",), POLICY_SUBSTRINGS)):
        for needle in needles:
            flag[row, line_of(find_all(lowered, needle))] = True
    lorem, js, curly, policy = flag
    eligible = ~too_long & terminal & (words_in_line >= 3)
    kept = eligible & ~lorem & ~js & ~curly & ~policy
    m["c4_kept_lines"] = per_doc(kept)
    m["c4_sentences"] = per_doc(kept * _sentences_per_line(tok, line_of(tok.start), n_lines))
    m["c4_lorem_ipsum"] = per_doc(eligible & lorem) > 0
    m["c4_curly_bracket"] = per_doc(eligible & ~lorem & ~js & curly) > 0
    m["c4_javascript_lines"] = per_doc(eligible & ~lorem & js)
    m["c4_policy_lines"] = per_doc(eligible & ~lorem & ~js & ~curly & policy)

    # FineWeb on one-line texts; duplicates of lines and paragraphs are all 0 there.
    last = np.where(nonempty, cp[np.maximum(off + lengths - 1, 0)], 0)
    m["line_punct_frac"] = member_table(TERMINAL)[last].astype(float)
    m["short_line_frac"] = (lengths <= 30).astype(float)
    for name in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac", "line_dup_char_frac"):
        m[name] = np.zeros(n_docs)
    multi = np.flatnonzero(segment_sums(cp == 10, off) > 0)
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


def _sentences_per_line(tok: Tokens, t_line: np.ndarray, n_lines: int) -> np.ndarray:
    """Sentences per line as spaCy's sentencizer counts them: after a sentence mark, the next token that is
    not punctuation opens a new sentence."""
    counts = (np.bincount(t_line, minlength=n_lines) > 0).astype(np.int64)
    q = np.flatnonzero(~tok.is_punct)
    if not q.size:
        return counts
    marks = np.concatenate(([0], np.cumsum(tok.stop)))  # marks before token i: marks[i]
    line_first = np.searchsorted(t_line, t_line[q])
    since = np.maximum(np.concatenate(([0], q[:-1] + 1)), line_first)
    opens = marks[q] - marks[since] > 0
    return counts + np.bincount(t_line[q[opens]], minlength=n_lines)


def _char_ngrams(m, cp, word, doc, has_word, n_docs: int) -> None:
    """Share of the letters/digits inside a repeat of an earlier n-gram of them; works without word
    boundaries, so it catches repetition in Chinese as well as in English.

    Spaces and punctuation are left out of the sequence ("好评！好评！好评！" repeats "好评"); runs of
    punctuation are the char-spam measures' business."""
    todo = has_word.copy()
    for n in CHAR_NGRAMS:  # ascending: a text that repeats no n-gram repeats no longer one either
        frac = np.where(has_word, 0.0, np.nan)
        sel = np.flatnonzero(word & todo[doc])
        size = sel.size - n + 1
        if size > 0:
            x, d = cp[sel].astype(np.uint64) + np.uint64(1), doc[sel]
            g = x[:size].copy()
            with np.errstate(over="ignore"):
                for t in range(1, n):
                    g = g * HASH_BASE + x[t:t + size]
            idx = np.flatnonzero(d[:size] == d[n - 1:])
            rep = idx[repeats(doc_keys(g[idx], d[idx]))]
            # +1 where a repeat starts, -1 where it ends: positive running sums are covered characters.
            cover = np.bincount(rep, minlength=sel.size + 1) - np.bincount(rep + n, minlength=sel.size + 1)
            covered = np.flatnonzero(np.cumsum(cover[:-1]) > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                part = np.bincount(d[covered], minlength=n_docs) / np.bincount(d, minlength=n_docs)
            frac[todo] = part[todo]
            todo[:] = False
            todo[d[rep]] = True
        m[f"char_dup_{n}gram_frac"] = frac


# --- the rules --------------------------------------------------------------------------------------

_Spec = tuple[float | None, float | None, str]  # (min_value, max_value, severity)
_OFF = "off"
# name -> (column, description, long profile, short profile). A rule a profile does not use is "off" there
# (with the other profile's bounds), so params.yaml can still switch it on.
_RULES: dict[str, tuple[str, str, _Spec, _Spec | None]] = {
    "gopher_q_word_count": ("words", "text has {min_value} to {max_value} words", (50, 100_000, QUARANTINE), None),
    "gopher_q_mean_word_length": ("mean_word_length", "mean word length is {min_value} to {max_value} characters",
                                  (3, 10, QUARANTINE), None),
    "gopher_q_hash_ratio": ("hash_per_word", "at most {max_value} '#' per word", (None, 0.1, QUARANTINE), None),
    "gopher_q_ellipsis_ratio": ("ellipsis_per_word", "at most {max_value} ellipses per word", (None, 0.1, QUARANTINE), None),
    "gopher_q_bullet_lines": ("bullet_lines_frac", "at most {max_value} of the lines start with a bullet",
                              (None, 0.9, QUARANTINE), None),
    "gopher_q_ellipsis_lines": ("ellipsis_lines_frac", "at most {max_value} of the lines end with an ellipsis",
                                (None, 0.3, QUARANTINE), None),
    "gopher_q_alpha_words": ("alpha_words_frac", "at least {min_value} of the words contain a letter",
                             (0.8, None, QUARANTINE), None),
    "gopher_q_stop_words": ("stop_words", "at least {min_value} distinct English stop words", (2, None, QUARANTINE), None),
    # Line and paragraph repeats only exist in multi-line text, so the short profile keeps them.
    "gopher_rep_dup_lines": ("dup_line_frac", "at most {max_value} of the lines are repeats",
                             (None, 0.3, QUARANTINE), (None, 0.3, QUARANTINE)),
    "gopher_rep_dup_paragraphs": ("dup_para_frac", "at most {max_value} of the paragraphs are repeats",
                                  (None, 0.3, QUARANTINE), (None, 0.3, QUARANTINE)),
    "gopher_rep_dup_line_chars": ("dup_line_char_frac", "at most {max_value} of the characters are in repeated lines",
                                  (None, 0.2, QUARANTINE), (None, 0.2, QUARANTINE)),
    "gopher_rep_dup_paragraph_chars": ("dup_para_char_frac",
                                       "at most {max_value} of the characters are in repeated paragraphs",
                                       (None, 0.2, QUARANTINE), (None, 0.2, QUARANTINE)),
    **{f"gopher_rep_top_{n}gram": (f"top_{n}gram_char_frac",
                                   f"the most frequent word {n}-gram covers at most {{max_value}} of the characters",
                                   (None, limit, QUARANTINE), None)
       for n, limit in zip(TOP_NGRAMS, (0.20, 0.18, 0.16))},
    **{f"gopher_rep_dup_{n}gram": (f"dup_{n}gram_char_frac",
                                   f"repeated word {n}-grams cover at most {{max_value}} of the characters",
                                   (None, limit, QUARANTINE), None)
       for n, limit in zip(DUP_NGRAMS, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10))},
    # C4 and FineWeb as published: a rule by which the pipeline drops the whole document quarantines it here;
    # C4's JavaScript and policy rules only remove lines there, and doclife keeps rows whole, so they warn.
    "c4_sentences": ("c4_sentences", "at least {min_value} sentences in lines C4 keeps", (5, None, QUARANTINE), None),
    "c4_lorem_ipsum": ("c4_lorem_ipsum", "no 'lorem ipsum' placeholder text", (None, 0, QUARANTINE), None),
    "c4_curly_bracket": ("c4_curly_bracket", "no curly bracket (code) in a sentence line", (None, 0, QUARANTINE), None),
    "c4_javascript_lines": ("c4_javascript_lines", "at most {max_value} lines mention javascript", (None, 0, WARN), None),
    "c4_policy_lines": ("c4_policy_lines", "at most {max_value} cookie/terms-of-use/privacy lines", (None, 0, WARN), None),
    "fineweb_line_punct": ("line_punct_frac", "at least {min_value} of the lines end in sentence punctuation",
                           (0.12, None, QUARANTINE), None),
    "fineweb_short_lines": ("short_line_frac", "at most {max_value} of the lines have 30 characters or fewer",
                            (None, 0.67, QUARANTINE), None),
    "fineweb_dup_line_chars": ("line_dup_char_frac", "at most {max_value} of the characters are in repeated lines",
                               (None, 0.01, QUARANTINE), None),
    "fineweb_newlines": ("newline_per_word", "at most {max_value} line breaks per word", (None, 0.3, QUARANTINE), None),
    "html_residue": ("html_residue", "at most {max_value} HTML tags or entities", (None, 0, QUARANTINE), (None, 0, QUARANTINE)),
    "url_spam": ("url_char_frac", "URLs make up at most {max_value} of the characters",
                 (None, 0.3, QUARANTINE), (None, 0.3, QUARANTINE)),
    "email_spam": ("email_char_frac", "e-mail addresses make up at most {max_value} of the characters",
                   (None, 0.3, QUARANTINE), (None, 0.3, QUARANTINE)),
    "char_spam": ("max_letter_run", "no letter, digit or ideograph repeats more than {max_value} times in a row",
                  (None, 10, QUARANTINE), (None, 10, QUARANTINE)),
    # Chinese reviews legitimately stretch 。。。。。。 and ！！！！！！ (99% of runs <= 6); 12 in a row is spam.
    # Web pages draw lines with ----- and =====, hence the longer limit there.
    "char_spam_punct": ("max_punct_run", "no punctuation mark or symbol repeats more than {max_value} times in a row",
                        (None, 30, QUARANTINE), (None, 11, QUARANTINE)),
    "symbol_garbage": ("symbol_frac", "at most {max_value} of the characters are punctuation or symbols",
                       (None, 0.5, QUARANTINE), (None, 0.8, QUARANTINE)),
    "digit_garbage": ("digit_frac", "at most {max_value} of the characters are digits",
                      (None, 0.5, QUARANTINE), (None, 0.7, QUARANTINE)),
    "script_mismatch": ("foreign_script_frac",
                        "at most {max_value} of the letters are outside the declared languages' scripts",
                        (None, 0.5, QUARANTINE), (None, 0.5, QUARANTINE)),
    "char_repetition": ("char_dup_10gram_frac",
                        "repeats of earlier 10-character sequences cover at most {max_value} of the letters",
                        (None, 0.5, QUARANTINE), (None, 0.5, QUARANTINE)),
}


def text_rules(cfg: TextQualityConfig) -> list[RowRule]:
    """The noise rules of `cfg.profile`, each bounding one measure_text column (family "noise")."""
    rules = []
    for name, (column, description, long, short) in _RULES.items():
        spec = long if cfg.profile == "long" else short
        low, high, severity = spec if spec is not None else (*long[:2], _OFF)
        rules.append(RowRule(name=name, column=column, description=description, min_value=low, max_value=high,
                             severity=severity, family="noise"))
    return rules
