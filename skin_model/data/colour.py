"""Colour constancy inside the network: the shades-of-grey illuminant estimate (Finlayson and Trezzi 2004).

Dermatoscopes and cameras differ in colour cast (orange, yellow, grey, strongly pink). Shades of grey
estimates the illuminant of each image as the Minkowski p-norm mean of every channel (p = 6 here, as
several ISIC challenge entries used: between the grey world, p = 1, and max-RGB, p = infinity) and divides
it out, so that the estimated illuminant becomes neutral grey with the image's brightness kept.

It is a layer at the input of the network rather than a step of ``imaging``: then training (after the
augmentation, which may cast colours), serving through LiteRT, evaluation, Grad-CAM and the case report all
run it, and a bundle trained without it has no such layer and predicts as before. ``train.py
--colour-constancy shades-of-grey`` adds it and records it in ``metadata.json`` (``preprocessing``).
"""

from __future__ import annotations

import keras
from keras import ops

from skin_model.data.choices import COLOUR_CONSTANCY_METHODS

#: Name of the layer in the network, and of the method in ``metadata.json``.
LAYER_NAME = "colour_constancy"
METHODS = COLOUR_CONSTANCY_METHODS
DESCRIPTION = ("shades of grey (Finlayson and Trezzi 2004, Minkowski p = {power}): each image divided by its "
               "estimated illuminant, inside the network (first layer)")


@keras.saving.register_keras_serializable(package="skin_model")
class ShadesOfGrey(keras.layers.Layer):
    """Shades-of-grey colour constancy on MobileNetV2-scaled RGB input in [-1, 1] (output in [-1, 1]).

    Per image: ``e_c = mean(x_c ** p) ** (1 / p)`` on pixels in [0, 1]; each channel is multiplied by
    ``|e| / (sqrt(3) e_c)`` (a neutral illuminant leaves the image unchanged) and clipped to [0, 1].
    """

    def __init__(self, power: int = 6, epsilon: float = 1e-6, **kwargs) -> None:
        super().__init__(**kwargs)
        self.power = power
        self.epsilon = epsilon

    def call(self, inputs):
        rgb = ops.clip((inputs + 1.0) * 0.5, 0.0, 1.0)
        illuminant = ops.power(ops.mean(ops.power(rgb, self.power), axis=(1, 2), keepdims=True) + self.epsilon,
                               1.0 / self.power)
        norm = ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gain = norm / (illuminant * 3.0 ** 0.5)
        return ops.clip(rgb * gain, 0.0, 1.0) * 2.0 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "power": self.power, "epsilon": self.epsilon}


def colour_constancy_layer(method: str) -> ShadesOfGrey | None:
    """The layer for ``method`` (one of ``METHODS``), or None for "none"."""
    if method not in METHODS:
        raise ValueError(f"Unknown colour constancy {method!r}; choose from {', '.join(METHODS)}")
    return ShadesOfGrey(name=LAYER_NAME) if method == "shades-of-grey" else None


def describe(model) -> str | None:
    """The metadata description of the model's colour-constancy layer, or None when it has none."""
    names = {layer.name: layer for layer in model.layers}
    layer = names.get(LAYER_NAME)
    return DESCRIPTION.format(power=layer.power) if layer is not None else None
