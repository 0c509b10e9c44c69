"""The names of the data choices train.py offers, importable without TensorFlow (train.py prints its help and
checks its arguments before loading it): colour-constancy methods (``colour``) and augmentation additions
(``augment``); the input and sampling modes live in the TensorFlow-free ``pipeline``."""

#: ``--colour-constancy``: the network's first layer (``colour.colour_constancy_layer``).
COLOUR_CONSTANCY_METHODS = ("none", "shades-of-grey")
#: ``--augment``: additions to the default augmentation (``augment.AugmentConfig``).
AUGMENT_ADDITIONS = ("colour", "framing", "artefacts")
