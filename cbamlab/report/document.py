"""The report document model: every report (comparison, tuning, explain, explain across seeds) is a `Document` of
`Section`s, each a list of blocks, and `render` writes any document as markdown and as one self-contained HTML page.

The blocks hold formatted text only (numbers are formatted where they are computed); text may use two bits of
inline markdown, `code` and **bold**, which the HTML renderer turns into <code> and <strong>.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Text:
    """A paragraph; `css` is an extra class for the HTML page ("howto" for a how-to-read paragraph)."""
    text: str
    css: str = ""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Note:
    """A highlighted remark of one or more lines (a block quote in markdown)."""
    lines: list[str]


@dataclass
class Table:
    """Formatted cells; `css`: "main" (the comparison table: its last two columns wrap) or "labels" (its first two
    columns are labels, left-aligned)."""
    header: list[str]
    rows: list[list[str]]
    css: str = ""


@dataclass
class Figure:
    """A PNG: a file in the figures folder beside the markdown, embedded in the HTML page."""
    name: str
    caption: str
    png: bytes


@dataclass
class Details:
    """Folded preformatted text, e.g. a full recipe as YAML (`lang` tags the markdown code block)."""
    summary: str
    text: str
    lang: str = ""


Block = Text | Bullets | Note | Table | Figure | Details


@dataclass
class Section:
    title: str
    blocks: list[Block]
    anchor: str = ""  # the HTML id of the heading; none when empty


@dataclass
class Document:
    title: str
    intro: list[Block]
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for blocks in [self.intro] + [s.blocks for s in self.sections] for b in blocks
                if isinstance(b, Figure)]


def slug(text: str) -> str:
    """`text` as a file name and anchor: letters, digits, '-' and '_' kept, anything else '_'."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
