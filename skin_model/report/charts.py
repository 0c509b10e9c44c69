"""Plotly figures for the evaluation report page (no Streamlit here): confusion matrix, ROC and
precision-recall curves, reliability diagram, refer-or-abstain (coverage) curve and training curves, all
drawn from stored numbers."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from skin_model.labels import CODES, by_code
from skin_model.evaluation.metrics import EvaluationReport
from skin_model.report.evaluation_tables import OperatingPoint

#: One colour per class, in CODES order (plotly's qualitative palette, readable on white).
CLASS_COLOURS = dict(zip(CODES, px.colors.qualitative.D3))
CHANCE_LINE = dict(dash="dot", color="grey")
HEIGHT = 420


def _unit_axes(fig: go.Figure, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=40, b=10), legend=dict(font=dict(size=11)))
    fig.update_xaxes(range=[0, 1], title=x_title)
    fig.update_yaxes(range=[0, 1.02], title=y_title)
    return fig


def confusion_heatmap(matrix: pd.DataFrame, normalised: bool) -> go.Figure:
    """Heatmap of a confusion matrix (rows true, columns predicted); counts or row shares as cell text."""
    text = matrix.map(lambda v: f"{v:.0%}" if normalised else f"{int(v)}")
    fig = go.Figure(go.Heatmap(
        z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index), text=text.to_numpy(),
        texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1 if normalised else None,
        hovertemplate="true %{y} → predicted %{x}: %{text}<extra></extra>",
        colorbar=dict(title="share of row" if normalised else "images")))
    fig.update_layout(title="Row-normalised (recall on the diagonal)" if normalised else "Counts",
                      height=HEIGHT, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(title="Predicted class", side="bottom")
    fig.update_yaxes(title="True class", autorange="reversed")
    return fig


def roc_chart(report: EvaluationReport) -> go.Figure:
    """One-vs-rest ROC curve per class, its AUC in the legend, and the chance diagonal."""
    fig = go.Figure()
    for code in CODES:
        curve = report.roc_curves.get(code)
        if not curve:
            continue
        auc = report.per_class[code]["auc"]
        fig.add_trace(go.Scatter(x=curve["x"], y=curve["y"], mode="lines", name=f"{code} (AUC {auc:.3f})",
                                 line=dict(color=CLASS_COLOURS[code]),
                                 hovertemplate=f"{by_code(code).name}<br>FPR %{{x:.2f}}, TPR %{{y:.2f}}"
                                               "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="chance", hoverinfo="skip"))
    fig.update_layout(title="ROC curves (one class vs the rest)")
    return _unit_axes(fig, "False positive rate (1 − specificity)", "True positive rate (sensitivity)")


def pr_chart(report: EvaluationReport) -> go.Figure:
    """Precision-recall curve per class, with its average precision and prevalence (the chance level)."""
    fig = go.Figure()
    for code in CODES:
        curve = report.pr_curves.get(code)
        if not curve:
            continue
        stats = report.per_class[code]
        ap = stats.get("average_precision")
        prevalence = stats["support"] / report.n_images
        label = f"{code} (AP {ap:.3f}, prevalence {prevalence:.0%})" if ap is not None else code
        fig.add_trace(go.Scatter(x=curve["x"], y=curve["y"], mode="lines", name=label,
                                 line=dict(color=CLASS_COLOURS[code]),
                                 hovertemplate=f"{by_code(code).name}<br>recall %{{x:.2f}}, precision %{{y:.2f}}"
                                               "<extra></extra>"))
    fig.update_layout(title="Precision-recall curves (one class vs the rest)")
    return _unit_axes(fig, "Recall (sensitivity)", "Precision (positive predictive value)")


def reliability_chart(report: EvaluationReport) -> go.Figure:
    """Accuracy against mean confidence per confidence bin, before and after temperature scaling."""
    fig = go.Figure()
    series = [("after temperature scaling", report.reliability, report.ece, "#2e86c1")]
    if report.reliability_uncalibrated:
        series.insert(0, ("before temperature scaling", report.reliability_uncalibrated, report.ece_uncalibrated,
                          "#e67e22"))
    for name, bins, ece, colour in series:
        label = f"{name} (ECE {ece:.3f})" if ece is not None else name
        fig.add_trace(go.Scatter(
            x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers", name=label,
            line=dict(color=colour), marker=dict(size=[6 + min(b["count"], 400) ** 0.5 for b in bins]),
            customdata=[b["count"] for b in bins],
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="perfect calibration",
                             hoverinfo="skip"))
    fig.update_layout(title="Reliability diagram (marker size ~ images in the bin)")
    return _unit_axes(fig, "Mean confidence of the top prediction", "Accuracy")


def coverage_chart(coverage: pd.DataFrame, point: OperatingPoint | None) -> go.Figure:
    """Balanced accuracy and accuracy of the kept cases against the share referred, one point per confidence
    threshold (``report.evaluation_tables.coverage_frame``); ``point`` (the app's "unsure" threshold) is marked."""
    kept = coverage.dropna(subset=["accuracy"])
    fig = go.Figure()
    for column, name, colour in (("balanced_accuracy", "balanced accuracy of kept cases", "#2e86c1"),
                                 ("accuracy", "accuracy of kept cases", "#7f8c8d")):
        fig.add_trace(go.Scatter(
            x=kept["referred"], y=kept[column], mode="lines+markers", name=name, line=dict(color=colour),
            customdata=kept["threshold"],
            hovertemplate="threshold %{customdata:.2f}<br>referred %{x:.1%}<br>" + name + " %{y:.1%}"
                          "<extra></extra>"))
    if point is not None and point.balanced_accuracy is not None:
        fig.add_trace(go.Scatter(
            x=[point.referred, point.referred], y=[point.balanced_accuracy, point.accuracy], mode="markers",
            name=f"app's unsure threshold {point.threshold:.2f}", marker=dict(symbol="star", size=15,
                                                                              color="#c0392b"),
            hovertemplate=f"unsure threshold {point.threshold:.2f}<br>referred %{{x:.1%}}<br>%{{y:.1%}}"
                          "<extra></extra>"))
        fig.add_vline(x=point.referred, line=CHANCE_LINE)
    fig.update_layout(title="Refer or abstain: kept cases vs share referred")
    fig.update_yaxes(tickformat=".0%")
    fig.update_xaxes(tickformat=".0%")
    return _unit_axes(fig, "Share referred as unsure (1 − coverage)", "Score on the cases the model keeps")


def training_curve_chart(curves: pd.DataFrame, metric: str) -> go.Figure:
    """``metric`` per epoch on train and validation across both stages; a dotted line marks the stage change."""
    data = curves[curves["metric"] == metric]
    fig = px.line(data, x="epoch", y="value", color="subset", line_dash="stage", markers=True,
                  hover_data=["stage", "stage_epoch"],
                  labels={"value": metric.replace("_", " "), "epoch": "epoch (both stages)"})
    stage_starts = data.groupby("stage", sort=False)["epoch"].min().iloc[1:]
    for stage, start in stage_starts.items():
        fig.add_vline(x=start - 0.5, line=CHANCE_LINE, annotation_text=f"{stage} starts",
                      annotation_position="bottom right")
    fig.update_layout(title=metric.replace("_", " ").capitalize(), height=380,
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, title=None))
    return fig
