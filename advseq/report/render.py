"""Writing the document model as GitHub-flavoured Markdown and as one self-contained HTML
page (inline CSS, figures as base64 data URIs, no script, nothing fetched)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from advseq.report.blocks import Details, Figure, Heading, Para, Section, Table


def _md_text(text: str) -> str:
    """Text that stays one run of text in Markdown: no line breaks (a name holding a newline
    cannot start a heading or raw HTML line), no HTML, no link or image syntax (a name
    cannot make the viewer fetch anything)."""
    out = html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")
    return out.replace("[", "\\[").replace("]", "\\]")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|")


def _md_anchor(text: str) -> str:
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def render_markdown(title: str, sections: list[Section], generated: str, out_dir: Path) -> str:
    """The report as GitHub-flavoured Markdown (figures linked from ``figures/``)."""
    lines = [f"# {_md_text(title)}", "", f"*Generated {generated} by `advseq report` from the run folders' JSON "
                              "results.*", ""]
    for i, s in enumerate(sections, 1):
        lines.append(f"{i}. [{_md_text(s.title)}](#{_md_anchor(f'{i}. {s.title}')})")
    lines.append("")
    for i, s in enumerate(sections, 1):
        lines += [f"## {i}. {_md_text(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, Heading):
                lines += [f"{'#' * b.level} {_md_text(b.text)}", ""]
            elif isinstance(b, Para):
                text = _md_text(b.text)
                lines += [f"*{text}*" if b.note and "*" not in text else text, ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"**Table.** {_md_text(b.caption)}", ""]
                header = [h or " " for h in b.header]
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                aligns = _aligns(b)
                lines.append("| " + " | ".join("---:" if a == "r" else "---" for a in aligns) + " |")
                for k, row in enumerate(b.rows):
                    cells = [_md_cell(c) for c in row]
                    if k in b.emphasis_rows:
                        cells = [f"*{c}*" if c.strip() else c for c in cells]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
                if b.footnotes:
                    lines += [f"<sub>{_md_cell(f)}</sub><br>" for f in b.footnotes] + [""]
            elif isinstance(b, Figure):
                rel = b.path.relative_to(out_dir).as_posix()
                lines += [f"![{_md_cell(b.alt)}]({rel})", "", f"*Figure {b.number}: {_md_text(b.caption)}*", ""]
            elif isinstance(b, Details):
                longest = max((len(m) for m in re.findall(r"`+", b.text)), default=0)
                fence = "`" * max(3, longest + 1)
                lines += ["<details>", f"<summary>{html.escape(b.summary)}</summary>", "",
                          f"{fence}text", b.text.rstrip("\n"), fence, "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


_NUMERIC = re.compile(r"^[+\-−]?\d[\d,]*(\.\d+)?( → [+\-]?\d[\d.]*)?$|^–$")


def _aligns(t: Table) -> list[str]:
    out = []
    for j in range(len(t.header)):
        col = [r[j] for r in t.rows if j < len(r) and str(r[j]).strip()]
        numeric = bool(col) and j not in t.text_cols and all(_NUMERIC.match(str(c)) for c in col)
        out.append("r" if numeric else "l")
    return out


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --head:#f3f4f6; --accent:#9f1239; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 40px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 24px 0 8px; }
h4 { font-size: 1rem; margin: 18px 0 6px; }
p.meta, p.note, .foot { color: var(--muted); font-size: .88rem; }
p.meta { margin-top: 0; }
nav.toc { background: var(--head); border-radius: 6px; padding: 8px 14px; margin: 16px 0; }
nav.toc ol { margin: 0; padding-left: 20px; columns: 3; }
nav.toc a { color: var(--accent); text-decoration: none; }
.tw { overflow-x: auto; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: .86rem; min-width: 40%; }
p.cap { color: var(--muted); font-size: .85rem; margin: 14px 0 2px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; vertical-align: top; white-space: nowrap; }
th { background: var(--head); text-align: left; font-weight: 600; white-space: nowrap; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.txt { min-width: 16em; max-width: 46em; overflow-wrap: anywhere; white-space: normal; }
td.hit { color: var(--accent); font-weight: 600; }
tr:nth-child(even) td { background: #fafafa; }
tr.em td { font-style: italic; background: #fff7ed; }
td.na { color: var(--muted); }
ol.foot { margin: 2px 0 12px; padding-left: 18px; list-style: none; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f9fafb; border: 1px solid var(--line);
      padding: 10px 12px; font-size: .82rem; max-height: 36em; overflow-y: auto; }
code { font-size: .86em; background: #f3f4f6; padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
"""


def render_html(title: str, sections: list[Section], generated: str) -> str:
    """The report as one self-contained HTML page (inline CSS, figures as data URIs)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
           f"<h1>{e(title)}</h1>",
           f'<p class="meta">Generated {e(generated)} by <code>advseq report</code> from the run '
           "folders' JSON results.</p>", '<nav class="toc" aria-label="Sections"><ol>']
    out += [f'<li><a href="#{s.id}">{e(s.title)}</a></li>' for s in sections]
    out.append("</ol></nav>")
    for i, s in enumerate(sections, 1):
        out.append(f'<section id="{s.id}">')
        out.append(f"<h2>{i}. {e(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, Heading):
                out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
            elif isinstance(b, Para):
                cls = ' class="note"' if b.note else ""
                out.append(f"<p{cls}>{_inline(b.text)}</p>")
            elif isinstance(b, Table):
                out.append(_html_table(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.path.read_bytes()).decode("ascii")
                width = f' width="{b.width}"' if b.width else ""
                out.append(f'<figure id="fig-{b.number}"><img src="data:image/png;base64,{data}"{width} '
                           f'alt="{e(b.alt)}"><figcaption>Figure {b.number}: {e(b.caption)}'
                           "</figcaption></figure>")
            elif isinstance(b, Details):
                out.append(f"<details><summary>{e(b.summary)}</summary><pre>{e(b.text)}</pre></details>")
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


_RCLS = ' class="r"'
_EMCLS = ' class="em"'


def _html_table(t: Table) -> str:
    e = html.escape
    aligns = _aligns(t)
    idattr = f' id="{e(t.id)}"' if t.id else ""
    parts = [f'<p class="cap">{_inline(t.caption)}</p>' if t.caption else "",
             f'<div class="tw"><table{idattr}>']
    if any(h for h in t.header):
        parts.append("<thead><tr>" + "".join(
            f'<th{_RCLS if a == "r" else ""} scope="col">{e(h)}</th>'
            for h, a in zip(t.header, aligns, strict=True)) + "</tr></thead>")
    parts.append("<tbody>")
    for k, row in enumerate(t.rows):
        cells = []
        for j, c in enumerate(row):
            cls = []
            if j < len(aligns) and aligns[j] == "r":
                cls.append("r")
            if j in t.text_cols:
                cls.append("txt")
            if str(c).startswith(("n/a", "missing")):
                cls.append("na")
            if c == "evaded":
                cls.append("hit")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            tag = "th" if j == 0 and not t.header[0] else "td"
            cells.append(f"<{tag}{attr}>{_inline(str(c)) if '`' in str(c) else e(str(c))}</{tag}>")
        parts.append(f"<tr{_EMCLS if k in t.emphasis_rows else ''}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    if t.footnotes:
        parts.append('<ol class="foot">' + "".join(f"<li>{e(f)}</li>" for f in t.footnotes) + "</ol>")
    return "".join(parts)
