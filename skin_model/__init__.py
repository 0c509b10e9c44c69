"""Dermoscopy lesion classifier: HAM10000 classes, preprocessing, MobileNetV2 model, evaluation.

A plain library (no Streamlit) shared by the app, ``train.py``, the CLIs and the tests, so that
training and serving use one class list and one preprocessing path.
"""

__version__ = "1.0.0"
