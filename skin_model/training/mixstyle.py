"""MixStyle (Zhou et al., ICLR 2021, "Domain generalization with MixStyle"): feature-level style augmentation.

A CNN's early feature maps carry an image's "style" (camera, colour cast, contrast) in their per-channel
mean and standard deviation. During training, MixStyle replaces each image's statistics at a few early
layers with a random blend of its own and another image's in the batch (weight ~ Beta(alpha, alpha)), so
the network sees styles between those of the training clinics while each image keeps its content. It is
active only in training; in inference it is the identity, and ``without_mixstyle`` removes the layers before
a model is calibrated, evaluated and saved, so a served bundle never contains them.

``train.py --mixstyle P`` applies it with probability P per batch after ``MIXSTYLE_AFTER``: the last block of
each of MobileNetV2's 1/4, 1/8 and 1/16 resolution stages, as the paper places it after ResNet's first three
stages (the last stage, closest to the classes, is left alone).
"""

from __future__ import annotations

import keras
from keras import ops

#: Backbone layers after which ``insert_mixstyle`` puts a MixStyle layer (56, 28 and 14 px at 224 input).
MIXSTYLE_AFTER = ("block_2_add", "block_5_add", "block_12_add")
ALPHA = 0.1  # the paper's Beta(0.1, 0.1): most blends lie close to one of the two images


@keras.saving.register_keras_serializable(package="skin_model")
class MixStyle(keras.layers.Layer):
    """With probability ``p`` per training batch, mix every image's per-channel feature mean and standard
    deviation with those of a random other image of the batch; the identity otherwise and in inference."""

    def __init__(self, p: float = 0.5, alpha: float = ALPHA, epsilon: float = 1e-6, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"MixStyle probability must be between 0 and 1, got {p}")
        self.p, self.alpha, self.epsilon, self.seed = p, alpha, epsilon, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.p == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        mean = ops.stop_gradient(ops.mean(inputs, axis=(1, 2), keepdims=True))
        std = ops.stop_gradient(ops.sqrt(ops.var(inputs, axis=(1, 2), keepdims=True) + self.epsilon))
        weight = keras.random.beta((batch, 1, 1, 1), self.alpha, self.alpha, seed=self.seed_generator)
        other = keras.random.shuffle(ops.arange(batch), seed=self.seed_generator)
        mixed_mean = weight * mean + (1.0 - weight) * ops.take(mean, other, axis=0)
        mixed_std = weight * std + (1.0 - weight) * ops.take(std, other, axis=0)
        mixed = (inputs - mean) / std * mixed_std + mixed_mean
        apply = keras.random.uniform((), seed=self.seed_generator) < self.p
        return ops.where(apply, mixed, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p, "alpha": self.alpha, "epsilon": self.epsilon,
                "seed": self.seed}


def insert_mixstyle(model: keras.Model, p: float, after: tuple[str, ...] = MIXSTYLE_AFTER,
                    alpha: float = ALPHA, seed: int | None = None) -> keras.Model:
    """A copy of ``model`` (flat functional, same weights) with a MixStyle layer after each layer named in
    ``after``. ``p`` = 0 returns ``model`` itself."""
    if p == 0.0:
        return model
    missing = set(after) - {layer.name for layer in model.layers}
    if missing:
        raise ValueError(f"No layer named {', '.join(sorted(missing))} in {model.name}")

    def call(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        if layer.name not in after:
            return output
        offset = None if seed is None else seed + after.index(layer.name)
        return MixStyle(p, alpha, seed=offset, name=f"mixstyle_{layer.name}")(output)

    return _rewired(model, call)


def without_mixstyle(model: keras.Model) -> keras.Model:
    """A copy of ``model`` without its MixStyle layers (same layers and weights otherwise); ``model`` itself
    when it has none. Inference gives the same outputs either way."""
    if not any(isinstance(layer, MixStyle) for layer in model.layers):
        return model

    def call(layer, *args, **kwargs):
        return args[0] if isinstance(layer, MixStyle) else layer(*args, **kwargs)

    return _rewired(model, call)


def _rewired(model: keras.Model, call) -> keras.Model:
    """``keras.models.clone_model`` with ``call`` wiring each cloned layer, then ``model``'s weights and
    trainable flags copied by layer name (fresh layers, so each has one inbound node, as Grad-CAM needs)."""
    copy = keras.models.clone_model(model, call_function=call)
    originals = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        original = originals.get(layer.name)
        if original is not None:
            layer.set_weights(original.get_weights())
            layer.trainable = original.trainable
    return copy
