"""tfwidth: how many channels should each layer have to be as accurate as possible within X ms on this device."""
import os

# tensorflow-model-optimization works only with the Keras 2 API (tf_keras); make tf.keras resolve to it too, before
# anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
