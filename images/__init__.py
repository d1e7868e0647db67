"""The project's container images, built from nothing but the package registries.

``python -m images build`` (``make images``) makes the base images when needed
(``images.bases``: Debian via mmdebstrap, uv from its wheel, the node's pause image) and
builds the job, operator and facade images (``images.build``, specs in images.json) with
a Docker engine (``images.engine``), skipping those whose sources did not change.
"""
