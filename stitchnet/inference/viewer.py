# Kept whole (~430 lines): ~135 of them are the page's CSS and script, which read best beside
# the Python that fills them in.
"""One self-contained HTML file to look at a segmented scan: `stitchnet segment`'s report.html.

No server, no network: every slice travels inside the file as a PNG data URI, and a small script
draws it on a canvas. Per slice, one RGB PNG "base" holds
    R: the CT in the lung window, G: the CT in the soft-tissue window (8 bits each, exactly what is
    displayed), B: the class id (bits 0-1) and the lung field (bit 2);
and, only when an uncertainty map or a healthy twin is given, one RGB PNG "extra" holds
    R, G: the healthy twin in the two windows, B: the uncertainty scaled to 0..255.
Packing the layers into colour channels keeps them pixel-aligned and lossless at one decode each.
Every layer is packed as a radiological picture (orient.py: anterior up, the patient's right on the
image's left), and A / P / R / L stand in a margin at the middle of the image box's four edges.

State can be set from the URL, as query or hash, so a headless browser needs no clicks:
    report.html?slice=12&overlay=0  or  report.html#slice=12&window=soft&opacity=80
keys: slice (0-based), overlay, uncertainty, twin, lung (0/1), opacity (0-100), window (lung|soft).
Keyboard: arrows step one slice, PageUp/PageDown ten, Home/End; "o" overlay, "w" window.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.figures import LESION_COLOURS
from stitchnet.inference.orient import EDGE_LETTERS, radiological
from stitchnet.inference.png import encode_png, map_threads

LUNG_WINDOW = (-1350.0, 150.0)  # HU: width 1500, level -600, the usual lung window
SOFT_WINDOW = (-160.0, 240.0)  # HU: width 400, level 40, the usual soft-tissue window
VIEW_PX = 512  # the image box is VIEW_PX square, VIEW_ORIGIN px from the page's top left corner
VIEW_ORIGIN = 20  # px: the margin around the box that holds the R / L / A / P letters
HEAT = (255, 140, 0)  # uncertainty tint, orange: far from both lesion colours
LUNG_EDGE = (255, 230, 0)  # lung-field outline
SERIES_COLOURS = {"ggo": "#00d900", "consolidation": "#1a4dff"}
# zlib level of the slice PNGs: 3 encodes ~4x faster than 6 for a file ~9 % larger (the
# benchmark's 300 slices of 512 x 512 with the twin layer: 107 MB at 6, 117 MB at 3).
PNG_LEVEL = 3


def _gray(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (np.clip((hu - lo) / (hi - lo), 0.0, 1.0) * 255).round().astype(np.uint8)


def _png_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb, PNG_LEVEL)).decode("ascii")


def _check(name: str, arr: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise ValueError(f"write_viewer: {name} has shape {arr.shape}, expected (Z, Y, X) {shape}")
    return arr


def encode_slices(
    hu: np.ndarray,
    labels: np.ndarray,
    lung: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    twin_hu: np.ndarray | None = None,
    uncertainty_max: float = math.log(4),
) -> list[dict[str, str | None]]:
    """Per slice {"b": base PNG URI, "e": extra PNG URI or None}; layout in the module doc.

    The PNGs hold radiological pictures (orient.radiological): (X, Y) of the display slice.

    uncertainty_max: the value shown at full tint (default log 4 nats, the entropy of a uniform
    4-class prediction); larger values are clipped.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"write_viewer: hu must be a (Z, Y, X) volume, got shape {hu.shape}")
    labels = _check("labels", labels, hu.shape)
    lung = _check("lung", lung, hu.shape)
    uncertainty = _check("uncertainty", uncertainty, hu.shape)
    twin_hu = _check("twin_hu", twin_hu, hu.shape)
    if labels.min() < 0 or labels.max() > 3:
        raise ValueError(f"write_viewer: labels must be class ids 0..3, found {labels.min()}..")
    code = labels.astype(np.uint8) | (
        (np.asarray(lung) > 0).astype(np.uint8) << 2 if lung is not None else 0
    )

    def encode(k: int) -> dict[str, str | None]:
        base = np.stack([_gray(hu[k], LUNG_WINDOW), _gray(hu[k], SOFT_WINDOW), code[k]], -1)
        base = radiological(base)  # (Y, X, 3) display -> (X, Y, 3) picture
        extra = None
        if uncertainty is not None or twin_hu is not None:
            t = hu[k] if twin_hu is None else np.asarray(twin_hu[k], dtype=np.float32)
            u = np.zeros(hu.shape[1:]) if uncertainty is None else uncertainty[k]
            u8 = (np.clip(u / uncertainty_max, 0.0, 1.0) * 255).round().astype(np.uint8)
            extra = np.stack([_gray(t, LUNG_WINDOW), _gray(t, SOFT_WINDOW), u8], -1)
            extra = _png_uri(radiological(extra))
        return {"b": _png_uri(base), "e": extra}

    return list(map_threads(encode, range(hu.shape[0])))  # slices on all cores (png.py)


def lesion_ml_per_slice(labels: np.ndarray, voxel_ml: float) -> dict[str, list[float]]:
    """The plot's series from a (Z, Y, X) label volume: GGO (class 2) and consolidation (3) mL
    per slice, voxel counts times one voxel's volume, so they sum to the burden's totals."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not voxel_ml > 0:
        raise ValueError(
            f"lesion_ml_per_slice: labels of shape {labels.shape} and voxel volume {voxel_ml} mL; "
            f"expected (Z, Y, X) labels and a positive volume"
        )
    flat = labels.reshape(labels.shape[0], -1)
    return {
        name: [float(c) * voxel_ml for c in (flat == cls).sum(axis=1)]
        for name, cls in (("ggo", 2), ("consolidation", 3))
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:,.2f}"
    return html.escape(str(v))


def burden_table(burden: Mapping[str, Any]) -> str:
    """A nested dict (region -> {quantity: value}) as rows by columns; a flat one as two columns."""
    if burden and all(isinstance(v, Mapping) for v in burden.values()):
        cols = list(dict.fromkeys(c for v in burden.values() for c in v))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        rows = "".join(
            f"<tr><th>{html.escape(str(r))}</th>"
            + "".join(f"<td>{_fmt(v.get(c, ''))}</td>" for c in cols)
            + "</tr>"
            for r, v in burden.items()
        )
        return f'<table id="burden"><tr><th></th>{head}</tr>{rows}</table>'
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in burden.items()
    )
    return f'<table id="burden">{rows}</table>'


def slice_plot(per_slice_ml: Mapping[str, Sequence[float]], n: int) -> str:
    """Inline SVG: one polyline per series (mL per slice) and a cursor line the script moves."""
    w, h, left, bottom = 480, 150, 44, 22
    top = max([max(map(float, v), default=0.0) for v in per_slice_ml.values()] + [0.0]) or 1.0
    dx = (w - left - 8) / max(n - 1, 1)

    def xy(i: int, v: float) -> str:
        return f"{left + i * dx:.1f},{h - bottom - float(v) / top * (h - bottom - 10):.1f}"

    lines = []
    for name, values in per_slice_ml.items():
        if len(values) != n:
            raise ValueError(
                f"write_viewer: per_slice_ml[{name!r}] has {len(values)} values, "
                f"expected one per slice ({n})"
            )
        colour = SERIES_COLOURS.get(name, "#888")
        pts = " ".join(xy(i, v) for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        lines.append(
            f'<text x="{left + 8}" y="{20 + 12 * (len(lines) // 2)}" '
            f'style="fill:{colour}" font-size="11">{html.escape(name)}</text>'
        )
    axes = (
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 8}" y2="{h - bottom}" stroke="#999"/>'
        f'<line x1="{left}" y1="10" x2="{left}" y2="{h - bottom}" stroke="#999"/>'
        f'<text x="{left - 4}" y="14" text-anchor="end" font-size="10">{top:.2f}</text>'
        f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end" font-size="10">0</text>'
        f'<text x="{left - 4}" y="{h / 2}" text-anchor="end" font-size="10">mL</text>'
        f'<text x="{(w + left) / 2}" y="{h - 4}" text-anchor="middle" font-size="10">slice</text>'
    )
    cursor = f'<line id="cursor" x1="{left}" y1="10" x2="{left}" y2="{h - bottom}" stroke="#c00"/>'
    return (
        f'<svg id="plot" width="{w}" height="{h}" data-left="{left}" data-dx="{dx}">'
        f"{axes}{''.join(lines)}{cursor}</svg>"
    )


_CSS = f"""
body {{ margin: 0; font: 13px sans-serif; background: #111; color: #ddd; }}
#box {{ position: absolute; left: {VIEW_ORIGIN}px; top: {VIEW_ORIGIN}px; width: {VIEW_PX}px;
  height: {VIEW_PX}px; background: #000; display: flex; align-items: center;
  justify-content: center; }}
#view {{ image-rendering: pixelated; }}
.mark {{ position: absolute; width: {VIEW_ORIGIN}px; line-height: {VIEW_ORIGIN}px;
  text-align: center; font: bold 14px sans-serif; color: #eee; }}
#panel {{ position: absolute; left: {VIEW_PX + 2 * VIEW_ORIGIN + 16}px; top: 0; right: 8px; }}
#panel h1 {{ font-size: 16px; margin: 8px 0 2px; }}
.meta {{ color: #aaa; margin-bottom: 8px; }}
.row {{ margin: 6px 0; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #444; padding: 2px 6px; text-align: right; }}
#plot {{ background: #1c1c1c; cursor: pointer; }}
#plot text {{ fill: #bbb; }}
.sw {{ display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; }}
"""

_JS = """
const D = JSON.parse(document.getElementById('data').textContent);
const canvas = document.getElementById('view'), ctx = canvas.getContext('2d');
const S = {slice: D.start, overlay: true, opacity: 50, window: 'lung',
           uncertainty: false, twin: false, lung: false};
const cache = new Map();
const scale = D.box / Math.max(D.w, D.h);
canvas.width = D.w; canvas.height = D.h;
canvas.style.width = (D.w * scale) + 'px'; canvas.style.height = (D.h * scale) + 'px';
const $ = id => document.getElementById(id);

function apply(k, v) {
  const on = !(v === '0' || v === 'false' || v === 'off');
  if (k === 'slice') S.slice = Math.min(D.z - 1, Math.max(0, parseInt(v, 10) || 0));
  else if (k === 'opacity') S.opacity = Math.min(100, Math.max(0, parseFloat(v) || 0));
  else if (k === 'window') S.window = v === 'soft' ? 'soft' : 'lung';
  else if (k in S) S[k] = on;
}
for (const p of [location.search.slice(1), location.hash.slice(1)])
  for (const [k, v] of new URLSearchParams(p)) apply(k, v);

function pixels(uri) {
  if (!uri) return Promise.resolve(null);
  const img = new Image();
  img.src = uri;
  return img.decode().then(() => {
    const c = document.createElement('canvas');
    c.width = D.w; c.height = D.h;
    const x = c.getContext('2d');
    x.drawImage(img, 0, 0);
    return x.getImageData(0, 0, D.w, D.h).data;
  });
}
function load(k) {
  if (!cache.has(k)) cache.set(k, Promise.all([pixels(D.slices[k].b), pixels(D.slices[k].e)]));
  return cache.get(k);
}

function blend(px, p, col, a) {
  px[p] += (col[0] - px[p]) * a; px[p + 1] += (col[1] - px[p + 1]) * a;
  px[p + 2] += (col[2] - px[p + 2]) * a;
}
function compose(b, e) {
  const out = ctx.createImageData(D.w, D.h), o = out.data, w = D.w;
  const ch = S.window === 'lung' ? 0 : 1, a = S.opacity / 100, px = [0, 0, 0];
  for (let i = 0, p = 0; i < D.w * D.h; i++, p += 4) {
    const g = (S.twin && e) ? e[p + ch] : b[p + ch], code = b[p + 2], cls = code & 3;
    px[0] = g; px[1] = g; px[2] = g;
    if (S.uncertainty && e) blend(px, 0, D.heat, 0.85 * e[p + 2] / 255);
    if (S.overlay && cls >= 2) blend(px, 0, D.colours[cls], a);
    if (S.lung && (code & 4)) {
      const x = i % w, edge = x === 0 || x === w - 1 || i < w || i >= D.w * (D.h - 1) ||
        !(b[p - 2] & 4) || !(b[p + 6] & 4) || !(b[p - 4 * w + 2] & 4) || !(b[p + 4 * w + 2] & 4);
      if (edge) blend(px, 0, D.edge, 1);
    }
    o[p] = px[0]; o[p + 1] = px[1]; o[p + 2] = px[2]; o[p + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function sync() {
  $('slice').value = S.slice;
  $('label').textContent = 'slice ' + S.slice + ' of ' + D.z + ' (0-based)';
  $('overlay').checked = S.overlay; $('opacity').value = S.opacity;
  $('win-' + S.window).checked = true;
  for (const k of ['uncertainty', 'twin', 'lung']) if ($(k)) $(k).checked = S[k];
  const cur = $('cursor'), plot = $('plot');
  const x = +plot.dataset.left + S.slice * +plot.dataset.dx;
  cur.setAttribute('x1', x); cur.setAttribute('x2', x);
  const ml = Object.entries(D.series).map(([n, v]) => n + ' ' + v[S.slice].toFixed(2) + ' mL');
  $('here').textContent = ml.join(', ');
  const h = new URLSearchParams({slice: S.slice, overlay: +S.overlay, opacity: S.opacity,
    window: S.window, uncertainty: +S.uncertainty, twin: +S.twin, lung: +S.lung});
  history.replaceState(null, '', '#' + h);
}
function render() {
  sync();
  const k = S.slice;
  load(k).then(([b, e]) => {
    if (k !== S.slice) return;
    compose(b, e);
    document.body.dataset.slice = k; document.body.dataset.ready = '1';
    for (const n of [k - 1, k + 1]) if (n >= 0 && n < D.z) load(n);
  });
}
function go(k) { S.slice = Math.min(D.z - 1, Math.max(0, k)); render(); }

$('slice').max = D.z - 1;
$('slice').addEventListener('input', ev => go(+ev.target.value));
$('overlay').addEventListener('change', ev => { S.overlay = ev.target.checked; render(); });
$('opacity').addEventListener('input', ev => { S.opacity = +ev.target.value; render(); });
for (const wn of ['lung', 'soft'])
  $('win-' + wn).addEventListener('change', () => { S.window = wn; render(); });
for (const k of ['uncertainty', 'twin', 'lung']) if ($(k))
  $(k).addEventListener('change', ev => { S[k] = ev.target.checked; render(); });
document.addEventListener('keydown', ev => {
  const step = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10,
                PageDown: -10}[ev.key];
  if (step !== undefined) { go(S.slice + step); ev.preventDefault(); }
  else if (ev.key === 'Home') go(0);
  else if (ev.key === 'End') go(D.z - 1);
  else if (ev.key === 'o') { S.overlay = !S.overlay; render(); }
  else if (ev.key === 'w') { S.window = S.window === 'lung' ? 'soft' : 'lung'; render(); }
});
$('box').addEventListener('wheel', ev => {
  ev.preventDefault(); go(S.slice + Math.sign(ev.deltaY));
}, {passive: false});
$('plot').addEventListener('click', ev => {
  const r = $('plot').getBoundingClientRect();
  go(Math.round((ev.clientX - r.left - +$('plot').dataset.left) / +$('plot').dataset.dx));
});
render();
"""


def _marks() -> str:
    """A / P / R / L in the margin at the middle of the image box's top, bottom, left, right."""
    mid = VIEW_ORIGIN + (VIEW_PX - VIEW_ORIGIN) // 2  # a letter's cell centred on the box's edge
    far = VIEW_ORIGIN + VIEW_PX  # the margin beyond the box's bottom / right edge
    where = {"top": (0, mid), "bottom": (far, mid), "left": (mid, 0), "right": (mid, far)}
    names = {"A": "anterior", "P": "posterior", "R": "patient's right", "L": "patient's left"}
    return "".join(
        f'<div class="mark" id="mark-{edge}" title="{html.escape(names[letter])}" '
        f'style="top:{where[edge][0]}px;left:{where[edge][1]}px">{letter}</div>'
        for edge, letter in EDGE_LETTERS.items()
    )


def _controls(has_unc: bool, has_twin: bool, has_lung: bool) -> str:
    def box(key: str, text: str) -> str:
        return f'<label><input type="checkbox" id="{key}"> {text}</label> '

    layers = (
        (box("uncertainty", "uncertainty (orange)") if has_unc else "")
        + (box("twin", "healthy twin") if has_twin else "")
        + (box("lung", "lung outline (yellow)") if has_lung else "")
    )
    g, c = (LESION_COLOURS[k] for k in (2, 3))
    sw = "".join(
        f'<span class="sw" style="background:rgb({r * 255:.0f},{gg * 255:.0f},{b * 255:.0f})">'
        f"</span>{name}"
        for name, (r, gg, b) in (("GGO", g), ("consolidation", c))
    )
    return (
        '<div class="row"><input type="range" id="slice" min="0" value="0" style="width:100%">'
        '<div><span id="label"></span> &middot; <span id="here"></span></div></div>'
        '<div class="row"><label><input type="checkbox" id="overlay"> labels</label>'
        f'{sw} &middot; opacity <input type="range" id="opacity" min="0" max="100"></div>'
        '<div class="row">window: <label><input type="radio" name="win" id="win-lung"> lung '
        f"({LUNG_WINDOW[0]:.0f}..{LUNG_WINDOW[1]:.0f} HU)</label> "
        '<label><input type="radio" name="win" id="win-soft"> soft tissue '
        f"({SOFT_WINDOW[0]:.0f}..{SOFT_WINDOW[1]:.0f} HU)</label></div>"
        + (f'<div class="row">{layers}</div>' if layers else "")
        + '<div class="meta">arrows / wheel: slice &middot; PageUp/PageDown: 10 slices '
        "&middot; o: labels &middot; w: window<br>radiological view: anterior up, the "
        "patient's right on the image's left</div>"
    )


def write_viewer(
    path: str | Path,
    hu: np.ndarray,
    labels: np.ndarray,
    lung: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    twin_hu: np.ndarray | None = None,
    burden: Mapping[str, Any] | None = None,
    per_slice_ml: Mapping[str, Sequence[float]] | None = None,
    meta: Mapping[str, Any] | None = None,
    uncertainty_max: float = math.log(4),
) -> Path:
    """Write the viewer for one scan as a single HTML file and return its path.

    Args:
        hu: (Z, Y, X) the scan in HU, in display orientation (data.volumes.DISPLAY_AXCODES);
            the page shows each slice as a radiological picture (orient.radiological).
        labels: (Z, Y, X) class ids 0-3 (2 GGO, drawn green; 3 consolidation, drawn blue).
        lung: (Z, Y, X) lung field (non-zero inside), drawn as an outline layer.
        uncertainty: (Z, Y, X) e.g. predictive entropy in nats; full tint at `uncertainty_max`.
        twin_hu: (Z, Y, X) the healthy twin in HU (`stitchnet.inference.twin`).
        burden: the burden table, nested (region -> {quantity: value}) or flat.
        per_slice_ml: series name ("ggo", "consolidation") -> Z values in mL, plotted.
        meta: shown in the header: model, version, date, source (and any other keys).
    The page opens at the slice with the most lesion voxels.
    """
    slices = encode_slices(hu, labels, lung, uncertainty, twin_hu, uncertainty_max)
    z = np.asarray(hu).shape[0]
    h, w = radiological(np.asarray(hu)[0]).shape  # the picture's rows and columns
    lesion_per_slice = (np.asarray(labels) >= 2).reshape(z, -1).sum(axis=1)
    series = {k: [float(v) for v in vals] for k, vals in (per_slice_ml or {}).items()}
    data = {
        "z": z, "h": h, "w": w, "box": VIEW_PX, "slices": slices, "series": series,
        "start": int(lesion_per_slice.argmax()),
        "colours": {k: [round(c * 255) for c in v] for k, v in LESION_COLOURS.items()},
        "heat": HEAT, "edge": LUNG_EDGE,
    }  # fmt: skip
    meta = dict(meta or {})
    title = f"{meta.get('source', 'scan')} - {meta.get('model', 'model')}"
    meta_line = " &middot; ".join(
        f"{html.escape(str(k))}: <b>{html.escape(str(v))}</b>" for k, v in meta.items()
    )
    # "</" inside the JSON would end the script element early; data URIs never hold it.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        '<div id="box"><canvas id="view"></canvas></div>' + _marks() + '<div id="panel">'
        f"<h1>{html.escape(title)}</h1><div class='meta'>{meta_line}</div>"
        + _controls(uncertainty is not None, twin_hu is not None, lung is not None)
        + "<h2 style='font-size:14px'>Lesion burden</h2>"
        + burden_table(burden or {})
        + "<h2 style='font-size:14px'>Lesion volume per slice</h2>"
        + slice_plot(series, z)
        + f'</div><script type="application/json" id="data">{payload}</script>'
        + f"<script>{_JS}</script></body></html>"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # never a half-written report.html
    return out
