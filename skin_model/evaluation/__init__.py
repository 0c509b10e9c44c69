"""Evaluation: metrics and their report (``metrics``), evaluating a bundle on a labelled folder (``evaluate``),
paired comparison of two reports (``compare``), Grad-CAM localisation (``localisation``), published results,
the leave-source-out protocol (``holdout``) and filling a bundle's metadata from its reports
(``metadata_update``)."""
