"""Generated gRPC stubs for the modelyard.v1 protos (see protos/generate.py; do not edit the *_pb2 files)."""
