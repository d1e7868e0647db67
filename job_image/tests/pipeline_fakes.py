"""Tiny extractors for the pipeline's tests (the real ones live in audioproc.extractors).

They follow the real interface (audioproc.extractors.base.Extractor) and compute real,
checkable numbers from the audio they are given; ``register`` adds them to the catalog
for one test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioproc.extractors import registry
from audioproc.extractors.base import Extractor, ExtractorOutput
from audioproc.extractors.catalog import CATALOG, ExtractorInfo, ModelFile


class RmsExtractor(Extractor):
    """RMS of the signal and a 100 ms RMS envelope artifact; batches across items."""

    name = "test_rms"
    sample_rate = 16000
    batch_sizes: list[int] = []

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        assert audio.device.type == device.type and audio.dtype == torch.float32 and audio.ndim == 1
        hop = self.sample_rate // 10
        frames = audio[: audio.numel() // hop * hop].reshape(-1, hop)
        envelope = frames.pow(2).mean(dim=1).sqrt()
        return ExtractorOutput(
            features={"rms": float(audio.pow(2).mean().sqrt()), "n_samples": int(audio.numel())},
            artifacts={"envelope": envelope.cpu().numpy()},
        )

    def extract_batch(
        self, audios: list[torch.Tensor], device: torch.device
    ) -> list[ExtractorOutput]:
        type(self).batch_sizes.append(len(audios))
        return [self.extract(a, device) for a in audios]


class PeakExtractor(Extractor):
    """Peak absolute value, at 22.05 kHz (a second analysis rate)."""

    name = "test_peak"
    sample_rate = 22050

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        return ExtractorOutput(
            features={"peak": float(audio.abs().max()), "n_samples": int(audio.numel())}
        )


class FailingExtractor(Extractor):
    name = "test_failing"
    sample_rate = 16000

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        raise RuntimeError("this extractor always fails")


class OomOnAcceleratorExtractor(Extractor):
    """Raises the CUDA out-of-memory error off the CPU, as a GPU would on a too-large input.

    Stands in for a real GPU, which this machine does not have: the error type is torch's own.
    """

    name = "test_oom"
    sample_rate = 16000
    devices_seen: list[str] = []

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        type(self).devices_seen.append(device.type)
        if device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return ExtractorOutput(features={"n_samples": int(audio.numel())}, notes=["computed"])


class UnavailableExtractor(Extractor):
    """Needs a model file that the tests' settings leave unset (its catalog entry says which)."""

    name = "test_unavailable"
    sample_rate = 16000
    model = ModelFile("clap_checkpoint", "checkpoint", "a checkpoint file")

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        raise AssertionError("must not run")


FAKES = (
    RmsExtractor,
    PeakExtractor,
    FailingExtractor,
    OomOnAcceleratorExtractor,
    UnavailableExtractor,
)


def register(
    monkeypatch: pytest.MonkeyPatch, *, devices: tuple[str, ...] = ("cpu", "cuda")
) -> None:
    """Add the fakes to the catalog and reset the registry's instances, for one test."""
    for cls in FAKES:
        monkeypatch.setitem(
            CATALOG,
            cls.name,
            ExtractorInfo(
                cls.name,
                "0.0.1",
                devices,
                cls.__doc__ or cls.name,
                f"{__name__}:{cls.__name__}",
                False,
                model=getattr(cls, "model", None),
            ),
        )
    monkeypatch.setattr(registry, "_instances", {})
    RmsExtractor.batch_sizes = []
    OomOnAcceleratorExtractor.devices_seen = []


def envelope_rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal.astype(np.float64) ** 2)))
