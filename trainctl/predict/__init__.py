"""A finished run on new data: `trainctl predict` and `trainctl.load(RUN).predict(array)`.

Sits on the engine and `train/` (it restores a run as `eval` does), as `bench/` does.
"""

from trainctl.predict.model import InputDescription, InputError, Predictor, load

__all__ = ["InputDescription", "InputError", "Predictor", "load"]
