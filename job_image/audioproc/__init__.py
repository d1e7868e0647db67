"""AudioProcessor's pipeline: media in, ``audio_manifest_v1`` out.

Importing this package is cheap: the heavy stack (torch, librosa, PyAV) is imported
only by the modules that compute, so the operator and the facade can use the models.
"""

__version__ = "0.1.0"
