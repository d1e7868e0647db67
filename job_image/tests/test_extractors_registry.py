"""Every catalog entry loads through the registry and honours the extractor interface."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from extractor_testing import settings

from audioproc.extractors.base import Extractor, ExtractorOutput
from audioproc.extractors.catalog import CATALOG, DEFAULT_EXTRACTORS
from audioproc.extractors.registry import get_extractor


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_entry_loads(name: str) -> None:
    extractor = get_extractor(name, settings())
    assert isinstance(extractor, Extractor) and extractor.name == name
    assert extractor.sample_rate in (16_000, 22_050, 48_000)


@pytest.mark.parametrize("name", DEFAULT_EXTRACTORS)
def test_default_extractors_give_json_features_and_numpy_artifacts(name: str) -> None:
    extractor = get_extractor(name, settings())
    rng = np.random.default_rng(0)
    audio = torch.tensor(0.1 * rng.standard_normal(3 * extractor.sample_rate), dtype=torch.float32)
    outputs = extractor.extract_batch(
        [audio, audio[: extractor.sample_rate * 2]], torch.device("cpu")
    )
    assert len(outputs) == 2
    for out in outputs:
        assert isinstance(out, ExtractorOutput)
        json.dumps(out.features, allow_nan=False)  # plain floats/ints/None, no numpy scalars
        assert all(type(v) in (float, int, str, list, type(None)) for v in out.features.values())
        assert all(isinstance(a, np.ndarray) for a in out.artifacts.values())
