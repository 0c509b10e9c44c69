"""Temperature scaling (Guo et al., 2017) on the model's softmax output, fitted on validation data.

Applying it is NumPy alone (serving); fitting it imports SciPy's optimiser."""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the same as dividing the logits by T, since log p = logits - const."""
    return np.exp(_log_softmax(np.log(np.clip(probs, _EPS, 1.0)) / temperature))


def nll(probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels after temperature scaling."""
    logp = _log_softmax(np.log(np.clip(probs, _EPS, 1.0)) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises validation NLL."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda t: nll(probs, labels, t), bounds=(0.05, 20.0), method="bounded")
    return float(result.x)
