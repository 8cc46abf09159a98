"""MedSAM: box-prompted medical image segmentation (SAM architecture, MedSAM preprocessing).

config.py (schema) · architecture.py (build + checkpoint) · preprocess.py · model.py (adapter)
servicer.py (proto <-> arrays) · service.py (registration) · client.py (CLI)
"""
