"""A labelled set where exact words matter: product codes and people's names.

Every passage shares its template words with many others; only the code or the name tells
them apart, as in a parts catalogue or a staff directory. Deterministic (a seeded generator).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TYPES = ["charger", "cable", "battery", "adapter", "keyboard", "monitor", "router", "speaker"]
BRANDS = ["Aurora", "Borealis", "Cygnus", "Draco"]
FIRST = ["Anna", "Bruno", "Chen", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas"]
LAST = ["Lindqvist", "Okafor", "Nakamura", "Petrov", "Quispe", "Rossi", "Sato", "Tanaka"]


def _code(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
    return f"{letters}-{rng.randrange(1000, 10000)}"


def exact_word_rows(products: int = 48, people: int = 16, seed: int = 13) -> list[dict[str, Any]]:
    """FlagEmbedding-format rows {"query", "pos", "neg"}: one per product code and per name."""
    rng = random.Random(seed)
    codes = list(dict.fromkeys(_code(rng) for _ in range(products * 2)))[:products]
    catalogue = [
        (code, TYPES[i % len(TYPES)], BRANDS[i % len(BRANDS)]) for i, code in enumerate(codes)
    ]
    passages = {
        code: f"{brand} {kind} {code} ships in two days with a one year warranty"
        for code, kind, brand in catalogue
    }
    rows: list[dict[str, Any]] = []
    for code, kind, _ in catalogue:
        others = [c for c, k, _ in catalogue if k == kind and c != code][:3]
        rows.append(
            {
                "query": f"warranty for {kind} {code}",
                "pos": [passages[code]],
                "neg": [passages[c] for c in others],
            }
        )
    names = list(dict.fromkeys(f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(99)))
    names = names[:people]
    bios = {name: f"{name} answers support tickets about routers and chargers" for name in names}
    for i, name in enumerate(names):
        rows.append(
            {
                "query": f"tickets answered by {name}",
                "pos": [bios[name]],
                "neg": [bios[names[(i + 1) % len(names)]]],
            }
        )
    return rows


def exact_word_texts() -> list[str]:
    """Every query and passage of the set (for a vocabulary that covers them)."""
    texts: list[str] = []
    for row in exact_word_rows():
        texts += [row["query"], *row["pos"], *row["neg"]]
    return texts


def write_exact_word_set(path: Path) -> Path:
    """The set as a JSONL file."""
    rows = exact_word_rows()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
