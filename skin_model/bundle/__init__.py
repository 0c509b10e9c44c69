"""The model bundle (the ``weights/`` folder): every file's name, its reader and its writer.

- ``files``: file names, sha256 checks, JSON reading and the errors;
- ``metadata``: ``metadata.json`` (``ModelMetadata``);
- ``split``: ``split.csv``;
- ``extras``: results computed after training, one file each (OOD figures, Grad-CAM localisation);
- ``head``: ``head.npz``, the classifier's dense head that closed-form Grad-CAM reads beside ``model.tflite``.

``model.keras`` is written and loaded by ``skin_model.model``, ``model.tflite`` and ``head.npz`` by
``skin_model.serving.lite`` and ``ood.npz`` by ``skin_model.serving.ood``, each through the names and checks
defined here.
"""

from skin_model.bundle.extras import (LocalisationFigures, OodCategory, OodFigures, is_rate, read_localisation,
                                      read_ood_figures, write_localisation, write_ood_figures)
from skin_model.bundle.files import (CHECKPOINTS_DIR, EVALUATIONS_DIR, HEAD_FILE, HISTORY_FILE, LITE_FILE,
                                     LITE_INFO_FILE, METADATA_FILE, MODEL_FILE, OOD_FIGURES_FILE, OOD_FILE, SPLIT_FILE,
                                     TRAINING_REPORTS, BundleFileError, ModelIntegrityError, checked_file,
                                     evaluation_file, localisation_file, read_json, sha256_of, tta_report_file,
                                     write_json)
from skin_model.bundle.head import HEAD_STRUCTURE, DenseHead, UnsupportedHeadError, read_head, write_head
from skin_model.bundle.metadata import (ModelMetadata, metadata_from_file, read_metadata, update_metadata,
                                        write_metadata)
from skin_model.bundle.split import SPLIT_COLUMNS, read_split, split_path, write_split

__all__ = [
    "CHECKPOINTS_DIR", "EVALUATIONS_DIR", "HEAD_FILE", "HEAD_STRUCTURE", "HISTORY_FILE", "LITE_FILE", "LITE_INFO_FILE",
    "METADATA_FILE", "MODEL_FILE", "OOD_FIGURES_FILE", "OOD_FILE", "SPLIT_COLUMNS", "SPLIT_FILE", "TRAINING_REPORTS",
    "BundleFileError", "DenseHead", "LocalisationFigures", "ModelIntegrityError", "ModelMetadata", "OodCategory",
    "OodFigures", "UnsupportedHeadError", "checked_file", "evaluation_file", "is_rate", "localisation_file",
    "metadata_from_file", "read_head", "read_json", "read_localisation", "read_metadata", "read_ood_figures",
    "read_split", "sha256_of", "split_path", "tta_report_file", "update_metadata", "write_head", "write_json",
    "write_localisation", "write_metadata", "write_ood_figures", "write_split",
]
