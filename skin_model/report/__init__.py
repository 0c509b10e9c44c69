"""What the evaluation report page and the model card show, read from the bundle's files and checked, one
module per kind of file:

- ``evaluation_files``: the evaluation reports (finding and loading them);
- ``evaluation_tables``: one report as tables, targets, referral and coverage figures;
- ``served_model``: the served model's ``metadata.json`` (its "unsure" threshold);
- ``split_audit``: ``split.csv``; ``training_curves``: ``history.json``;
- ``ood_figures``: ``ood_figures.json``; ``safety_results``: the TTA benchmark's JSON.

Every loader raises ``bundle.BundleFileError`` naming the file and the problem; no model is run here.
"""
