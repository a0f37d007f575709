"""A feature card as one self-contained HTML page: both features of a matched pair side by side.

Everything is inline (styles, the histograms as SVG, no script needed to read it): the page makes no
network request of any kind, so it opens from disk, from an archived report or on an offline cluster.
Token text is escaped; whitespace is kept visible.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from .activations import ActivationProfile
from .linked_map import MAP_STYLE

Context = list[tuple[str, float]]
"""A context: its tokens in order, each with the feature's activation on it (0 where it does not fire)."""


@dataclass(frozen=True)
class CardSide:
    """One feature of the pair and what the card shows of it."""

    model: str
    layer: int
    feature: int
    profile: ActivationProfile
    top_contexts: list[Context]
    """Contexts of its strongest activations, strongest first."""
    quantile_contexts: list[list[Context]]
    """Per quantile range of its firing activations (lowest first), sampled contexts."""
    promoted: list[tuple[str, float]]
    """Output tokens its decoder direction raises most, with the logit effect."""
    suppressed: list[tuple[str, float]]
    """Output tokens it lowers most."""


@dataclass(frozen=True)
class PairCard:
    """A matched pair: its two sides and what the matching said about it."""

    a: CardSide
    b: CardSide
    correlation: float
    """Activation correlation of the pair over the aligned positions."""
    kind: str
    """Why this pair has a card: best, median, surprising, random, or named."""
    rank_among_candidates: int | None = None
    """The A feature's rank among the B feature's candidates (1 = its most correlated)."""
    filters: dict = field(default_factory=dict)
    """Filter name -> passed."""
    context_only_correlation: float | None = None
    """The pair's correlation once each feature's mean for the current token is removed."""
    effect_correlation: float | None = None
    """The correlation of the two features' effects on their models' next-token loss over the causal sample's
    aligned positions (causal/), where the causal check ran and the pair is kept."""
    output_overlap: float | None = None
    """Jaccard overlap of the decoded output strings the two features promote, where the causal check ran."""
    same_text: dict = field(default_factory=dict)
    """Heading -> [(A's context, B's context)] at the same aligned positions: where both fire most, where only
    A fires, where only B does."""


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.25em; margin: 0 0 .3em; }
.facts span { margin-right: 1.2em; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; margin-top: 1em; }
.side { border: 1px solid #ccc; border-radius: 6px; padding: .8em; min-width: 0; }
.side h2 { font-size: 1.05em; margin: 0 0 .4em; }
.context { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word;
           border-bottom: 1px dotted #ddd; padding: .2em 0; }
.token { border-radius: 2px; }
.tokens li { font-family: ui-monospace, monospace; white-space: pre; }
.muted { color: #777; }
.same-text { display: grid; grid-template-columns: 1fr 1fr; gap: 0 1.5em; }
"""


def _token_span(text: str, activation: float, peak: float, colour: str) -> str:
    """A token, shaded by the feature's activation on it; a token it does not fire on is plain text (most of a
    context: no markup keeps the report's page under the size a browser loads from a data URL)."""
    if activation <= 0 or peak <= 0:
        return html.escape(text)
    alpha = float(np.clip(activation / peak, 0.0, 1.0))
    return (f'<span class="token" style="background: rgba({colour}, {alpha:.2f})" title="{activation:.3g}">'
            f"{html.escape(text)}</span>")


def _context(context: Context, peak: float, colour: str) -> str:
    return '<div class="context">' + "".join(_token_span(text, value, peak, colour) for text, value in context) + "</div>"


def _histogram(profile: ActivationProfile, colour: str, width: int = 320, height: int = 80) -> str:
    counts = profile.histogram_counts.astype(float)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    bar = width / max(1, len(counts))
    bars = "".join(f'<rect x="{index * bar:.1f}" y="{height - count / top * height:.1f}" width="{bar * 0.9:.1f}" '
                   f'height="{count / top * height:.1f}" fill="rgb({colour})"><title>{int(count)}</title></rect>'
                   for index, count in enumerate(counts))
    edges = profile.histogram_edges
    return (f'<svg class="histogram" width="{width}" height="{height + 16}" role="img" '
            f'aria-label="histogram of firing activations">{bars}'
            f'<text x="0" y="{height + 13}" font-size="10">0</text>'
            f'<text x="{width}" y="{height + 13}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text></svg>')


def _token_list(tokens: list[tuple[str, float]]) -> str:
    return '<ol class="tokens">' + "".join(f"<li>{html.escape(repr(text)[1:-1])} "
                                           f'<span class="muted">{value:+.3g}</span></li>'
                                           for text, value in tokens) + "</ol>"


def _side(side: CardSide, colour: str) -> str:
    peak = max((value for context in side.top_contexts for _, value in context), default=0.0)
    ranges = ""
    edges = side.profile.quantile_edges
    for index, contexts in enumerate(side.quantile_contexts):
        if not contexts:
            continue
        low, high = (edges[index], edges[index + 1]) if len(edges) > index + 1 else (0.0, 0.0)
        ranges += (f'<h4>activations {low:.3g} to {high:.3g}</h4>'
                   + "".join(_context(context, peak, colour) for context in contexts))
    return (f'<section class="side"><h2>{html.escape(side.model)} layer {side.layer}, feature {side.feature}</h2>'
            f'<p>fires at {side.profile.density:.2%} of {side.profile.n_positions:,} aligned positions</p>'
            f"{_histogram(side.profile, colour)}"
            f"<h3>Top contexts</h3>" + "".join(_context(context, peak, colour) for context in side.top_contexts)
            + f"<h3>Samples across its activations</h3>{ranges or '<p class=muted>none</p>'}"
            f'<div class="sides" style="margin-top:.5em"><div><h3>Promotes</h3>{_token_list(side.promoted)}</div>'
            f"<div><h3>Suppresses</h3>{_token_list(side.suppressed)}</div></div></section>")


def _same_text_section(card: PairCard) -> str:
    """Both features over the same aligned positions: A's context beside B's, each shaded by its own feature."""
    if not card.same_text:
        return ""
    peaks = []
    for index in (0, 1):
        peaks.append(max((value for rows in card.same_text.values() for row in rows for _, value in row[index]),
                         default=0.0))
    parts = []
    for heading, rows in card.same_text.items():
        if not rows:
            continue
        parts.append(f"<h3>{html.escape(heading)}</h3>" + '<div class="same-text">' + "".join(
            _context(context_a, peaks[0], "31, 119, 180") + _context(context_b, peaks[1], "214, 39, 40")
            for context_a, context_b in rows) + "</div>")
    return ('<section class="same-text-section"><h2>On the same text (A left, B right)</h2>' + "".join(parts)
            + "</section>") if parts else ""


def card_body(card: PairCard) -> str:
    """The inner HTML of one pair's card: a header with what the matching said, then A and B side by side."""
    facts = [f"correlation {card.correlation:.3f}" if np.isfinite(card.correlation) else "correlation undefined "
             "(a feature that never varies here)"]
    if card.rank_among_candidates is not None:
        facts.append(f"rank {card.rank_among_candidates} among the B feature's candidates")
    if card.context_only_correlation is not None:
        facts.append(f"without the current token {card.context_only_correlation:.3f}")
    if card.effect_correlation is not None and np.isfinite(card.effect_correlation):
        facts.append(f"effects on the next-token loss correlate at {card.effect_correlation:.3f}")
    if card.output_overlap is not None:
        facts.append(f"promoted output strings overlap {card.output_overlap:.2f}")
    facts += [f"{html.escape(name)}: {'passed' if passed else 'failed'}" for name, passed in card.filters.items()]
    return (f"<h1>{html.escape(card.kind)} pair: {html.escape(_title(card))}</h1>"
            f'<p class="facts">' + "".join(f"<span>{fact}</span>" for fact in facts) + "</p>"
            f"{_same_text_section(card)}"
            f'<div class="sides">{_side(card.a, "31, 119, 180")}{_side(card.b, "214, 39, 40")}</div>')


def _title(card: PairCard) -> str:
    return f"{card.a.model} {card.a.layer}/{card.a.feature} and {card.b.model} {card.b.layer}/{card.b.feature}"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}{MAP_STYLE}</style></head><body>{body}</body></html>\n")


def card_anchor(card: PairCard) -> str:
    """The id of a card's section on the combined page."""
    return f"card-{card.kind}-a{card.a.feature}-b{card.b.feature}"


def card_html(card: PairCard) -> str:
    """The page of one pair."""
    return _page(_title(card), card_body(card))


def cards_page(title: str, cards: list[PairCard], linked_map: str = "") -> str:
    """A layer pair's linked map (an HTML section, `linked_map.map_section`) and every card on one page, with a
    list of the cards at the top (what the report shows)."""
    listing = "".join(f'<li><a href="#{card_anchor(card)}">{html.escape(card.kind)}: {html.escape(_title(card))} '
                      f"(correlation {_correlation_text(card.correlation)})</a></li>" for card in cards)
    sections = "".join(f'<section id="{card_anchor(card)}" class="card">{card_body(card)}</section><hr>'
                       for card in cards)
    return _page(title, f"<h1>{html.escape(title)}</h1>{linked_map}<h2>Feature cards</h2><ul>{listing}</ul><hr>"
                        f"{sections}")


def map_page(title: str, linked_map: str) -> str:
    """The linked map alone (the cards folder's map.html, linking to the cards' own pages)."""
    return _page(title, f"<h1>{html.escape(title)}</h1>{linked_map}")


def _correlation_text(correlation: float) -> str:
    return f"{correlation:.3f}" if np.isfinite(correlation) else "undefined"
