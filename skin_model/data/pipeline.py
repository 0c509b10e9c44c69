"""The tf.data training and validation pipeline, over images decoded into memory or streamed from their files.

One pipeline for both inputs (``--input memory|stream`` of ``train.py``): an ``EpochOrder`` yields the image
indices of each epoch (a fresh seeded permutation per epoch when training, or draws with replacement balanced
over classes, and optionally over the sources within a class) with a seed per draw for the augmentation; when
training spans several workers the indices are sharded there by tf.data's auto-shard policy (``HINT``: each
worker keeps every k-th index, before anything is decoded); each index is then looked up in the images, which
are either the uint8 array of ``dataset.load_arrays`` or an ``ImageFiles``, the same images decoded on demand,
in parallel, through the same serving preprocessing (``imaging.to_model_array``). So the two inputs give
identical batches, and streaming keeps only the batches in flight in memory, whatever the number of images.
``ImageFiles`` can keep each decoded image in a cache folder (``--cache DIR``: one ``.npy`` per image, reused
by later epochs and runs); tf.data's own ``cache()`` would replay the first epoch's order every epoch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skin_model.data.dataset import DatasetError
from skin_model.data.imaging import InvalidImageError, load_image, to_model_array, unsquash
from skin_model.labels import CODES, NUM_CLASSES

if TYPE_CHECKING:
    from skin_model.data.augment import AugmentConfig

log = logging.getLogger(__name__)

INPUTS = ("auto", "memory", "stream")


@dataclass(frozen=True)
class ImageFiles:
    """Image files that behave like ``load_arrays``' uint8 (N, size, size, 3) array, decoding on demand:
    ``files[i]`` is one image, ``files[i:j]`` a stacked chunk (decoded by ``workers`` threads). ``aspects``
    (one per file, or None) stretches squashed images back first, as ``dataset.load_arrays`` does."""

    paths: tuple[Path, ...]
    size: int
    cache_dir: Path | None = None
    workers: int = 4
    aspects: tuple[float | None, ...] | None = None

    dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.paths), self.size, self.size, 3

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            indices = range(*key.indices(len(self)))
            with ThreadPoolExecutor(self.workers) as pool:
                chunk = list(pool.map(self.image, indices))
            return np.stack(chunk) if chunk else np.zeros((0, self.size, self.size, 3), np.uint8)
        return self.image(int(key))

    def image(self, index: int) -> np.ndarray:
        """The ``index``-th image as the network sees it (uint8, size x size x 3), from the cache if there."""
        path = Path(self.paths[index])
        aspect = self.aspects[index] if self.aspects is not None else None
        cached = self._cache_file(path, aspect)
        if cached is not None and cached.is_file():
            return np.load(cached)
        try:
            pixels = to_model_array(unsquash(load_image(path), aspect), self.size)
        except InvalidImageError as exc:
            raise DatasetError(f"{path}: {exc}") from exc
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            with open(partial, "wb") as fh:
                np.save(fh, pixels)
            os.replace(partial, cached)  # atomic: other workers and threads see whole files only
        return pixels

    def _cache_file(self, path: Path, aspect: float | None = None) -> Path | None:
        if self.cache_dir is None:
            return None
        stat = path.stat()
        stretch = f"|{aspect:.6f}" if aspect else ""
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.size}{stretch}".encode()).hexdigest()
        return Path(self.cache_dir) / str(self.size) / f"{path.stem}-{key[:16]}.npy"


Images = np.ndarray | ImageFiles


def decoded_gib(n_images: int, size: int) -> float:
    """Memory that ``n_images`` decoded uint8 images of ``size`` pixels take, in GiB."""
    return n_images * size * size * 3 / 2 ** 30


def choose_input(kind: str, n_images: int, size: int, budget_gib: float) -> str:
    """``memory`` or ``stream``: ``kind`` itself unless it is ``auto``, which decodes into memory when the
    decoded images fit ``budget_gib`` and streams them from their files otherwise."""
    if kind not in INPUTS:
        raise ValueError(f"Unknown input {kind!r}; choose from {', '.join(INPUTS)}")
    if kind != "auto":
        return kind
    return "memory" if decoded_gib(n_images, size) <= budget_gib else "stream"


#: How training epochs draw images (``train.py --sampling``): each image once, class-balanced draws, or draws
#: balanced over classes and, within each class, over the sources (clinics) that hold it.
SAMPLING = ("shuffle", "balanced", "class-source")
#: A source with fewer training images of a class than this is pooled with the class's largest source when
#: balancing over sources (``sampling_groups``): a handful of images would otherwise be drawn hundreds of times.
MIN_SOURCE_GROUP = 20


def balanced_draws(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` image indices drawn with replacement, uniformly over the groups level by level: ``groups`` is a
    class per image (N,) or a class and a subgroup per image (N, 2). A class present is chosen uniformly,
    then (with two columns) one of its subgroups uniformly, then one of their images uniformly."""
    groups = groups.reshape(len(groups), -1)
    return _uniform_over_levels(np.arange(len(groups)), groups, n, rng)


def _uniform_over_levels(members: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws from ``members``: a value of the first column of ``groups`` uniformly, then recursively
    within it over the remaining columns; with no column left, a member uniformly."""
    if groups.shape[1] == 0:
        return rng.choice(members, size=n)
    values = np.unique(groups[:, 0])
    drawn = rng.choice(values, size=n)
    order = np.empty(n, np.int64)
    for value in values:
        slots = np.flatnonzero(drawn == value)
        inside = groups[:, 0] == value
        order[slots] = _uniform_over_levels(members[inside], groups[inside, 1:], len(slots), rng)
    return order


def sampling_groups(sampling: str, labels: np.ndarray, sources: np.ndarray | None,
                    min_group: int = MIN_SOURCE_GROUP) -> np.ndarray | None:
    """What ``balanced_draws`` balances for ``train.py --sampling``: None for ``shuffle``, the labels for
    ``balanced``, and for ``class-source`` the labels beside a source index per image, where a source with
    fewer than ``min_group`` images of a class counts as that class's largest source. Balancing over sources
    within a class breaks HAM10000's shortcut from clinic to diagnosis (76% of the naevi without vidir_modern
    come from vidir_molemax, 79% of the melanomas from rosendahl): each clinic's naevi weigh as much as another's.
    With the ISIC folder pooled the sources differ in size and classes; each class is balanced over the sources
    that hold it (docs/training.md, "Balanced draws over pooled sources")."""
    if sampling not in SAMPLING:
        raise ValueError(f"Unknown sampling {sampling!r}; choose from {', '.join(SAMPLING)}")
    if sampling == "shuffle":
        return None
    if sampling == "balanced":
        return labels
    if sources is None:
        raise ValueError("Balancing over sources needs the source of every image (the metadata's 'dataset' column)")
    if len(sources) != len(labels):
        raise ValueError(f"{len(sources)} sources for {len(labels)} labels")
    source_names, source_index = np.unique(np.asarray(sources).astype(str), return_inverse=True)
    source_index = source_index.reshape(-1).astype(np.int64)
    pooled = source_index.copy()
    for c in np.unique(labels):
        of_class = labels == c
        counts = np.bincount(source_index[of_class], minlength=source_index.max() + 1)
        for small in np.flatnonzero((counts > 0) & (counts < min_group)):
            pooled[of_class & (source_index == small)] = counts.argmax()
        log.info("%s drawn evenly from %s", CODES[c], ", ".join(
            f"{source_names[s]} ({np.sum(of_class & (pooled == s))} images)" for s in np.unique(pooled[of_class])))
    return np.stack([labels.astype(np.int64), pooled], axis=1)


class EpochOrder:
    """A generator factory for tf.data: each call yields one epoch of (image index, per-draw seed): a seeded
    permutation (a new one each epoch) when ``shuffle``, else 0..n-1; with ``balance_by`` (a class per
    image, or a class and a source: ``sampling_groups``) ``n`` balanced draws with replacement instead
    (``balanced_draws``, new each epoch). The seed pair (seed, epoch * n + key) keys the stateless
    augmentation of that draw, where key is the image index (each image once per epoch) or, for balanced
    draws, the draw's position, so a repeated image is augmented differently each time."""

    def __init__(self, n: int, seed: int, shuffle: bool, balance_by: np.ndarray | None = None) -> None:
        if balance_by is not None and len(balance_by) != n:
            raise ValueError(f"balance_by has {len(balance_by)} labels for {n} images")
        self.n, self.seed, self.shuffle, self.balance_by = n, seed, shuffle, balance_by
        self.epoch = 0

    def indices(self, epoch: int) -> np.ndarray:
        """The image indices of ``epoch``, in order."""
        rng = np.random.default_rng(self.seed + epoch)
        if self.balance_by is not None:
            return balanced_draws(self.balance_by, self.n, rng)
        return rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def __call__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        for position, i in enumerate(self.indices(epoch)):
            key = position if self.balance_by is not None else i
            yield np.int64(i), np.array([self.seed, epoch * self.n + key], np.int64)


def make_tf_dataset(images: Images, labels: np.ndarray, batch_size: int, training: bool, seed: int = 42,
                    augment_config: AugmentConfig | None = None, across_workers: bool = False,
                    balance_by: np.ndarray | None = None):
    """tf.data pipeline yielding batches of (scaled image, target distribution) from ``images`` (in memory
    or ``ImageFiles``): shuffled and augmented (``skin_model.data.augment``, a seed of its own for each image of each
    epoch) when ``training``; every image ends in the same ``scale_pixels`` as serving. ``labels`` are class
    indices (N,), turned into one-hot targets, or already targets (N, classes), e.g. soft targets for
    distillation. ``batch_size`` is the global batch; with ``across_workers`` (multi-worker training) each
    worker reads its shard of the indices (auto-shard policy HINT). ``balance_by`` (``sampling_groups``,
    training only) replaces the shuffled epoch by as many balanced draws (``EpochOrder``)."""
    import tensorflow as tf

    from skin_model.data.augment import AugmentConfig, augment
    from skin_model.data.imaging import scale_pixels

    config = augment_config or AugmentConfig()
    size, n = images.shape[1], len(images)
    targets = (np.eye(NUM_CLASSES, dtype=np.float32)[labels] if labels.ndim == 1
               else labels.astype(np.float32))

    def lookup(index):
        return images[int(index)], targets[int(index)]

    def load(index, image_seed):
        image, target = tf.numpy_function(lookup, [index], (tf.uint8, tf.float32), stateful=False)
        return tf.ensure_shape(image, (size, size, 3)), tf.ensure_shape(target, (NUM_CLASSES,)), image_seed

    if balance_by is not None and not training:
        raise ValueError("Balanced draws are for training only")
    order = EpochOrder(n, seed, shuffle=training, balance_by=balance_by)
    ds = tf.data.Dataset.from_generator(order, output_signature=(
        tf.TensorSpec((), tf.int64), tf.TensorSpec((2,), tf.int64)))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))  # known length: progress bars, no warnings
    options = tf.data.Options()
    if across_workers:
        ds = ds.shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.HINT
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)  # parallel decode when streaming; order kept
    if training:
        ds = ds.map(lambda x, y, s: (augment(x, s, config), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y, s: (tf.cast(x, tf.float32), y))
    ds = ds.map(lambda x, y: (scale_pixels(x), y)).batch(batch_size)
    if training and config.mixup_alpha > 0:
        import keras

        mixup = keras.layers.MixUp(alpha=config.mixup_alpha, seed=seed)

        def mix(x, y):
            mixed = mixup({"images": x, "labels": y})
            return mixed["images"], mixed["labels"]

        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
