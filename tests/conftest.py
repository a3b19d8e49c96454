"""Test-wide settings: never touch the network, and keep progress bars out of the output."""

import os

# huggingface_hub reads these at import time, so set them before any test imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("LAMINA_PROGRESS", "0")
