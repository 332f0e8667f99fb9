"""OUT/cohort.html: self-contained, its histogram counted by hand, and its table sorted by the
page's own script in headless Chromium (the DOM after the script ran, --dump-dom); the links
to per-scan reports of a real --viewer run."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import volume_factory as vf
from test_viewer import CHROMIUM_FLAGS, chromium

from stitchnet.inference.cohort import segment_cohort
from stitchnet.inference.cohort_html import cohort_html, lesion_histogram


def _row(scan_id: str, lesion_pct: float | None, status: str = "ok") -> dict:
    return {
        "scan_id": scan_id,
        "status": status,
        "total_lesion_pct": lesion_pct,
        "total_lung_ml": None if lesion_pct is None else 3000.0,
        "seconds": 1.0,
        "error": "bad file" if status == "error" else None,
    }


# Lesion %: 5 -> bin 0-10, 12 -> 10-20, 35.5 -> 30-40, 100 -> 90-100 (the last bin holds 100),
# 10 -> 10-20 (bins hold their lower edge); the error has none.
ROWS = [
    _row("a<1>", 35.5),
    _row("b", 100.0),
    _row("c", None, "error"),
    _row("d", 5.0),
    _row("e", 12.0),
    _row("f", 10.0),
]


def test_histogram_counted_by_hand():
    counts, missing = lesion_histogram(ROWS)
    assert counts == [1, 2, 0, 1, 0, 0, 0, 0, 0, 1] and missing == 1


def test_page_is_self_contained_and_escapes_ids():
    text = cohort_html(ROWS, {})
    for ref in ("http://", "https://", "src=", "<link", "url(", "import "):
        assert ref not in text, f"the page refers to something outside itself: {ref!r}"
    assert "a&lt;1&gt;" in text and "a<1>" not in text
    assert "report.html" not in text  # no reports written, no links
    bars = re.findall(r'data-bin="(\d+-\d+)" data-count="(\d+)"', text)
    assert bars[:2] == [("0-10", "1"), ("10-20", "2")] and bars[-1] == ("90-100", "1")


@pytest.fixture
def browser():
    if chromium() is None:
        pytest.skip(
            "no Chromium: neither /usr/bin/chromium nor `chromium` on PATH "
            "(Debian: apt-get install -y chromium; `make test` tries this when run as root)"
        )


def dom(page: Path, query: str = "") -> str:
    """The page's DOM after its script ran, as headless Chromium serialises it."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
            f"{page.as_uri()}?{query}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    if "<table" not in proc.stdout:
        raise AssertionError(f"chromium dumped no page; stderr:\n{proc.stderr[-2000:]}")
    return proc.stdout


def _order(text: str) -> list[str]:
    """The scan ids of the table's rows, top to bottom."""
    body = text.split("<tbody>", 1)[1]
    return re.findall(r'<tr data-index="\d+"[^>]*><td class="text" data-value="([^"]*)"', body)


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", ["a&lt;1&gt;", "b", "c", "d", "e", "f"]),  # as written: id order
        ("sort=total_lesion_pct&dir=desc", ["b", "a&lt;1&gt;", "e", "f", "d", "c"]),
        ("sort=total_lesion_pct&dir=asc", ["d", "f", "e", "a&lt;1&gt;", "b", "c"]),  # empty last
        ("sort=status&dir=asc", ["c", "a&lt;1&gt;", "b", "d", "e", "f"]),  # ties keep id order
    ],
)
def test_table_sorted_by_the_page_script(browser, tmp_path, query, expected):
    page = tmp_path / "cohort.html"
    page.write_text(cohort_html(ROWS, {}))
    text = dom(page, query)
    assert _order(text) == expected
    if query:
        key = query.split("&")[0].removeprefix("sort=")
        order = "descending" if "desc" in query else "ascending"
        assert re.search(rf'data-key="{key}"[^>]*aria-sort="{order}"', text)


def test_viewer_run_links_each_scan_report(browser, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    vf.make_nifti(scans / "only.nii.gz", 4, 96, axcodes="LAS")
    out = tmp_path / "out"
    segment_cohort(scans, out, viewer=True, progress=False)
    folder = out / "scans" / "only"
    assert (folder / "report.html").is_file() and len(list((folder / "overlays").iterdir())) == 4
    text = dom(out / "cohort.html")
    link = re.search(r'<a href="([^"]+)">only</a>', text)
    assert link and (out / link.group(1)).resolve() == (folder / "report.html").resolve()
