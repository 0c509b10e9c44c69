"""Published HAM10000-family results to compare with, each with its test set, split method and source.

``verified`` says whether the figure was found in a public source (the publication or a copy of its table,
named in ``citation``) while writing this file; unverified rows are published claims not re-checked offline,
shown as "reported". Our own model's row is never written here: the report page takes it from the
evaluation JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Why image-level splits of HAM10000 overstate accuracy (shown under the comparison table).
IMAGE_SPLIT_NOTE = (
    "HAM10000 has 10,015 images of 7,470 lesions: many lesions were photographed several times "
    "(different magnification or angle). A split by image puts images of the same lesion in both training "
    "and test sets, so the test set partly measures recognition of near-duplicates the model has already "
    "seen, not diagnosis of new lesions. Accuracies from image-level splits (most Kaggle notebooks, and "
    "DermaMNIST's original split, whose leakage across partitions is documented by Abhishek et al. 2025) are "
    "therefore optimistic and not comparable with a lesion-grouped split like ours. Challenge test sets "
    "(ISIC 2018) are separate image collections and are the fairest external yardstick."
)


@dataclass(frozen=True)
class PublishedResult:
    """One published result: what was tested, on which test set and split, with the source."""

    model: str
    test_set: str
    split_method: str
    accuracy: float | None
    balanced_accuracy: float | None
    macro_auc: float | None
    citation: str
    verified: bool
    note: str = ""

    @property
    def status(self) -> str:
        """"verified" when checked against the cited source, else "reported"."""
        return "verified" if self.verified else "reported"


MEDMNIST_V2 = ("Yang J. et al., MedMNIST v2, Sci. Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8, "
               "Table 3 (DermaMNIST); https://medmnist.com/v2")
DERMAMNIST_TEST = "DermaMNIST official test split (2,005 HAM10000 images, 28x28 or 224x224)"
DERMAMNIST_SPLIT = "DermaMNIST 7:1:2 split by image (not by lesion; leakage documented by Abhishek et al. 2025)"
MEDMNIST_NOTE = "Accuracy and macro AUC as published; balanced accuracy not reported."

PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    PublishedResult("ResNet-18 (28 px)", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.735, None, 0.917,
                    MEDMNIST_V2 + "; figures also quoted in public reproductions of the benchmark", True,
                    MEDMNIST_NOTE),
    PublishedResult("ResNet-18 (224 px)", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.754, None, 0.920,
                    MEDMNIST_V2 + " (AUC 0.920 checked in a public comparison table; accuracy as reported)",
                    False, MEDMNIST_NOTE),
    PublishedResult("ResNet-50 (28 px)", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.735, None, 0.913,
                    MEDMNIST_V2, False, MEDMNIST_NOTE),
    PublishedResult("ResNet-50 (224 px)", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.731, None, 0.912,
                    MEDMNIST_V2 + "; values as listed from medmnist.com/v2 in a public reproduction's "
                    "benchmark-references.json", True, MEDMNIST_NOTE),
    PublishedResult("auto-sklearn", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.719, None, 0.902,
                    MEDMNIST_V2, False, MEDMNIST_NOTE),
    PublishedResult("AutoKeras", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.749, None, 0.915,
                    MEDMNIST_V2, False, MEDMNIST_NOTE),
    PublishedResult("Google AutoML Vision", DERMAMNIST_TEST, DERMAMNIST_SPLIT, 0.768, None, 0.914,
                    MEDMNIST_V2, False, MEDMNIST_NOTE),
    PublishedResult("ISIC 2018 Task 3 winner (MetaOptima, ensemble of 10 models)",
                    "ISIC 2018 Task 3 official held-out test set (1,512 images)",
                    "separate challenge test set; external training data allowed",
                    None, 0.885, None,
                    "ISIC 2018 Challenge leaderboard, Task 3 (metric: balanced multi-class accuracy = mean "
                    "recall); MetaOptima/DermEngine announcement, 25 Mar 2019, "
                    "https://www.dermengine.com/blog/metaoptima-awarded-isic-2018-challenge", True,
                    "Top of the leaderboard; the best entry using public data only (Gessert et al., "
                    "arXiv:1808.01694) placed second."),
    PublishedResult("Frozen ImageNet MobileNetV2 + new head (typical Kaggle notebook)",
                    "random hold-out of HAM10000 images",
                    "random split by image (lesions leak between train and test)",
                    0.76, None, None,
                    "Common claim in public Kaggle notebooks on 'Skin Cancer MNIST: HAM10000' "
                    "(kaggle.com/kmader/skin-cancer-mnist-ham10000); no single peer-reviewed source", False,
                    "About 76% accuracy; accuracy is dominated by the 67% naevus class, so it says little "
                    "about the rare classes."),
)

#: Sources of the notes above, for the page's reference list.
REFERENCES: tuple[str, ...] = (
    "Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset. Sci. Data 5, 180161 (2018), "
    "doi:10.1038/sdata.2018.161.",
    MEDMNIST_V2 + ".",
    "Abhishek K., Jain A., Hamarneh G. Investigating the quality of DermaMNIST and Fitzpatrick17k dermatological "
    "image datasets. Sci. Data 12, 196 (2025), doi:10.1038/s41597-025-04382-5.",
)
