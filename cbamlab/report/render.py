"""The two renderers of a report `Document`: markdown (figures linked from a folder beside it) and one
self-contained HTML page (one shell, one stylesheet, figures embedded as base64 PNG, nothing loaded from
elsewhere); `write` puts both and the figures on disk.
"""
from __future__ import annotations

import base64
import html as _html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .. import _io
from .document import Block, Bullets, Details, Document, Figure, Note, Table, Text

log = logging.getLogger(__name__)

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1280px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table.results{border-collapse:collapse;font-size:0.82em;margin:1em 0}
table.results th,table.results td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
table.results th{background:#f0f0f0}table.results td:first-child{text-align:left;font-weight:600}
table.main td:nth-last-child(-n+2){white-space:normal;text-align:left}table.labels td:nth-child(2){text-align:left}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}
.note{background:#fff6db;border-left:4px solid #e0b000;padding:0.4em 0.8em}.howto{color:#444;font-size:0.95em}
pre{background:#f7f7f7;padding:0.8em;overflow-x:auto}.scroll{overflow-x:auto}"""

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of formatted cells ('|' in a cell escaped)."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def _md_block(block: Block, figures_dir: str) -> list[str]:
    """The block's lines; [] for an empty list or note, which is left out."""
    if isinstance(block, Text):
        return [block.text]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Note):
        return [f"> {line}" for line in block.lines]
    if isinstance(block, Table):
        return [markdown_table(block.header, block.rows)]
    if isinstance(block, Figure):
        path = f"{figures_dir}/{block.name}" if figures_dir else block.name
        if not block.caption:
            return [f"![{block.name}]({path})"]
        return [f"![{block.caption}]({path})", "", f"*{block.caption}*"]
    if isinstance(block, Details):
        return [f"<details><summary>{block.summary}</summary>", "", f"```{block.lang}", block.text.rstrip(), "```",
                "", "</details>"]
    raise TypeError(f"not a report block: {block!r}")


def markdown(doc: Document, figures_dir: str = "figures") -> str:
    """The document as markdown: one blank line after every heading and block, figures linked in `figures_dir`
    (relative to the markdown file; "" for beside it)."""
    out = [f"# {doc.title}", ""]
    for title, blocks in [(None, doc.intro)] + [(s.title, s.blocks) for s in doc.sections]:
        if title is not None:
            out += [f"## {title}", ""]
        for block in blocks:
            lines = _md_block(block, figures_dir)
            out += lines + [""] if lines else []
    return "\n".join(out)


def inline(text: str) -> str:
    """Escaped HTML of a text, its `code` and **bold** spans marked up."""
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", _html.escape(text)))


def _html_table(table: Table) -> str:
    cls = f"results {table.css}" if table.css else "results"
    head = "".join(f"<th>{inline(c)}</th>" for c in table.header)
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>\n" for row in table.rows)
    return (f'<div class="scroll"><table class="{cls}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n'
            "</table></div>")


def _html_block(block: Block) -> str:
    e = _html.escape
    if isinstance(block, Text):
        return f'<p class="{block.css}">{inline(block.text)}</p>' if block.css else f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>" if block.items else ""
    if isinstance(block, Note):
        return "".join(f'<p class="note">{inline(line)}</p>' for line in block.lines)
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{inline(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure><img alt="{e(block.caption or block.name)}" src="data:image/png;base64,{data}">'
                f"{caption}</figure>")
    if isinstance(block, Details):
        return f"<details><summary>{inline(block.summary)}</summary><pre>{e(block.text)}</pre></details>"
    raise TypeError(f"not a report block: {block!r}")


def html(doc: Document) -> str:
    """The document as one HTML page that needs no other file."""
    e = _html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(doc.title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{inline(doc.title)}</h1>"]
    for section in [None] + doc.sections:
        if section is not None:
            anchor = f' id="{e(section.anchor)}"' if section.anchor else ""
            out.append(f"<h2{anchor}>{inline(section.title)}</h2>")
        out += [h for h in map(_html_block, doc.intro if section is None else section.blocks) if h]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


@dataclass
class Written:
    markdown: Path
    html: Path
    figures: list[Path]


def write(doc: Document, folder: str | Path, name: str, figures_dir: str = "figures") -> Written:
    """folder/NAME.md, folder/NAME.html and every figure of the document as folder/figures_dir/FIGURE."""
    folder = Path(folder)
    figures = [_io.write_bytes(folder / figures_dir / f.name, f.png) for f in doc.figures()]
    md = _io.write_text(folder / f"{name}.md", markdown(doc, figures_dir))
    page = _io.write_text(folder / f"{name}.html", html(doc))
    log.info("wrote %s and %s (%d figures)", md, page, len(figures))
    return Written(md, page, figures)
