"""The scene grammar of the quickstart's synthetic world: what a caption says and where that puts pixels.

A scene is (kind, colour, position, count, background). The caption is a pure function of the scene and the
scene is recoverable from the caption (``parse_caption``), so text-to-image and image-to-text can both be scored
exactly: the analyser reads a scene back from pixels, the parser reads it back from text.

Shapes sit on a ``grid x grid`` lattice of cells. The cell size equals the VQ tokenizer's downsampling factor, so
one image code covers one cell: the tiny VQ learns a small alphabet of "shape in a cell" codes in a minute, and a
tiny language model can learn where codes go. Positions name lattice lines (left column, top row, ...); counts
fill 1-3 cells along that line.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

KINDS: Tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 50, 190),
}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
POSITIONS: Tuple[str, ...] = ("left", "right", "top", "bottom", "center")
COUNTS: Tuple[int, ...] = (1, 2, 3)
COUNT_WORDS: Dict[int, str] = {1: "one", 2: "two", 3: "three"}
GRID = 5
"""Cells per side; 5 so that there is a true centre cell and three cells along every edge line."""


@dataclass(frozen=True)
class Scene:
    kind: str
    colour: str
    position: str
    count: int
    background: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} not in {KINDS}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour {self.colour!r} not in {tuple(COLOURS)}")
        if self.position not in POSITIONS:
            raise ValueError(f"position {self.position!r} not in {POSITIONS}")
        if self.count not in COUNTS:
            raise ValueError(f"count {self.count!r} not in {COUNTS}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r} not in {tuple(BACKGROUNDS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def cells(self) -> List[Tuple[int, int]]:
        """(row, col) lattice cells holding the shapes, in reading order."""
        return position_cells(self.position, self.count)


ATTRIBUTES = ("kind", "colour", "position", "count", "background")


def all_scenes() -> List[Scene]:
    return [Scene(k, c, p, n, b) for k in KINDS for c in COLOURS for p in POSITIONS for n in COUNTS for b in BACKGROUNDS]


def position_cells(position: str, count: int) -> List[Tuple[int, int]]:
    """Cells along the named lattice line: the middle cell for 1, the two flanking ones for 2, all three for 3."""
    mid = GRID // 2
    offsets = {1: [0], 2: [-1, 1], 3: [-1, 0, 1]}[count]
    line = {"left": ("col", 0), "right": ("col", GRID - 1), "top": ("row", 0), "bottom": ("row", GRID - 1),
            "center": ("row", mid)}[position]
    if line[0] == "col":
        return [(mid + o, line[1]) for o in offsets]
    return [(line[1], mid + o) for o in offsets]


def classify_position(cells: Sequence[Tuple[int, int]]) -> Optional[str]:
    """Inverse of :func:`position_cells` for a set of occupied cells (None when no named line matches)."""
    cells = sorted(set(cells))
    for position in POSITIONS:
        for count in COUNTS:
            if sorted(position_cells(position, count)) == cells:
                return position
    return None


def caption(scene: Scene) -> str:
    noun = scene.kind + ("s" if scene.count > 1 else "")
    return f"{COUNT_WORDS[scene.count]} {scene.colour} {noun} at the {scene.position} on a {scene.background} background"


_CAPTION_RE = re.compile(
    r"(?P<count>one|two|three)\s+(?P<colour>[a-z]+)\s+(?P<kind>circle|square|triangle)s?\s+at\s+the\s+"
    r"(?P<position>[a-z]+)\s+on\s+a\s+(?P<background>[a-z]+)\s+background"
)


def parse_caption(text: str) -> Dict[str, object]:
    """Read whatever attributes a (possibly malformed, generated) caption states; missing ones are absent.

    Each attribute is looked for on its own, so a caption that gets the colour right and garbles the rest still
    scores on colour.
    """
    text = text.lower()
    found: Dict[str, object] = {}
    m = _CAPTION_RE.search(text)
    if m:
        words = m.groupdict()
        found = {"kind": words["kind"], "colour": words["colour"], "position": words["position"],
                 "count": {v: k for k, v in COUNT_WORDS.items()}[words["count"]], "background": words["background"]}
        return {k: v for k, v in found.items() if _valid(k, v)}
    # Lenient fallback: the first mention of each attribute's vocabulary.
    m = re.search(r"\b(one|two|three)\b", text)
    if m:
        found["count"] = {v: k for k, v in COUNT_WORDS.items()}[m.group(1)]
    m = re.search(r"\b(circle|square|triangle)s?\b", text)
    if m:
        found["kind"] = m.group(1)
    m = re.search(r"\bat the (\w+)", text)
    if m and m.group(1) in POSITIONS:
        found["position"] = m.group(1)
    m = re.search(r"\bon an? (\w+) background", text)
    if m and m.group(1) in BACKGROUNDS:
        found["background"] = m.group(1)
    m = re.search(r"\b(one|two|three)\s+(\w+)\s+(circle|square|triangle)", text)
    if m and m.group(2) in COLOURS:
        found["colour"] = m.group(2)
    return found


def _valid(attr: str, value: object) -> bool:
    return {"kind": value in KINDS, "colour": value in COLOURS, "position": value in POSITIONS,
            "count": value in COUNTS, "background": value in BACKGROUNDS}[attr]


def score(predicted: Dict[str, object], truth: Scene) -> Dict[str, float]:
    """Per-attribute 0/1 correctness plus ``all`` (every attribute right)."""
    row = {attr: float(predicted.get(attr) == getattr(truth, attr)) for attr in ATTRIBUTES}
    row["all"] = float(all(row[a] == 1.0 for a in ATTRIBUTES))
    return row
