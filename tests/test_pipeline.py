"""The tf.data pipeline over streamed files (pipeline.ImageFiles) gives the same batches as over images decoded
into memory, with or without augmentation; class-balanced draws; the decoded-image cache; the memory budget that
picks the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skin_model.data.augment import AugmentConfig
from skin_model.data.dataset import DatasetError, load_arrays
from skin_model.data.pipeline import (EpochOrder, ImageFiles, balanced_draws, choose_input, decoded_gib, sampling_groups,
                                 make_tf_dataset)

SIZE = 64


@pytest.fixture(scope="module")
def paths(synthetic_ham: Path) -> list[Path]:
    """Twenty synthetic files of both sizes (600x450 originals and 200x150 copies)."""
    return (sorted((synthetic_ham / "images_600x450").glob("*.jpg"))[:10]
            + sorted((synthetic_ham / "images_200x150").glob("*.jpg"))[-10:])


def batches(images, labels: np.ndarray, training: bool, augment: AugmentConfig | None = None):
    dataset = make_tf_dataset(images, labels, 6, training=training, seed=3, augment_config=augment)
    return [(x, y) for x, y in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("training, augment", [(False, None), (True, AugmentConfig(brightness=0.0)),
                                               (True, AugmentConfig(colour=True, framing=True, artefacts=True))],
                         ids=["evaluation", "training order, no colour jitter", "training, augmented"])
def test_streaming_and_memory_give_identical_batches(paths, training, augment):
    labels = np.arange(len(paths), dtype=np.int32) % 7
    in_memory = batches(load_arrays(paths, SIZE, progress=False), labels, training, augment)
    streamed = batches(ImageFiles(tuple(paths), SIZE), labels, training, augment)
    assert len(in_memory) == len(streamed) == 4  # 20 images in batches of 6
    for (x_memory, y_memory), (x_stream, y_stream) in zip(in_memory, streamed):
        np.testing.assert_array_equal(x_stream, x_memory)
        np.testing.assert_array_equal(y_stream, y_memory)
    if training:
        order = np.concatenate([y.argmax(axis=1) for _, y in in_memory])
        assert not np.array_equal(order, labels), "training batches are shuffled"


def test_image_files_behave_like_the_decoded_array(paths):
    files = ImageFiles(tuple(paths), SIZE)
    decoded = load_arrays(paths, SIZE, progress=False)
    assert files.shape == decoded.shape and len(files) == len(decoded)
    np.testing.assert_array_equal(files[3], decoded[3])
    np.testing.assert_array_equal(files[5:12], decoded[5:12])
    assert files[5:12].dtype == np.uint8 and files[30:].shape == (0, SIZE, SIZE, 3)


def test_the_cache_keeps_one_decoded_file_per_image_and_serves_it(paths, tmp_path):
    files = ImageFiles(tuple(paths[:4]), SIZE, cache_dir=tmp_path)
    first = files[0:4]
    cached = sorted((tmp_path / str(SIZE)).glob("*.npy"))
    assert len(cached) == 4 and all(p.name.startswith(Path(q).stem) for p, q in zip(cached, sorted(paths[:4])))
    for p in cached:  # later reads come from the cache: change it and the change shows
        np.save(p, np.zeros((SIZE, SIZE, 3), np.uint8))
    assert first.any() and not files[0:4].any()
    assert not list(tmp_path.rglob("*.tmp")), "no partial files left"


def test_an_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "ISIC_broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="ISIC_broken.jpg"):
        ImageFiles((bad,), SIZE)[0]


def test_auto_input_streams_when_the_decoded_images_exceed_the_budget():
    assert decoded_gib(10_000, 224) == pytest.approx(1.40, abs=0.01)
    assert choose_input("auto", 10_000, 224, budget_gib=8.0) == "memory"
    assert choose_input("auto", 100_000, 224, budget_gib=8.0) == "stream"
    assert choose_input("memory", 100_000, 224, budget_gib=8.0) == "memory"
    assert choose_input("stream", 10, 224, budget_gib=8.0) == "stream"
    with pytest.raises(ValueError, match="disk"):
        choose_input("disk", 10, 224, budget_gib=8.0)


#: HAM10000-like imbalance: 70 % nv, a handful of df and vasc.
IMBALANCED = np.repeat(np.arange(7), [33, 51, 110, 12, 111, 670, 14]).astype(np.int32)


def test_balanced_draws_give_every_class_an_equal_share():
    draws = balanced_draws(IMBALANCED, 7000, np.random.default_rng(0))
    assert draws.shape == (7000,) and draws.min() >= 0 and draws.max() < len(IMBALANCED)
    shares = np.bincount(IMBALANCED[draws], minlength=7) / len(draws)
    np.testing.assert_allclose(shares, 1 / 7, atol=0.02)  # nv would be 0.67 by shuffling
    assert len(np.unique(draws[IMBALANCED[draws] == 3])) == 12, "every image of a rare class gets drawn"


def test_balanced_draws_skip_absent_classes():
    labels = np.array([0, 0, 0, 5, 5, 5, 5, 5, 5], np.int32)
    shares = np.bincount(labels[balanced_draws(labels, 2000, np.random.default_rng(1))], minlength=7) / 2000
    assert shares[[1, 2, 3, 4, 6]].sum() == 0
    np.testing.assert_allclose(shares[[0, 5]], 0.5, atol=0.04)


#: Two clinics confounded with the diagnosis, as in HAM10000: clinic A holds most naevi, clinic B most melanomas.
CONFOUNDED_LABELS = np.repeat([4, 5, 4, 5, 4], [100, 900, 25, 50, 5]).astype(np.int32)
CONFOUNDED_SOURCES = np.repeat(["B", "A", "A", "B", "C"], [100, 900, 25, 50, 5])


def test_class_source_draws_make_the_source_uninformative_of_the_class():
    groups = sampling_groups("class-source", CONFOUNDED_LABELS, CONFOUNDED_SOURCES, min_group=20)
    draws = balanced_draws(groups, 20000, np.random.default_rng(3))
    labels, sources = CONFOUNDED_LABELS[draws], CONFOUNDED_SOURCES[draws]
    np.testing.assert_allclose(np.mean(labels == 4), 0.5, atol=0.02)
    for c in (4, 5):  # within each class, clinics A and B equally likely (C's 5 melanomas pooled with B's)
        np.testing.assert_allclose(np.mean(sources[labels == c] == "A"), 0.5, atol=0.03)
    # Balanced by class alone, 900 of the 950 naevi drawn come from clinic A.
    class_only = balanced_draws(CONFOUNDED_LABELS, 20000, np.random.default_rng(3))
    assert np.mean(CONFOUNDED_SOURCES[class_only][CONFOUNDED_LABELS[class_only] == 5] == "A") > 0.9


def test_class_source_groups_pool_small_sources_and_keep_the_rest():
    groups = sampling_groups("class-source", CONFOUNDED_LABELS, CONFOUNDED_SOURCES, min_group=20)
    assert groups.shape == (len(CONFOUNDED_LABELS), 2)
    np.testing.assert_array_equal(groups[:, 0], CONFOUNDED_LABELS)
    small = CONFOUNDED_SOURCES == "C"
    assert len(np.unique(groups[small, 1])) == 1
    assert groups[small, 1][0] == groups[CONFOUNDED_SOURCES == "B", 1][0], "pooled with the class's largest source"
    assert len(np.unique(groups[CONFOUNDED_LABELS == 4, 1])) == 2
    kept_apart = sampling_groups("class-source", CONFOUNDED_LABELS, CONFOUNDED_SOURCES, min_group=1)
    assert len(np.unique(kept_apart[CONFOUNDED_LABELS == 4, 1])) == 3


def test_sampling_groups_per_option():
    assert sampling_groups("shuffle", CONFOUNDED_LABELS, CONFOUNDED_SOURCES) is None
    np.testing.assert_array_equal(sampling_groups("balanced", CONFOUNDED_LABELS, None), CONFOUNDED_LABELS)
    with pytest.raises(ValueError, match="dataset"):
        sampling_groups("class-source", CONFOUNDED_LABELS, None)
    with pytest.raises(ValueError, match="sources for"):
        sampling_groups("class-source", CONFOUNDED_LABELS, CONFOUNDED_SOURCES[:10])
    with pytest.raises(ValueError, match="Unknown sampling"):
        sampling_groups("stratified", CONFOUNDED_LABELS, CONFOUNDED_SOURCES)


def test_one_level_draws_are_the_class_balanced_draws_of_earlier_runs():
    """A class-balanced run resumed with this code draws the epochs it drew before sources could be balanced."""
    rng = np.random.default_rng(9)
    classes = np.unique(IMBALANCED)
    drawn = rng.choice(classes, size=500)
    expected = np.empty(500, np.int64)
    for c in classes:
        slots = np.flatnonzero(drawn == c)
        expected[slots] = rng.choice(np.flatnonzero(IMBALANCED == c), size=len(slots))
    np.testing.assert_array_equal(balanced_draws(IMBALANCED, 500, np.random.default_rng(9)), expected)


def test_balanced_epochs_are_seeded_new_each_epoch_and_key_every_draw_apart():
    order = EpochOrder(len(IMBALANCED), seed=5, shuffle=True, balance_by=IMBALANCED)
    first, second = list(order()), list(order())
    again = list(EpochOrder(len(IMBALANCED), seed=5, shuffle=True, balance_by=IMBALANCED)())
    assert [int(i) for i, _ in first] == [int(i) for i, _ in again], "the same seed draws the same epoch"
    assert [int(i) for i, _ in first] != [int(i) for i, _ in second], "each epoch draws anew"
    keys = [tuple(k) for _, k in first + second]
    assert len(set(keys)) == len(keys), "a repeated image gets its own augmentation seed"


def test_balanced_training_batches_carry_balanced_labels():
    images = np.zeros((len(IMBALANCED), 8, 8, 3), np.uint8)
    dataset = make_tf_dataset(images, IMBALANCED, 100, training=True, seed=2, balance_by=IMBALANCED)
    labels = np.concatenate([y.argmax(axis=1) for _, y in dataset.as_numpy_iterator()])
    assert len(labels) == len(IMBALANCED)  # an epoch keeps its length
    assert np.bincount(labels, minlength=7).max() / len(labels) < 0.2
    with pytest.raises(ValueError, match="training only"):
        make_tf_dataset(images, IMBALANCED, 100, training=False, balance_by=IMBALANCED)
