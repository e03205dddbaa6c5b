"""One self-contained HTML page: the report's tables, with its PNGs inlined as base64."""

from __future__ import annotations

import base64
from html import escape

from tempo.reporting.tables import PAIRED_NOTE, Report, Table

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.failed { color: #b00; } td.unfinished { color: #a60; } td.unreadable { color: #b00; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def html_table(table: Table) -> str:
    """An HTML table; a status column's cells get a class named after the status."""
    status_col = table.headers.index("status") if "status" in table.headers else -1
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{escape(cell)}"' if i == status_col else ""
            cells.append(f"<td{cls}>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: Report) -> str:
    """The report as one HTML document with images embedded as data URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Run comparison</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Run comparison</h1>",
        "<p>Sources: " + ", ".join(f"<code>{escape(s)}</code>" for s in report.sources) + "</p>",
        "<h2>Runs</h2>",
        html_table(report.runs),
        f"<p>{escape(report.runs.note)}</p>",
        "<h2>Metrics</h2>",
    ]
    parts += [f"<p>{escape(note)}</p>" for note in report.notes]
    if not report.metrics:
        parts.append("<p>No finished runs: nothing to aggregate.</p>")
    for table in report.metrics:
        parts += [f"<h3>{escape(table.title)}</h3>", html_table(table)]
    if report.baseline is not None:
        parts += [
            f"<h2>Paired differences vs <code>{escape(report.baseline)}</code></h2>",
            f"<p>{escape(PAIRED_NOTE)}</p>",
        ]
        if not report.paired:
            parts.append(f"<p>No method shares a seed with {escape(report.baseline)}.</p>")
        for table in report.paired:
            parts += [f"<h3>{escape(table.title)}</h3>", html_table(table)]
    if report.figures:
        parts.append("<h2>Plots</h2>")
    for figure in report.figures:
        data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        parts += [
            f"<h3>{escape(figure.title)}</h3>",
            f'<img alt="{escape(figure.title)}" src="data:image/png;base64,{data}">',
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
