"""TAPIP3D: 3D point tracks through RGB-D video, from the official code (upstream, CUDA) or a CPU reference.

config.py (schema) · sequence.py (clips, queries, result files) · geometry.py (camera conversions)
backend.py (the backend contract) · lift2d.py (CPU reference) · upstream.py (the user's TAPIP3D checkout)
model.py (adapter) · servicer.py (proto <-> arrays) · service.py (registration) · client.py (Python client, CLI)
synthetic.py (RGB-D scenes with exact ground truth, for tests, benchmarks and the demo)
"""
