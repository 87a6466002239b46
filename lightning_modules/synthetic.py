"""A small, deterministic bilingual (Chinese/English) snapshot for smoke tests and timing runs.

Each document mixes a few topic keywords of its label (in both languages) with shared filler words and
the occasional keyword of another topic, so a classifier has signal to find but not a trivial one.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pandas as pd

from data_checks.io import write_json, write_parquet

LABELS = ["sports", "technology", "food", "travel"]

_KEYWORDS: dict[str, list[str]] = {
    "sports": ["football", "basketball", "match", "goal", "team", "coach", "足球", "篮球", "比赛", "进球", "球队", "教练"],
    "technology": ["computer", "software", "network", "chip", "robot", "algorithm", "电脑", "软件", "网络", "芯片", "机器人", "算法"],
    "food": ["noodles", "dumplings", "recipe", "spicy", "kitchen", "tea", "面条", "饺子", "菜谱", "辣椒", "厨房", "喝茶"],
    "travel": ["airport", "hotel", "journey", "beach", "passport", "museum", "机场", "酒店", "旅行", "海滩", "护照", "博物馆"],
}
_FILLER = [
    "the", "a", "today", "we", "really", "people", "think", "about", "new", "city", "weekend", "story",
    "今天", "我们", "非常", "大家", "觉得", "一个", "新的", "城市", "周末", "故事", "时候", "可以",
]


def make_snapshot(out_dir: Path, n_docs: int = 200, seed: int = 0, labels: list[str] | None = None) -> Path:
    """Write `corpus.parquet` and `manifest.json` into `out_dir` (80/10/10 train/validation/test) and return it."""
    labels = labels or LABELS
    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        label = labels[i % len(labels)]
        words = [rng.choice(_KEYWORDS[label]) for _ in range(rng.randint(2, 4))]
        words += [rng.choice(_FILLER) for _ in range(rng.randint(4, 10))]
        if rng.random() < 0.3:  # a distractor keyword from another topic
            words.append(rng.choice(_KEYWORDS[rng.choice([x for x in labels if x != label])]))
        rng.shuffle(words)
        text = " ".join(words)
        # Split by a random draw, not by i, so every split sees every label (labels cycle with i).
        draw = rng.random()
        split = "train" if draw < 0.8 else ("validation" if draw < 0.9 else "test")
        doc_id = hashlib.sha256(f"{i}:{text}".encode()).hexdigest()[:16]
        rows.append({"doc_id": doc_id, "text": text, "label": label, "split": split, "source": "synthetic", "source_row": i})
    frame = pd.DataFrame(rows)
    content = hashlib.sha256(frame.to_json(orient="records", force_ascii=False).encode()).hexdigest()
    out_dir = Path(out_dir)
    write_parquet(out_dir / "corpus.parquet", frame)
    write_json(out_dir / "manifest.json", {"snapshot": f"snap-{content[:12]}", "content_sha256": content, "n_rows": len(frame)})
    return out_dir
