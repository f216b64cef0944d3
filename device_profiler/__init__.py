"""device_profiler: time width variants of a .tflite template on the device itself (numpy + flatbuffers + a TFLite
runtime; never TensorFlow, never tfwidth).

    python -m device_profiler --template template.tflite --plan plan.json --out samples.jsonl
"""
__version__ = "0.1.0"
