"""WiLoR: hands in images and frame sequences — box, side, 2D/3D keypoints and, with the upstream backend,
MANO parameters and meshes.

config.py (schema) · hands.py (queries, hands, the joint order) · conversions.py (mirroring, crops, cameras)
backends/ (mediapipe: CPU reference; upstream: the official WiLoR code) · model.py (adapter)
servicer.py (proto <-> arrays) · service.py (registration) · client.py (client + CLI)

README.md says what each backend fills and why the service has its own environment: the mediapipe backend
needs mediapipe 0.10.x (numpy<2, protobuf<5), so the service has its own
(`make setup-wilor` -> .venv-wilor, extra `modelyard[wilor]`); the upstream backend runs in WiLoR's own.
"""
