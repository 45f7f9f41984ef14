"""Training: TrashNet-style folders -> a verified int8 TFLite model in the registry.

`python -m training run --config training/configs/default.yaml [key=value ...]`. TensorFlow is
imported here and nowhere in the serving path.
"""
