"""Data: decoding and preprocessing one image (``imaging``), the labelled catalogue and its lesion-grouped split
(``dataset``), the training input pipeline (``pipeline``, ``augment``, ``colour``) and synthetic
non-dermoscopic images for the OOD gate's measurement (``ood_images``). Imports nothing above it."""
