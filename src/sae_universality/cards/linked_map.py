"""The linked map of a layer pair: both SAEs' features in two panels, each placed by its decoder direction
(`cards.layout`), with the kept pairs linking them.

Hovering a point shows the tokens its feature fires on and promotes, and its partner (lit in the other panel).
Dragging a rectangle in either panel selects the points inside (a click selects the nearest one): their
partners light up in the other panel and the selected pairs are listed, each with a link to its card where it
has one. Colour shows each kept pair's correlation, or whether its two features share a top token (a lexical
pair) or not.

The page is self-contained like the cards: the points are SVG drawn here, the data is inline JSON and the
script inline, so it opens from disk with the network off and makes no request of any kind.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

WIDTH, HEIGHT, MARGIN = 460, 400, 12
"""Each panel's size in SVG units, and the empty border around its points."""
MAX_LISTED = 300
"""Pairs the selection lists at most (the count says how many were selected)."""

# Viridis at five stops, light to dark reversed so stronger correlation reads darker.
_SCALE = np.array([[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]], dtype=float)
UNMATCHED, LEXICAL, NON_LEXICAL = "#c8c8c8", "#e6830f", "#6a3d9a"
CATEGORY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                    "#ff7f0e", "#7f7f7f")
"""One colour per semantic category, in order of size (the tenth and beyond share the last); none: light grey."""
NO_CATEGORY = "#e4e4e4"


@dataclass(frozen=True)
class MapSide:
    """One panel: a model's SAE at a layer."""

    label: str
    """e.g. "smollm2 layer 9"."""
    layout: np.ndarray
    """(n_features, 2) map coordinates (`cards.layout`)."""
    fires_on: dict
    """feature -> the tokens it fires on most, where the match table knows them."""
    promotes: list
    """Per feature, the output tokens its decoder direction promotes most."""


@dataclass(frozen=True)
class MapPair:
    """A kept pair as the map links it."""

    feature_a: int
    feature_b: int
    correlation: float
    lexical: bool
    """Its two features share a top activating token."""
    card: str | None = None
    """Where its card is (a file or an #anchor), if it has one."""
    category: str | None = None
    """Its semantic category (matching/categories: the keyword list its top token is in), if any."""


def correlation_colour(correlation: float, low: float = 0.0, high: float = 1.0) -> str:
    """A kept pair's colour: viridis from `low` (light) to `high` (dark)."""
    position = float(np.clip((correlation - low) / (high - low) if high > low else 1.0, 0.0, 1.0)) * (len(_SCALE) - 1)
    index = min(int(position), len(_SCALE) - 2)
    rgb = _SCALE[index] + (_SCALE[index + 1] - _SCALE[index]) * (position - index)
    return "#" + "".join(f"{int(round(value)):02x}" for value in rgb)


def _screen(layout: np.ndarray) -> np.ndarray:
    """Layout coordinates -> panel coordinates (y down), each axis stretched to the panel."""
    layout = np.asarray(layout, dtype=np.float64)
    if not len(layout):
        return layout.reshape(0, 2)
    low, high = layout.min(axis=0), layout.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    unit = (layout - low) / span
    return np.column_stack([MARGIN + unit[:, 0] * (WIDTH - 2 * MARGIN),
                            HEIGHT - MARGIN - unit[:, 1] * (HEIGHT - 2 * MARGIN)])


def _panel(key: str, side: MapSide) -> str:
    """An empty panel: the script draws its points from the page's data (coordinates as numbers, not markup,
    keep a map of thousands of features small enough for a report's data URL)."""
    return (f'<figure class="map-figure"><figcaption>{key.upper()}: {html.escape(side.label)}</figcaption>'
            f'<svg id="panel-{key}" class="map-panel" data-side="{key}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{html.escape(side.label)} features by decoder direction">'
            f'<rect class="backdrop" x="0" y="0" width="{WIDTH}" height="{HEIGHT}"></rect><g class="points"></g>'
            f'<rect class="brush" x="0" y="0" width="0" height="0" visibility="hidden"></rect></svg></figure>')


MAP_STYLE = """
.map-controls { margin: .4em 0; }
.map-controls > * { margin-right: 1em; }
.map-panels { display: flex; flex-wrap: wrap; gap: 1em; }
.map-figure { margin: 0; }
.map-figure figcaption { font-weight: 600; }
.map-panel { border: 1px solid #ccc; border-radius: 4px; cursor: crosshair; user-select: none; }
.map-panel .backdrop { fill: #fff; }
.map-panel .point { stroke: none; }
.map-panel .point.selected { stroke: #000; stroke-width: 1.4; }
.map-panel .point.partner, .map-panel .point.hover-partner { stroke: #d62728; stroke-width: 2.2; }
.map-panel .brush { fill: rgba(31, 119, 180, .12); stroke: #1f77b4; stroke-dasharray: 4 2; }
#map-tooltip { position: fixed; z-index: 10; max-width: 26em; background: #fff; border: 1px solid #888;
               border-radius: 4px; padding: .4em .6em; font-size: 12px; pointer-events: none;
               box-shadow: 0 1px 4px rgba(0, 0, 0, .2); white-space: pre-wrap; }
#pair-list li { font-family: ui-monospace, monospace; white-space: pre-wrap; }
.legend span { display: inline-block; width: .9em; height: .9em; border-radius: 50%; vertical-align: middle;
               margin: 0 .25em 0 .6em; }
"""

MAP_SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const tooltip = document.getElementById("map-tooltip");
  const list = document.getElementById("pair-list");
  const count = document.getElementById("pair-count");
  const other = {a: "b", b: "a"};
  const partnerOf = {a: {}, b: {}};
  data.pairs.forEach(function (pair, index) { partnerOf.a[pair[0]] = index; partnerOf.b[pair[1]] = index; });
  const svgNS = document.querySelector("svg.map-panel").namespaceURI;  // SVG's, read off the page
  ["a", "b"].forEach(function (side) {  // unmatched points first, so the kept ones are drawn on top
    const layer = document.querySelector("#panel-" + side + " g.points");
    const order = data[side].xy.map(function (_, feature) { return feature; });
    order.sort(function (i, j) { return (i in partnerOf[side]) - (j in partnerOf[side]) || i - j; });
    order.forEach(function (feature) {
      const circle = document.createElementNS(svgNS, "circle");
      const kept = feature in partnerOf[side];
      circle.setAttribute("id", side + "-" + feature);
      circle.setAttribute("class", kept ? "point kept" : "point");
      circle.dataset.feature = String(feature);
      circle.setAttribute("cx", data[side].xy[feature][0]);
      circle.setAttribute("cy", data[side].xy[feature][1]);
      circle.setAttribute("r", kept ? 3.2 : 2.2);
      layer.appendChild(circle);
    });
  });
  function point(side, feature) { return document.getElementById(side + "-" + feature); }
  function tokens(values) { return values && values.length ? values.map(JSON.stringify).join(" ") : "(not known)"; }
  function describe(side, feature) {
    const facts = data[side];
    let text = side.toUpperCase() + " " + feature + " (" + facts.label + ")\nfires on: " +
      tokens(facts.fires_on[feature]) + "\npromotes: " + tokens(facts.promotes[feature]);
    const index = partnerOf[side][feature];
    if (index === undefined) return text + "\nno kept partner";
    const pair = data.pairs[index];
    const partner = side === "a" ? pair[1] : pair[0];
    return text + "\npartner " + other[side].toUpperCase() + " " + partner + ", correlation " + pair[2].toFixed(3) +
      (pair[3] ? ", shares a top token" : ", no shared top token") + (pair[5] ? "\ncategory: " + pair[5] : "");
  }
  function clearClass(name) {
    document.querySelectorAll(".map-panel ." + name).forEach(function (node) { node.classList.remove(name); });
  }
  function partnerPoint(side, feature) {
    const index = partnerOf[side][feature];
    if (index === undefined) return null;
    return point(other[side], data.pairs[index][side === "a" ? 1 : 0]);
  }
  function recolour(mode) {
    ["a", "b"].forEach(function (side) {
      document.querySelectorAll("#panel-" + side + " circle.point").forEach(function (circle) {
        const index = partnerOf[side][circle.dataset.feature];
        circle.setAttribute("fill", index === undefined ? data.unmatched : data.colours[mode][index]);
      });
    });
    document.querySelectorAll(".legend").forEach(function (legend) { legend.hidden = legend.dataset.mode !== mode; });
  }
  function listPairs(indices) {
    list.replaceChildren();
    count.textContent = String(indices.length);
    indices.slice(0, data.max_listed).forEach(function (index) {
      const pair = data.pairs[index];
      const item = document.createElement("li");
      item.dataset.a = pair[0];
      item.dataset.b = pair[1];
      item.textContent = "A " + pair[0] + " " + tokens(data.a.fires_on[pair[0]]) + "  <->  B " + pair[1] + " " +
        tokens(data.b.fires_on[pair[1]]) + "  correlation " + pair[2].toFixed(3) + " ";
      if (pair[4]) {
        const link = document.createElement("a");
        link.href = pair[4];
        link.textContent = "card";
        item.appendChild(link);
      }
      list.appendChild(item);
    });
    if (indices.length > data.max_listed) {
      const more = document.createElement("li");
      more.textContent = "... and " + (indices.length - data.max_listed) + " more";
      list.appendChild(more);
    }
  }
  function select(side, box) {
    clearClass("selected");
    clearClass("partner");
    const circles = Array.from(document.querySelectorAll("#panel-" + side + " circle.point"));
    let chosen = circles.filter(function (circle) {
      const x = Number(circle.getAttribute("cx")), y = Number(circle.getAttribute("cy"));
      return x >= box.x0 && x <= box.x1 && y >= box.y0 && y <= box.y1;
    });
    if (box.x1 - box.x0 < 3 && box.y1 - box.y0 < 3) {  // a click: the nearest point within reach
      let best = null, bestDistance = 8;
      circles.forEach(function (circle) {
        const distance = Math.hypot(Number(circle.getAttribute("cx")) - box.x0, Number(circle.getAttribute("cy")) - box.y0);
        if (distance <= bestDistance) { best = circle; bestDistance = distance; }
      });
      chosen = best ? [best] : [];
    }
    const indices = [];
    chosen.forEach(function (circle) {
      circle.classList.add("selected");
      const index = partnerOf[side][circle.dataset.feature];
      if (index !== undefined) {
        indices.push(index);
        partnerPoint(side, circle.dataset.feature).classList.add("partner");
      }
    });
    indices.sort(function (i, j) { return data.pairs[j][2] - data.pairs[i][2]; });
    listPairs(indices);
  }
  document.querySelectorAll("svg.map-panel").forEach(function (svg) {
    const side = svg.dataset.side;
    const brush = svg.querySelector("rect.brush");
    let start = null;
    function at(event) {
      const spot = svg.createSVGPoint();
      spot.x = event.clientX;
      spot.y = event.clientY;
      return spot.matrixTransform(svg.getScreenCTM().inverse());
    }
    function box(end) {
      return {x0: Math.min(start.x, end.x), x1: Math.max(start.x, end.x),
              y0: Math.min(start.y, end.y), y1: Math.max(start.y, end.y)};
    }
    svg.querySelectorAll("circle.point").forEach(function (circle) {
      circle.addEventListener("mouseenter", function (event) {
        tooltip.textContent = describe(side, circle.dataset.feature);
        tooltip.hidden = false;
        tooltip.style.left = (event.clientX + 14) + "px";
        tooltip.style.top = (event.clientY + 14) + "px";
        const partner = partnerPoint(side, circle.dataset.feature);
        if (partner) partner.classList.add("hover-partner");
      });
      circle.addEventListener("mouseleave", function () {
        tooltip.hidden = true;
        clearClass("hover-partner");
      });
    });
    svg.addEventListener("mousedown", function (event) {
      start = at(event);
      event.preventDefault();
    });
    svg.addEventListener("mousemove", function (event) {
      if (!start) return;
      const current = box(at(event));
      brush.setAttribute("x", current.x0);
      brush.setAttribute("y", current.y0);
      brush.setAttribute("width", current.x1 - current.x0);
      brush.setAttribute("height", current.y1 - current.y0);
      brush.setAttribute("visibility", "visible");
    });
    window.addEventListener("mouseup", function (event) {
      if (!start) return;
      const current = box(at(event));
      start = null;
      brush.setAttribute("visibility", "hidden");
      select(side, current);
    });
  });
  recolour("correlation");
  document.getElementById("map-colour").addEventListener("change", function (event) { recolour(event.target.value); });
  document.getElementById("map-clear").addEventListener("click", function () {
    clearClass("selected");
    clearClass("partner");
    listPairs([]);
  });
})();
"""


def map_section(a: MapSide, b: MapSide, pairs: list[MapPair], threshold: float = 0.0) -> str:
    """The map as an HTML section (panels, controls, the pair list, its data and script), to put in a page."""
    pairs = sorted(pairs, key=lambda pair: -pair.correlation if np.isfinite(pair.correlation) else 0.0)
    high = max([pair.correlation for pair in pairs if np.isfinite(pair.correlation)], default=1.0)
    by_correlation = [correlation_colour(pair.correlation, threshold, max(high, threshold + 1e-9)) for pair in pairs]
    by_lexical = [LEXICAL if pair.lexical else NON_LEXICAL for pair in pairs]
    sizes = pd.Series([pair.category for pair in pairs if pair.category], dtype=object).value_counts()
    sizes = sizes.sort_index().sort_values(ascending=False, kind="stable")  # largest first, ties by name
    colour_of = {name: CATEGORY_COLOURS[min(index, len(CATEGORY_COLOURS) - 1)] for index, name in enumerate(sizes.index)}
    by_category = [colour_of.get(pair.category, NO_CATEGORY) for pair in pairs]

    def side_data(side):
        return {"label": side.label, "xy": np.round(_screen(side.layout), 1).tolist(),
                "fires_on": {str(k): v for k, v in side.fires_on.items()}, "promotes": side.promotes}

    data = {
        "a": side_data(a), "b": side_data(b),
        "pairs": [[pair.feature_a, pair.feature_b, round(float(pair.correlation), 4), bool(pair.lexical), pair.card,
                   pair.category] for pair in pairs],
        "colours": {"correlation": by_correlation, "lexical": by_lexical, "category": by_category},
        "unmatched": UNMATCHED, "max_listed": MAX_LISTED,
    }
    # "</" cannot end the script element early: JSON escapes it.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    n_lexical = sum(pair.lexical for pair in pairs)
    legend_correlation = (f'<span class="legend" data-mode="correlation">kept pair, correlation '
                          f'<span style="background:{correlation_colour(0, 0, 1)}"></span>{threshold:.2f} to '
                          f'<span style="background:{correlation_colour(1, 0, 1)}"></span>{high:.2f}'
                          f'<span style="background:{UNMATCHED}"></span>no kept partner</span>')
    legend_lexical = (f'<span class="legend" data-mode="lexical" hidden><span style="background:{LEXICAL}"></span>'
                      f"shares a top token ({n_lexical})<span style=\"background:{NON_LEXICAL}\"></span>"
                      f"shares none ({len(pairs) - n_lexical})<span style=\"background:{UNMATCHED}\"></span>"
                      "no kept partner</span>")
    legend_category = ('<span class="legend" data-mode="category" hidden>' + "".join(
        f'<span style="background:{colour_of[name]}"></span>{html.escape(name)} ({count})'
        for name, count in sizes.items()) + f'<span style="background:{NO_CATEGORY}"></span>no category '
        f"({len(pairs) - int(sizes.sum())})</span>")
    category_option = '<option value="category">semantic category</option>' if len(sizes) else ""
    return (f'<section class="linked-map" id="map"><h2>Linked map: {len(pairs)} kept pairs</h2>'
            f'<p class="muted">Each point is a feature, placed by its decoder direction; drag a rectangle in either '
            f"panel to select features (a click selects one) and see their partners and pairs; hover for tokens.</p>"
            f'<div class="map-controls"><label>colour by <select id="map-colour">'
            f'<option value="correlation">correlation of its pair</option>'
            f'<option value="lexical">shared top token</option>{category_option}</select></label>'
            f'<button type="button" id="map-clear">clear selection</button>{legend_correlation}{legend_lexical}'
            f"{legend_category if len(sizes) else ''}</div>"
            f'<div class="map-panels">{_panel("a", a)}{_panel("b", b)}</div>'
            f'<div id="map-tooltip" role="tooltip" hidden></div>'
            f'<h3>Selected pairs: <span id="pair-count">0</span></h3><ol id="pair-list"></ol>'
            f'<script type="application/json" id="map-data">{payload}</script>'
            f"<script>{MAP_SCRIPT}</script></section>")
