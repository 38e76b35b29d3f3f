"""Runs one tritonserver replica for an orchestrator: truthful readiness and
liveness endpoints, and a drain on SIGTERM that loses no request."""
