"""Command-line entry points, thin over the library (``python -m skin_model.cli.<name> --help``):

- ``predict``: the app's verdict for image files (text or JSON lines);
- ``evaluate``: metrics of the bundle on any labelled image folder;
- ``lite``: build the served LiteRT copy ``model.tflite`` of a bundle;
- ``ood``: fit the out-of-distribution gate and measure it;
- ``localisation``: does Grad-CAM look at the lesion (HAM10000 lesion boxes);
- ``metadata_update``: fill metadata fields that stored evaluations determine.

Each ``main(argv)`` returns the exit status; TensorFlow's C++ log is quietened before anything imports it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
