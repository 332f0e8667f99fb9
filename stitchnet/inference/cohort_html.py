"""OUT/cohort.html: one self-contained page over a cohort's rows (no network, no files beside it
but the per-scan reports it links to).

    a histogram of total lesion % (GGO + consolidation, % of lung) in ten 10 % bins, drawn as
        inline SVG; each bar carries data-count, and scans without a value (errors, no lung)
        are counted in a line under it
    a table of the scans, sorted by clicking a column head (again: the other way); the page
        also reads ?sort=COLUMN&dir=asc|desc from its address, so a link can open it sorted.
        Each scan id links to OUT/scans/ID/report.html when that was written (--viewer).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

BINS = 10  # histogram bins of 100 / BINS % each; 100 % falls in the last
# (row key, column head) of the table, in order; the rest of a row is in cohort.csv.
SHOWN = (
    ("scan_id", "scan"),
    ("status", "status"),
    ("error", "why it failed"),  # beside the status, where a reader of an error row looks
    ("slices", "slices"),
    ("total_lung_ml", "lung mL"),
    ("total_ggo_ml", "GGO mL"),
    ("total_consolidation_ml", "consolidation mL"),
    ("total_lesion_pct", "lesion %"),
    ("right_lesion_pct", "right lesion %"),
    ("left_lesion_pct", "left lesion %"),
    *(
        (f"{side}_{zone}_lesion_pct", f"{side[0].upper()} {zone} %")
        for side in ("right", "left")
        for zone in ("upper", "middle", "lower", "ventral", "dorsal")
    ),
    ("seconds", "seconds"),
)
TEXT_KEYS = ("scan_id", "status", "error")  # sorted as text; every other column as numbers

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; cursor: pointer; user-select: none; }
td.text { text-align: left; max-width: 32em; }
tr.error td { background: #fde8e8; }
.bar { fill: #4a7fb5; }
"""

SCRIPT = """
function sortBy(key, dir) {
  const table = document.getElementById('scans');
  const heads = Array.from(table.tHead.rows[0].cells);
  const col = heads.findIndex(th => th.dataset.key === key);
  if (col < 0) return;
  const text = heads[col].dataset.type === 'text';
  const sign = dir === 'desc' ? -1 : 1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
    if (x === '' || y === '') return (x === '') - (y === '');  // empty cells last, either way
    const order = text ? x.localeCompare(y) : Number(x) - Number(y);
    return sign * order || a.dataset.index - b.dataset.index;
  });
  rows.forEach(r => body.appendChild(r));
  heads.forEach(th => th.removeAttribute('aria-sort'));
  heads[col].setAttribute('aria-sort', dir === 'desc' ? 'descending' : 'ascending');
}
document.querySelectorAll('#scans th').forEach(th => th.addEventListener('click', () => {
  sortBy(th.dataset.key, th.getAttribute('aria-sort') === 'ascending' ? 'desc' : 'asc');
}));
const query = new URLSearchParams(location.search);
if (query.get('sort')) sortBy(query.get('sort'), query.get('dir') || 'asc');
"""


def lesion_histogram(rows: list[dict[str, Any]]) -> tuple[list[int], int]:
    """(counts of total lesion % in BINS bins [0, 10), [10, 20), ... [90, 100], scans without a
    value)."""
    counts = [0] * BINS
    missing = 0
    for row in rows:
        pct = row.get("total_lesion_pct")
        if pct is None:
            missing += 1
            continue
        counts[min(int(pct * BINS // 100), BINS - 1)] += 1
    return counts, missing


def cohort_html(rows: list[dict[str, Any]], reports: dict[str, bool]) -> str:
    """The page; `reports[scan_id]`: whether OUT/scans/ID/report.html exists to link to."""
    ok = sum(row["status"] == "ok" for row in rows)
    model = next((row.get("model") for row in rows), None) or "?"
    head = "".join(
        f'<th data-key="{key}" data-type="{"text" if key in TEXT_KEYS else "num"}">'
        f"{html.escape(title)}</th>"
        for key, title in SHOWN
    )
    body = "\n".join(_row(k, row, reports.get(row["scan_id"], False)) for k, row in enumerate(rows))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>StitchNet cohort</title>
<style>{STYLE}</style></head><body>
<h1>Cohort: {len(rows)} scans, {ok} segmented, {len(rows) - ok} failed</h1>
<p>Model {html.escape(str(model))}. Zones are thirds (upper / middle / lower) and halves
(ventral / dorsal) of each lung's mask, not anatomical lobes. Every column is in cohort.csv.</p>
<h2>Total lesion (GGO + consolidation), % of lung</h2>
{_histogram_svg(*lesion_histogram(rows))}
<table id="scans"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""


def _row(index: int, row: dict[str, Any], report: bool) -> str:
    cells = []
    for key, _ in SHOWN:
        value = row.get(key)
        raw = "" if value is None else str(value)
        shown = raw if not isinstance(value, float) else f"{value:.1f}"
        text = html.escape(shown)
        if key == "scan_id" and report:
            href = f"scans/{quote(row['scan_id'])}/report.html"
            text = f'<a href="{html.escape(href)}">{text}</a>'
        kind = ' class="text"' if key in TEXT_KEYS else ""
        cells.append(f'<td{kind} data-value="{html.escape(raw)}">{text}</td>')
    status = ' class="error"' if row["status"] == "error" else ""
    return f'<tr data-index="{index}"{status}>{"".join(cells)}</tr>'


def _histogram_svg(counts: list[int], missing: int) -> str:
    """Bars of equal width, heights scaled to the fullest bin, labelled with bin and count."""
    width, height, bar = 40 * BINS + 20, 166, 36  # 16 px above the fullest bar for its count
    top = max(counts) or 1
    parts = []
    for k, count in enumerate(counts):
        h = round(120 * count / top)
        x = 10 + 40 * k
        lo, hi = k * 100 // BINS, (k + 1) * 100 // BINS
        parts.append(
            f'<rect class="bar" x="{x}" y="{136 - h}" width="{bar}" height="{h}" '
            f'data-bin="{lo}-{hi}" data-count="{count}"><title>{lo}-{hi} %: {count}</title></rect>'
            f'<text x="{x + bar / 2}" y="{131 - h}" text-anchor="middle">{count}</text>'
            f'<text x="{x + bar / 2}" y="154" text-anchor="middle" font-size="10">{lo}-{hi}</text>'
        )
    note = f"<p>{missing} scan(s) without a lesion % (errors or no lung).</p>" if missing else ""
    return f'<svg id="histogram" width="{width}" height="{height}">{"".join(parts)}</svg>{note}'
