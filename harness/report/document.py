"""A small document model rendered twice: as Markdown (``report.md``) and as one HTML page
(``index.html``, images inline by relative path, so it opens from disk without a server).

Inline text may hold ```code``` and ``[text](href)``; everything else is escaped.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

__all__ = ["Block", "Heading", "Image", "Items", "Paragraph", "Table", "to_html", "to_markdown"]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Items:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    #: Per row, a CSS class per cell ("" for none): e.g. a verdict's colour in HTML.
    classes: list[list[str]] | None = None


@dataclass(frozen=True)
class Image:
    src: str  # relative to the report
    alt: str
    link: str | None = None  # e.g. the SVG


Block = Heading | Paragraph | Items | Table | Image

_INLINE = re.compile(r"`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)")


def _inline_html(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        code, label, href = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        else:
            out.append(f'<a href="{html.escape(href, quote=True)}">{html.escape(label)}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _cell_md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Items):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_cell_md(h) for h in block.header) + " |")
            lines.append(
                "|"
                + "".join(
                    "---:|" if i in block.numeric else "---|" for i in range(len(block.header))
                )
            )
            lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            image = f"![{block.alt}]({block.src})"
            lines += [f"[{image}]({block.link})" if block.link else image, ""]
    return "\n".join(lines).rstrip() + "\n"


def _td(text: str, classes: list[str]) -> str:
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attribute}>{_inline_html(text)}</td>"


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1300px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px;
        display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.exactly-once { background: #d9f2d9; } td.at-least-once { background: #fff0c2; }
td.at-most-once { background: #f9d0c8; } td.broken { background: #e8a0a0; }
td.incomplete { background: #e6e6e6; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 3px; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Items):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items))
            body.append("</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.header)
            classes = block.classes or [[] for _ in block.rows]
            rows = [
                "<tr>"
                + "".join(
                    _td(
                        c, ["num"] * (i in block.numeric) + [k for k in row_classes[i : i + 1] if k]
                    )
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for row, row_classes in zip(block.rows, classes, strict=True)
            ]
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>")
            body.append("</table>")
        else:
            src, alt = html.escape(block.src, quote=True), html.escape(block.alt, quote=True)
            image = f'<img src="{src}" alt="{alt}">'
            if block.link:
                image = f'<a href="{html.escape(block.link, quote=True)}">{image}</a>'
            body.append(f"<p>{image}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
