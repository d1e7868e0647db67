"""The extractor interface that the runner calls.

An extractor receives mono float32 audio at the sample rate it asks for, as a torch
tensor already on the device it should compute on, and returns JSON-able features plus
optional array artifacts (written beside the manifest as ``.npy``). The same code runs on
CPU and CUDA: only the tensors' device differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from audioproc.extractors._common import BLOCK_SECONDS
from audioproc.extractors.catalog import CATALOG, ExtractorInfo, unavailable_reason

if TYPE_CHECKING:
    import numpy as np
    import torch

    from audioproc.settings import PipelineSettings


@dataclass
class ExtractorOutput:
    features: dict[str, Any]
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Extractor(ABC):
    #: Catalog name; ``info`` is looked up from it.
    name: ClassVar[str]
    #: Sample rate in Hz of the audio this extractor is given.
    sample_rate: ClassVar[int]
    #: Fewest samples (at ``sample_rate``) it computes features from. The runner records a
    #: shorter input as this extractor's ``status: error`` ("audio too short") without
    #: calling it; features that need more (a loudness gating block, four beats) are None.
    min_samples: ClassVar[int] = 1

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        #: Long audio is processed in blocks of about this many seconds (bounded memory);
        #: the features do not depend on it (tests set it small to check that).
        self.block_s = BLOCK_SECONDS

    @property
    def info(self) -> ExtractorInfo:
        return CATALOG[self.name]

    def unavailable_reason(self) -> str | None:
        """Why this extractor cannot run in this deployment (a missing model), or None.

        The catalog's answer (``catalog.unavailable_reason``): the CLI and the facade ask the
        catalog without loading the implementation, and must get the same answer.
        """
        return unavailable_reason(self.info, self.settings)

    @abstractmethod
    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        """Features of one input.

        Args:
            audio: shape ``(n_samples,)``, float32, mono, nominally in [-1, 1], at
                ``self.sample_rate`` Hz, already on ``device``.
            device: where to compute.
        """

    def extract_batch(
        self, audios: list[torch.Tensor], device: torch.device
    ) -> list[ExtractorOutput]:
        """Features of several inputs; override to batch work across items."""
        return [self.extract(a, device) for a in audios]
