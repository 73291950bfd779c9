"""A self-contained HTML report: sections of text, tables and PNG figures in one folder."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from polyformer.files import atomic_write_text


@dataclass
class Section:
    """One titled part of the report."""

    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, paragraph: str) -> None:
        """A paragraph of plain text (escaped)."""
        self.parts.append(f"<p>{html.escape(paragraph)}</p>")

    def code(self, snippet: str) -> None:
        """A preformatted block (escaped)."""
        self.parts.append(f"<pre>{html.escape(snippet)}</pre>")

    def figure(self, png_name: str, caption: str = "") -> None:
        """A PNG that lives in the report folder."""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{html.escape(png_name)}" alt="{html.escape(caption)}">{cap}</figure>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table; floats are shown with four significant digits."""

        def cell(value: Any) -> str:
            return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))

        head = "".join(f"<th>{cell(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } figure { display: inline-block; margin: 0.5em; }
img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


@dataclass
class Report:
    """An HTML report written to ``out_dir/index.html``; figures are saved beside it."""

    out_dir: Path
    title: str = "polyformer demo"
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        """Start a new section and return it."""
        section = Section(title)
        self.sections.append(section)
        return section

    def path(self, name: str) -> Path:
        """Where a figure called ``name`` should be saved."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def write(self) -> Path:
        """Render and write ``index.html``; returns its path."""
        toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(self.sections))
        body = "".join(
            f'<h2 id="s{i}">{html.escape(s.title)}</h2>' + "".join(s.parts) for i, s in enumerate(self.sections)
        )
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1><ul>{toc}</ul>{body}</body></html>"
        )
        index = self.out_dir / "index.html"
        atomic_write_text(index, page)
        return index
