"""The bundled tritonserver: install its python-backend stub, launch it, write
model repositories for it, and serve the shipped repository."""
