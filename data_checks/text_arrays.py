"""Array building blocks of the noise measures: character classes, span hashes and English tokens.

The texts of a chunk are joined by NUL into one code-point array (see `text_quality.measure_text`); every
function here works on that array or on per-character/per-token arrays derived from it, so a whole chunk
is processed by NumPy at once.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SCRIPTS = ("han", "latin", "kana", "hangul", "cyrillic", "arabic", "greek", "hebrew", "devanagari", "thai", "other")
SCRIPT_ID = {name: i + 1 for i, name in enumerate(SCRIPTS)}  # 0 = not a letter
# Sentence-final marks: FineWeb's line-end test and the sentence splitter (spaCy's sentencizer set, common part).
TERMINAL = ".!?。！？｡．﹒﹖﹗‼‽⁇⁈⁉։؟۔܀܁܂।॥။።፧፨᙮᠃᠉"
# spaCy English keeps these abbreviations whole, so their period ends no sentence.
_ABBREVIATIONS = ("Adm Ak Ala Apr Ariz Ark Aug Bros Calif Co Colo Conn Corp Dec Del Dr Feb Fla Ga Gen Gov Ia Id Ill "
                  "Inc Ind Jan Jr Jul Jun Kan Kans Ky La Ltd Mar Mass Md Messrs Mich Minn Miss Mo Mont Mr Mrs Ms Mt "
                  "Neb Nebr Nev Nov Oct Okla Ore Pa Prof Rep Rev Sen Sep Sept St Tenn Va Wash Wis co vs").split()


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
def char_tables() -> tuple[np.ndarray, np.ndarray]:
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
    script[letters] = SCRIPT_ID["other"]
    for name, ranges in _SCRIPT_RANGES.items():
        for lo, hi in ranges:
            part = slice(lo, hi + 1)
            script[part] = np.where(letters[part], SCRIPT_ID[name], script[part])
    return flags, script


def code_points(chars: str) -> np.ndarray:
    return np.array([ord(c) for c in chars], np.uint32)


@lru_cache(maxsize=32)
def member_table(chars: str) -> np.ndarray:
    """Lookup table: code point -> is it one of `chars` (indexing beats np.isin on long arrays)."""
    table = np.zeros(0x110000, bool)
    table[code_points(chars)] = True
    return table


def segment_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of values over each segment values[starts[k]:starts[k+1]] (every segment non-empty)."""
    if values.dtype == bool:  # counting in int32 is about ten times faster than in int64
        return np.add.reduceat(values.view(np.uint8), starts, dtype=np.int32).astype(np.int64)
    return np.add.reduceat(values, starts)


def shifted(a: np.ndarray, k: int, fill) -> np.ndarray:
    """a moved k places right (k > 0: out[i] = a[i-k]) or left (k < 0), the gap filled with `fill`."""
    out = np.empty_like(a)
    if k > 0:
        out[:k], out[k:] = fill, a[:-k]
    else:
        out[k:], out[:k] = fill, a[-k:]
    return out


HASH_BASE = np.uint64(0x100000001B3)  # polynomial hashes of spans (here and the measures' rolling n-gram hashes)
_GOLD = np.uint64(0x9E3779B97F4A7C15)  # spreads lengths and document ids over the 64 bits


def span_hash(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """64-bit polynomial hash (wrapping arithmetic) of each run values[starts[k]:starts[k+1]]."""
    lengths = np.diff(np.append(starts, values.size))
    offsets = np.arange(values.size) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(max(int(lengths.max(initial=1)), 1), HASH_BASE, np.uint64))
        powers = np.concatenate(([np.uint64(1)], powers[:-1]))  # P**0, P**1, ... (mod 2**64)
        if not starts.size:
            return starts.astype(np.uint64)
        h = np.add.reduceat((values.astype(np.uint64) + np.uint64(1)) * powers[offsets], starts)
        return h * _GOLD + lengths.astype(np.uint64)


def find_all(big: str, needle: str, step: int = 1) -> np.ndarray:
    """Start positions of `needle` in `big` (the next search starts `step` after a hit); str.find skips
    ahead far faster than a regex scan."""
    found, at = [], big.find(needle)
    while at >= 0:
        found.append(at)
        at = big.find(needle, at + step)
    return np.array(found, np.int64)


# --- English tokens ---------------------------------------------------------------------------------


@dataclass
class Tokens:
    start: np.ndarray  # first character of each token (positions in the chunk array)
    length: np.ndarray
    hash: np.ndarray  # uint64 identity of the token text
    doc: np.ndarray
    words: np.ndarray  # bool: has a letter, digit or mark (Gopher's "non-symbol word")
    alpha: np.ndarray  # bool: has a letter
    is_punct: np.ndarray  # bool: every character is punctuation (spaCy's is_punct)
    stop: np.ndarray  # bool: ends a sentence (a one-character sentence mark)
    nonspace: np.ndarray  # positions of the non-space characters


@lru_cache(maxsize=2)
def _word_hashes(words: tuple[str, ...]) -> np.ndarray:
    codes = np.concatenate([code_points(w) for w in words])
    return span_hash(codes, np.concatenate(([0], np.cumsum([len(w) for w in words])[:-1])))


def _letters_before(ends: np.ndarray, cp: np.ndarray, breaks: np.ndarray, words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For positions `ends` right after a run of letters: (ends, run starts) of the runs spelling one of
    `words`; `breaks` holds -1 and the positions of all non-letters."""
    begin = breaks[np.searchsorted(breaks, ends - 1) - 1] + 1
    short = (ends - begin <= max(map(len, words))) & (ends > begin)
    ends, begin = ends[short], begin[short]
    if not ends.size:
        return ends, begin
    lengths = ends - begin
    chars = cp[np.repeat(begin - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
    hit = np.isin(span_hash(chars, np.cumsum(lengths) - lengths), _word_hashes(words))
    return ends[hit], begin[hit]


# spaCy's prefix/suffix punctuation: split off at the edges of a whitespace-separated chunk. Other marks
# (. - / @ ^ | \\ ~) stick to the letters beside them unless an infix rule splits them.
_STRIPPED = ("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪" "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧"
             "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿§%=—–+")
_UNITS = tuple("km m dm cm mm ha nm yd in ft kg g mg lb oz kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K".split())


def english_tokens(big: str, cp: np.ndarray, f: np.ndarray, space, word, other, urls) -> Tokens:
    """English tokens the way spaCy's tokenizer splits them, as array operations.

    Within a whitespace-separated chunk, prefix/suffix punctuation (brackets, quotes, commas, !?#&...) is
    a token of its own at the chunk's edges; letters, digits and the other marks run together into one
    token, except where spaCy's infix rules split (1-2, well-known, and/or, a,b, lower.Upper, "...").
    A final period splits off after a lower-case letter, digit or two capitals, but not in dotted
    abbreviations (U.S., e.g.) or spaCy's abbreviation list (Mr., Inc.); "n't" and "'s 'd 'm 're 'll
    've" are split off; units split from a number (110m, 4G); URLs stay whole.
    """
    n = cp.size
    alpha, digit = (f & ALPHA) != 0, (f & DIGIT) != 0
    strip_all = other & (member_table(_STRIPPED)[cp] | ((f & SYMBOL_SO) != 0))
    start = ~space
    start[1:] &= space[:-1] | strip_all[1:] | strip_all[:-1]
    start[0] = ~space[0]
    # Every rule below concerns a mark, so it is evaluated at the marks only (P); neighbours are looked up
    # around them. The chunk starts and ends with NUL, so P-k and P+k stay on the right text.
    P = np.flatnonzero(other)
    near = {k: np.clip(P + k, 0, n - 1) for k in (-2, -1, 1, 2, 3)}

    def c(k=0):
        return cp[P] if k == 0 else cp[near[k]]

    def has(bit, k):
        return (f[near[k]] & bit) != 0

    c0, sp = c(), {k: space[near[k]] for k in (-2, -1, 1)}
    strip = strip_all[P]
    pw, nw, na = has(WORD, -1), has(WORD, 1), has(ALPHA, 1)
    edge_before, edge_after = sp[-1] | strip_all[near[-1]], sp[1] | strip_all[near[1]]
    infix = pw & nw
    dot, hyphen = c0 == 46, member_table("-–—~")[c0]
    prev_hyphen, next_hyphen = member_table("-–—~")[c(-1)], member_table("-–—~")[c(1)]
    split = ((member_table("+-*^")[c0] & has(DIGIT, -1) & has(DIGIT, 1))
             | (dot & has(LOWER, -1) & has(UPPER, 1))
             | ((c0 == 44) & has(ALPHA, -1) & na)
             | (member_table(":<>=/")[c0] & pw & na)
             | (hyphen & ~prev_hyphen & pw & (na | (next_hyphen & has(ALPHA, 2)))))
    split_end = hyphen & prev_hyphen & na  # "x--y": the hyphens are one token
    start[P[split]] = True
    start[P[(split & ~next_hyphen) | split_end] + 1] = True
    # Apostrophes: "dog's", "do|n't" split off a suffix; a chunk starting "'s 'd 'll 're" is one token.
    apos = member_table("'’")[c0]
    n1, n2 = c(1), c(2)
    one, two = ~has(WORD, 2), ~has(WORD, 3)
    suffix = apos & pw & ((member_table("sSdDmM")[n1] & one) | (member_table("rRvVlL")[n1] & member_table("eElL")[n2] & two))
    nt = apos & infix & member_table("nN")[c(-1)] & member_table("tT")[n1] & one & has(WORD, -2)
    lead = apos & sp[-1] & ((member_table("sSdD")[n1] & one) | (member_table("rRlL")[n1] & member_table("eElL")[n2] & two))
    pair = (c0 == 39) & (n1 == 39)  # two apostrophes are one token
    start[P[pair] + 1] = False
    join = infix & ~split & ~(suffix | nt)
    start[P[join]] = False
    start[P[join | suffix | nt | lead] + 1] = False
    start[P[suffix]] = True
    start[P[nt]] = False
    start[P[nt] - 1] = True
    # Periods: ".." runs are one token; a final period splits off unless it belongs to an abbreviation.
    prev_dot, next_dot = c(-1) == 46, n1 == 46
    run = dot & (prev_dot | next_dot)
    start[P[run & prev_dot]] = False
    start[P[run & ~next_dot & ~sp[1]] + 1] = True
    start[P[run & ~prev_dot]] = True
    final = dot & ~run & edge_after
    p_low, p_up = has(LOWER, -1), has(UPPER, -1)
    splits = final & (p_low | has(DIGIT, -1) | member_table("%²-+")[c(-1)] | strip_all[near[-1]] | (p_up & has(UPPER, -2)))
    splits &= ~(has(ALPHA, -1) & (c(-2) == 46)) & ~(p_low & (sp[-2] | strip_all[near[-2]]))
    breaks = np.concatenate(([-1], np.flatnonzero(~alpha)))
    abbreviations, _ = _letters_before(P[final & has(ALPHA, -1)], cp, breaks, tuple(_ABBREVIATIONS))
    splits[np.searchsorted(P, abbreviations)] = False
    start[P[splits]] = True
    # Sticky marks (and periods that did not split) join whatever touches them inside the chunk.
    sticky = ~strip & ~(dot & (run | splits)) & ~split & ~split_end
    start[P[sticky & ~edge_before]] = False
    start[P[sticky & ~edge_after] + 1] = False
    start[P[split_end] + 1] = True
    # Units after a number: "110m" is "110" + "m".
    unit_begin = np.flatnonzero(alpha[1:] & digit[:-1]) + 1
    unit_end = breaks[np.searchsorted(breaks, unit_begin)]
    unit_end = unit_end[~word[unit_end]]
    _, begins = _letters_before(unit_end, cp, breaks, _UNITS)
    start[begins[digit[begins - 1]]] = True
    us, ue = urls
    if us.size:  # URLs: one token each
        cover = np.zeros(n + 1, np.int64)
        np.add.at(cover, us + 1, 1)
        np.add.at(cover, ue, -1)
        start[np.cumsum(cover)[:-1] > 0] = False
        start[us] = True
    start &= ~space

    nz = np.flatnonzero(~space)
    compact_starts = np.flatnonzero(start[nz])  # token starts among the non-space characters
    starts = nz[compact_starts]
    length = np.diff(np.append(compact_starts, nz.size))

    def any_in_token(mask: np.ndarray) -> np.ndarray:
        return segment_sums(mask[nz], compact_starts) > 0 if starts.size else np.zeros(0, bool)

    words, alpha_t, not_p = any_in_token(word), any_in_token(alpha), any_in_token((f & PUNCT) == 0)
    stop = (length == 1) & member_table(TERMINAL)[cp[starts]]
    return Tokens(starts, length, span_hash(cp[nz], compact_starts), np.zeros(0), words, alpha_t, ~not_p, stop, nz)


# --- repeats --------------------------------------------------------------------------------------


def repeats(keys: np.ndarray) -> np.ndarray:
    """True where the same key occurred at an earlier position (what pandas' duplicated() says, but a
    sort is several times faster than hashing millions of random 64-bit keys)."""
    out = np.zeros(keys.size, bool)
    if keys.size < 2:
        return out
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    repeated = np.diff(np.append(starts, keys.size)) > 1
    if not repeated.any():
        return out
    in_group = np.repeat(repeated, np.diff(np.append(starts, keys.size)))
    out[order[in_group]] = True
    out[np.minimum.reduceat(order, starts)[repeated]] = False  # the first occurrence is no repeat
    return out


def doc_keys(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Hashes g made distinct per document d, so that `repeats` only finds repeats within a text."""
    with np.errstate(over="ignore"):
        return g ^ (d.astype(np.uint64) * _GOLD)


def chunk_bounds(chars: np.ndarray, max_rows: int, max_chars: int) -> list[tuple[int, int]]:
    """Consecutive (lo, hi) row ranges covering `chars` (each row's length), each of at most max_rows rows and
    max_chars characters, or of one row when that row alone is longer."""
    bounds, lo, n = [], 0, len(chars)
    ends = np.cumsum(chars, dtype=np.int64)
    while lo < n:
        before = ends[lo - 1] if lo else 0
        # The last row that keeps the chunk within max_chars; at least the first one.
        hi = max(int(np.searchsorted(ends, before + max_chars, side="right")), lo + 1)
        hi = min(hi, lo + max_rows, n)
        bounds.append((lo, hi))
        lo = hi
    return bounds
