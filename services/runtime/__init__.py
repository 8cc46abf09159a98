"""The serving runtime every modelyard model service stands on.

A model service supplies a config schema, a model adapter (load / warm up / infer) and a servicer that turns
proto messages into arrays; the runtime owns sockets, health, reflection, queueing, batching, memory,
metrics, logging, signals and shutdown.
"""

__version__ = "0.1.0"
