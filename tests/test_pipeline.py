"""The tf.data pipeline over streamed files (pipeline.ImageFiles) gives the same batches as over images decoded
into memory, with or without augmentation; the decoded-image cache; the memory budget that picks the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skin_model.augment import AugmentConfig
from skin_model.dataset import DatasetError, load_arrays
from skin_model.pipeline import ImageFiles, choose_input, decoded_gib, make_tf_dataset

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
