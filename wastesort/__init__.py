"""wastesort: classify a photo of waste into its bin with one int8 TFLite model."""

from wastesort.classifier import Classifier, Prediction
from wastesort.errors import ImageError, ModelError, WastesortError
from wastesort.scoring import UNCERTAIN

__all__ = ["UNCERTAIN", "Classifier", "ImageError", "ModelError", "Prediction", "WastesortError"]
__version__ = "0.1.0"
