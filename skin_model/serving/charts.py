"""Plotly figures for the Classify page (no Streamlit here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from skin_model.serving.inference import format_probability
from skin_model.labels import CLASSES, CODES

#: Bar colours: malignant classes stand out in red, benign ones in blue.
MALIGNANT_COLOUR = "#c0392b"
BENIGN_COLOUR = "#2e86c1"


def probability_bar_chart(probabilities: Sequence[float], unsure_threshold: float | None = None,
                          height: int = 320, short_labels: bool = False) -> go.Figure:
    """Horizontal bars of all class probabilities (CODES order in), most likely on top.

    Malignant classes (``labels.MALIGNANT_CODES``) are red, hatched and marked "(malignant)"; benign classes are blue.
    ``short_labels``: label the bars with the codes only (``mel *`` for a malignant class), for narrow screens.
    When ``unsure_threshold`` is given, a dotted line shows it.
    """
    if len(probabilities) != len(CODES):
        raise ValueError(f"Expected {len(CODES)} probabilities, got {len(probabilities)}")
    rows = sorted(zip(CLASSES, probabilities), key=lambda cp: cp[1])  # ascending: plotly draws bottom-up
    labels = [(f"{c.code}" + (" *" if c.malignant else "")) if short_labels else
              f"{c.code} · {c.name.split(' (')[0]}" + (" (malignant)" if c.malignant else "") for c, _ in rows]
    values = [float(p) for _, p in rows]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=[MALIGNANT_COLOUR if c.malignant else BENIGN_COLOUR for c, _ in rows],
            marker_pattern_shape=["/" if c.malignant else "" for c, _ in rows],
            text=[format_probability(v) for v in values],
            textposition="outside",
            customdata=[c.name for c, _ in rows],
            hovertemplate="%{customdata}<br>probability %{x:.1%}<extra></extra>",
            cliponaxis=False,
        )
    )
    if unsure_threshold is not None:
        fig.add_vline(x=unsure_threshold, line_dash="dot", line_color="grey",
                      annotation_text=f"unsure below {format_probability(unsure_threshold)}", annotation_position="top")
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=48 if short_labels else 40, t=30, b=30),
        xaxis=dict(range=[0, 1.08], tickformat=".0%", title="Calibrated probability"),
        yaxis=dict(title=None),
        showlegend=False,
    )
    return fig


def attention_legend(bar: np.ndarray, height: int = 70) -> go.Figure:
    """The heatmap colour scale (``bar``: a uint8 RGB strip, low attention on the left) with tick labels."""
    width = bar.shape[1]
    fig = go.Figure(go.Image(z=bar, hoverinfo="skip"))
    fig.update_layout(height=height, margin=dict(l=40, r=40, t=4, b=30))
    fig.update_xaxes(tickvals=[0, (width - 1) / 2, width - 1], ticktext=["0 low", "0.5", "1 high"],
                     showgrid=False, zeroline=False, automargin=True)
    fig.update_yaxes(visible=False)
    return fig
