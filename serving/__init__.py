"""Triton export, the generic python-backend model, server control and the gRPC client."""
