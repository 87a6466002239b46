"""The built-in sample corpus: short bilingual (Chinese/English) reviews and posts in four topics, plus
planted defects of every kind the validation stage must catch.

The topic signal is real but not trivial: each document mixes words of its topic with shared filler
words and some words borrowed from other topics, so a small model has something to learn.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from data_checks.config import SampleConfig
from data_checks.io import atomic_path

TOPICS = ("sports", "technology", "food", "travel")

# Which validation rule catches each planted defect once the corpus has gone through a CSV file.
# An empty CSV cell is read back as a missing value, so planted empty texts surface as `text_missing`.
DEFECT_RULES: dict[str, str] = {
    "text_null": "text_missing",
    "text_empty": "text_missing",
    "text_whitespace": "text_blank",
    "duplicate_conflicting_label": "duplicate_conflicting_label",
    "label_unknown": "label_unknown",
    "label_null": "label_missing",
    "html_residue": "html_residue",
    "char_spam": "char_spam",
    "mojibake": "mojibake",
}

_EN_TOPIC: dict[str, tuple[str, ...]] = {
    "sports": (
        "match", "team", "goal", "coach", "league", "player", "season", "score", "stadium", "tournament",
        "referee", "striker", "goalkeeper", "championship", "fans", "training", "sprint", "marathon",
        "basketball", "football", "tennis", "racket", "penalty", "defense", "victory", "medal", "athlete",
        "halftime", "playoff", "jersey",
    ),
    "technology": (
        "laptop", "software", "battery", "screen", "processor", "update", "app", "smartphone", "keyboard",
        "charger", "bluetooth", "wifi", "router", "camera", "firmware", "server", "database", "cloud", "chip",
        "memory", "install", "bug", "download", "headphones", "tablet", "pixels", "gadget", "code",
        "algorithm", "storage",
    ),
    "food": (
        "restaurant", "noodles", "spicy", "soup", "dessert", "chef", "flavor", "rice", "dumplings", "menu",
        "sauce", "delicious", "bakery", "coffee", "tea", "salad", "grilled", "chicken", "beef", "portion",
        "waiter", "fresh", "sweet", "breakfast", "dinner", "recipe", "kitchen", "cake", "seafood", "crispy",
    ),
    "travel": (
        "hotel", "flight", "airport", "beach", "luggage", "passport", "trip", "tour", "guide", "island",
        "mountain", "museum", "booking", "train", "station", "visa", "resort", "sightseeing", "backpack",
        "map", "journey", "ticket", "itinerary", "cruise", "village", "hostel", "souvenir", "view",
        "vacation", "check-in",
    ),
}
_EN_FILLER = (
    "the", "a", "this", "was", "really", "very", "I", "we", "it", "and", "but", "so", "quite", "not", "too",
    "just", "again", "would", "recommend", "honestly", "overall", "pretty", "great", "bad", "okay",
    "experience", "time", "day", "people", "price", "quality", "service", "worth", "nice", "terrible",
    "love", "friends", "weekend", "new", "good", "long", "money", "my", "our", "there", "with", "for",
    "after", "before", "maybe", "definitely", "never", "always", "last", "next", "everyone", "family",
)
# Non-ASCII words that make the English mojibake realistic (they garble when UTF-8 is read as cp1252).
_EN_ACCENTED = ("café", "naïve", "résumé", "it’s", "“amazing”", "crème", "über", "fiancé", "jalapeño", "déjà vu")

_ZH_TOPIC: dict[str, tuple[str, ...]] = {
    "sports": (
        "比赛", "球队", "进球", "教练", "联赛", "球员", "赛季", "比分", "体育场", "锦标赛", "裁判", "前锋",
        "守门员", "冠军", "球迷", "训练", "短跑", "马拉松", "篮球", "足球", "网球", "球拍", "点球", "防守",
        "胜利", "奖牌", "运动员", "半场", "季后赛", "射门",
    ),
    "technology": (
        "电脑", "软件", "电池", "屏幕", "处理器", "更新", "应用", "手机", "键盘", "充电器", "蓝牙", "无线网",
        "路由器", "相机", "固件", "服务器", "数据库", "云端", "芯片", "内存", "安装", "程序", "下载", "耳机",
        "平板", "像素", "系统", "代码", "算法", "存储",
    ),
    "food": (
        "餐厅", "面条", "麻辣", "汤", "甜点", "厨师", "味道", "米饭", "饺子", "菜单", "酱汁", "好吃", "面包店",
        "咖啡", "茶", "沙拉", "烧烤", "鸡肉", "牛肉", "分量", "服务员", "新鲜", "甜", "早餐", "晚餐", "菜谱",
        "厨房", "蛋糕", "海鲜", "口感",
    ),
    "travel": (
        "酒店", "航班", "机场", "海滩", "行李", "护照", "旅行", "旅游团", "导游", "海岛", "爬山", "博物馆",
        "预订", "火车", "车站", "签证", "度假村", "观光", "背包", "地图", "旅程", "门票", "行程", "邮轮",
        "古镇", "青旅", "纪念品", "风景", "假期", "入住",
    ),
}
_ZH_FILLER = (
    "我", "我们", "今天", "觉得", "非常", "还是", "一个", "这个", "真的", "有点", "比较", "不错", "一般",
    "推荐", "朋友", "周末", "价格", "质量", "服务", "体验", "时间", "以后", "还会", "再来", "总体", "满意",
    "失望", "可以", "没有", "感觉", "已经", "而且", "但是", "所以", "很", "的", "了", "都", "也", "就",
)

_UNKNOWN_LABELS = ("misc", "other", "sport", "unknown")
_HTML_WRAPS = ("<div>{}</div>", "<p>{}</p>", "{}&nbsp;", "{}<br/>", '<span class="x">{}</span>', "{} &amp; more")
# Runs well past what real reviews contain (laughter like 哈哈哈哈哈哈 stays under the rule's limit).
_SPAM_WHOLE = ("好好好好好好好好好好好好好好好好", "aaaaaaaaaaaaaaaaaa", "哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈", "6666666666666666")
_SPAM_TAILS = ("zzzzzzzzzzzzzzzzz", "soooooooooooooooo", "啊啊啊啊啊啊啊啊啊啊啊啊啊啊啊", "wowwwwwwwwwwwwwwww")

# How often a topic-word slot borrows a word from another topic: keeps the task from being trivial.
_CROSS_TOPIC_RATE = 0.2
# Share of words that come from the topic vocabulary (the rest is shared filler).
_TOPIC_WORD_RATE = 0.35


def _topic_word(rng: random.Random, vocab: dict[str, tuple[str, ...]], topic: str) -> str:
    if rng.random() < _CROSS_TOPIC_RATE:
        topic = rng.choice([t for t in TOPICS if t != topic])
    return rng.choice(vocab[topic])


def _english(rng: random.Random, topic: str, accented: bool = False) -> str:
    """5-60 words in 1-4 sentences; some carry commas, quotes or line breaks (CSV quoting must cope)."""
    n_words = rng.randint(5, min(60, rng.choice((12, 20, 35, 60))))
    words = [
        _topic_word(rng, _EN_TOPIC, topic) if rng.random() < _TOPIC_WORD_RATE else rng.choice(_EN_FILLER)
        for _ in range(n_words)
    ]
    if not any(w in _EN_TOPIC[topic] for w in words):
        words[rng.randrange(n_words)] = rng.choice(_EN_TOPIC[topic])
    if accented:
        words[rng.randrange(n_words)] = rng.choice(_EN_ACCENTED)
    if n_words >= 6 and rng.random() < 0.15:
        i = rng.randrange(n_words)
        words[i] = f'"{words[i]}"'
    sentences: list[str] = []
    i = 0
    while i < n_words:
        size = rng.randint(5, 15)
        chunk = words[i : i + size]
        if len(chunk) > 6 and rng.random() < 0.3:
            chunk[rng.randrange(2, len(chunk) - 1)] += ","
        sentence = " ".join(chunk)
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice((".", ".", ".", "!", "?")))
        i += size
    joiner = "\n" if len(sentences) > 1 and rng.random() < 0.1 else " "
    return joiner.join(sentences)


def _chinese(rng: random.Random, topic: str) -> str:
    """8-80 characters of topic words and filler with Chinese punctuation."""
    target = rng.randint(8, min(80, rng.choice((20, 40, 80))))
    parts: list[str] = []
    length = 0
    has_topic = False
    while length < target - 1:
        if rng.random() < _TOPIC_WORD_RATE + 0.05:
            word = _topic_word(rng, _ZH_TOPIC, topic)
            has_topic = has_topic or word in _ZH_TOPIC[topic]
        else:
            word = rng.choice(_ZH_FILLER)
        if parts and rng.random() < 0.12:
            word = "，" + word
        parts.append(word)
        length += len(word)
    if not has_topic:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(_ZH_TOPIC[topic]))
    return "".join(parts)[:79] + rng.choice(("。", "。", "！", "？"))


def _document(rng: random.Random, topic: str, seen: set[str]) -> str:
    """A new document whose whitespace-normalised text is not in `seen` (so clean rows never collide)."""
    while True:
        text = _english(rng, topic) if rng.random() < 0.5 else _chinese(rng, topic)
        key = " ".join(text.split())
        if key not in seen:
            seen.add(key)
            return text


def _sloppy_cp1252(raw: bytes) -> str:
    """Decode like a Windows tool would: cp1252 where defined, latin-1 for the five bytes cp1252 leaves out."""
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in raw)


def _mojibake(rng: random.Random, topic: str, variant: int, seen: set[str]) -> str:
    if variant % 3 == 0:
        # English with accents or curly quotes, UTF-8 bytes read as cp1252 ("café" -> "cafÃ©").
        return _sloppy_cp1252(_english(rng, topic, accented=True).encode("utf-8"))
    chinese = _document_zh(rng, topic, seen)
    if variant % 3 == 1:
        # Chinese UTF-8 bytes read as GBK ("错误" -> "閿欒...").
        return chinese.encode("utf-8").decode("gbk", errors="replace")
    # Chinese UTF-8 bytes read as cp1252 ("错误" -> "é”™è¯¯").
    return _sloppy_cp1252(chinese.encode("utf-8"))


def _document_zh(rng: random.Random, topic: str, seen: set[str]) -> str:
    while True:
        text = _chinese(rng, topic)
        if text not in seen:
            seen.add(text)
            return text


def generate_sample_corpus(cfg: SampleConfig, with_kinds: bool = False) -> pd.DataFrame:
    """The sample corpus as a frame with string columns `text` and `label` (either may be None).

    `cfg.n_docs` clean documents with balanced topics, then `cfg.defects_per_kind` rows of every kind in
    DEFECT_RULES inserted at positions drawn from the same seeded generator: the same config always gives
    the identical frame. `with_kinds` adds a column `defect` naming each planted row's kind (None if clean).
    """
    rng = random.Random(cfg.seed)
    seen: set[str] = set()
    rows: list[tuple[str | None, str | None, str | None]] = []
    for i in range(cfg.n_docs):
        topic = TOPICS[i % len(TOPICS)] if i < len(TOPICS) else rng.choice(TOPICS)
        rows.append((_document(rng, topic, seen), topic, None))

    k = cfg.defects_per_kind
    planted: dict[str, list[tuple[str | None, str | None]]] = {kind: [] for kind in DEFECT_RULES}
    for j in range(k):
        planted["text_null"].append((None, rng.choice(TOPICS)))
        planted["text_empty"].append(("", rng.choice(TOPICS)))
        planted["text_whitespace"].append((rng.choice((" ", "   ", "\t", " \n ", "\u3000", "  \t  ")), rng.choice(TOPICS)))
    for original in rng.sample(range(cfg.n_docs), k):
        text, label, _ = rows[original]
        planted["duplicate_conflicting_label"].append((text, rng.choice([t for t in TOPICS if t != label])))
    for j in range(k):
        text = _document(rng, rng.choice(TOPICS), seen)
        planted["label_unknown"].append((text, _UNKNOWN_LABELS[j % len(_UNKNOWN_LABELS)]))
        planted["label_null"].append((_document(rng, rng.choice(TOPICS), seen), None))
        topic = rng.choice(TOPICS)
        html = _HTML_WRAPS[j % len(_HTML_WRAPS)].format(_document(rng, topic, seen))
        planted["html_residue"].append((html, topic))
        topic = rng.choice(TOPICS)
        if j % 2 == 0:
            spam = _SPAM_WHOLE[(j // 2) % len(_SPAM_WHOLE)]
        else:
            spam = _document(rng, topic, seen) + " " + _SPAM_TAILS[(j // 2) % len(_SPAM_TAILS)]
        planted["char_spam"].append((spam, topic))
        topic = rng.choice(TOPICS)
        planted["mojibake"].append((_mojibake(rng, topic, j, seen), topic))

    for kind in DEFECT_RULES:
        for text, label in planted[kind]:
            rows.insert(rng.randrange(len(rows) + 1), (text, label, kind))
    columns = ("text", "label", "defect")
    frame = pd.DataFrame({name: pd.Series([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)})
    return frame if with_kinds else frame.drop(columns="defect")


def write_sample_corpus(cfg: SampleConfig, path: Path) -> dict:
    """Write the sample corpus as UTF-8 CSV (atomically) and return {"rows": N, "defects": {kind: count}}."""
    frame = generate_sample_corpus(cfg)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")
    return {
        "rows": int(len(frame)),
        "clean": cfg.n_docs,
        "defects": {kind: cfg.defects_per_kind for kind in DEFECT_RULES},
    }
