"""BiomedCLIP: image/text embeddings, zero-shot labels, and where an image shows a prompt (gScoreCAM maps, boxes).

config.py (schema) · architecture.py (offline loading from the hub layout) · preprocess.py (open_clip's
preprocessing + frame geometry) · cam.py (gScoreCAM, ScoreCAM, Grad-CAM, similarity) · boxes.py (map -> boxes)
model.py (adapter) · servicer.py (proto <-> arrays) · service.py (registration) · client.py (client + CLI)
"""
