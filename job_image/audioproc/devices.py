"""The device names the pipeline accepts, parsed without importing torch.

The command line checks ``--device`` with :func:`device_kind` before it loads the pipeline,
so a typo is a usage error in a fraction of a second; ``runner.resolve_device`` maps the
kind to a torch device.
"""

from __future__ import annotations

from typing import Literal

DeviceKind = Literal["auto", "cpu", "cuda"]


def device_kind(device: str) -> DeviceKind:
    """``auto | cpu | cuda | gpu`` (any case) -> ``auto | cpu | cuda`` (``gpu`` means ``cuda``).

    Raises:
        ValueError: any other name.
    """
    name = device.lower()
    if name == "auto":
        return "auto"
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "gpu"):
        return "cuda"
    raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
