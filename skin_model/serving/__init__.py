"""Serving: the served predictor (``inference``, ``lite``, ``tta``, ``calibration``), the out-of-distribution
gate (``ood``), Grad-CAM (``explain``), the verdict every front end renders (``verdict``), the service the app
and CLIs share (``service``), sample images, charts and the case report. Never imports training."""
