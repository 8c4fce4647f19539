"""The learned detector: scikit-learn's IsolationForest over per-device windows.

Optional: install the ``ml`` extra (``pip install 'sddsf[ml]'``). Without
scikit-learn, :func:`isolation_available` is False and the relay runs the rules
and statistics only. The model is trained on the relay's own closed per-device
windows (the :data:`~sddsf.relay.controller.detectors.FEATURES` counts, ``log1p``
scaled), retrained every ``retrain_every`` new windows once ``min_samples``
are held, and scores each newly closed window; a window the forest isolates
as an outlier (``predict == -1``), or that lies beyond the range the model
was trained on by a factor of e in any feature (trees cannot split outside
their training range, so the forest alone would score such a window like the
largest ones it saw), with at least ``min_ops`` ops becomes a
``learned_anomaly`` finding. Training is deterministic (``random_state=0``).
"""

from __future__ import annotations

import importlib.util
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from sddsf.relay.controller.detectors import FEATURES, Finding, SignalKind
from sddsf.relay.controller.policy import MlDetector
from sddsf.relay.controller.trust import Severity

__all__ = ["IsolationDetector", "isolation_available"]

_OPS = FEATURES.index(SignalKind.OPS)


def isolation_available() -> bool:
    """Whether scikit-learn can be imported here."""
    return importlib.util.find_spec("sklearn") is not None


def _scaled(vector: Sequence[int]) -> list[float]:
    return [math.log1p(max(v, 0)) for v in vector]


class IsolationDetector:
    """A relay-wide IsolationForest over closed windows (one per relay process)."""

    def __init__(self, settings: MlDetector) -> None:
        self.settings = settings
        self._samples: deque[list[float]] = deque(maxlen=settings.max_samples)
        self._since_fit = 0
        self._model: Any = None
        self._top: list[float] = []

    @property
    def trained(self) -> bool:
        """Whether a model has been fitted."""
        return self._model is not None

    def _fit(self) -> None:
        from sklearn.ensemble import IsolationForest  # noqa: PLC0415 - optional extra

        model = IsolationForest(n_estimators=100, contamination=self.settings.contamination,
                                random_state=0)
        model.fit(list(self._samples))
        self._model = model
        self._top = [max(col) for col in zip(*self._samples, strict=True)]
        self._since_fit = 0

    def add(self, vector: Sequence[int]) -> Finding | None:
        """Score a closed window (when a model exists), then learn from it."""
        found = None
        if self._model is not None and vector[_OPS] >= self.settings.min_ops:
            x = [_scaled(vector)]
            # Trees split only inside the range they were trained on, so a window
            # far beyond it lands in the same leaf as the largest training windows:
            # "beyond the learnt range by a factor e" (log1p scale) counts too.
            beyond = any(v > top + 1.0 for v, top in zip(x[0], self._top, strict=True))
            if beyond or int(self._model.predict(x)[0]) == -1:
                score = float(self._model.decision_function(x)[0])
                found = Finding("learned_anomaly", Severity.MEDIUM,
                                f"the learned model isolates this device's last window "
                                f"(score {score:.3f}; counts {list(vector)} of "
                                f"{', '.join(k.value for k in FEATURES)})")
        self._samples.append(_scaled(vector))
        self._since_fit += 1
        if len(self._samples) >= self.settings.min_samples and (
                self._model is None or self._since_fit >= self.settings.retrain_every):
            self._fit()
        return found
