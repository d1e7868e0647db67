from __future__ import annotations

import pytest

from audioproc_operator.settings import OperatorSettings


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(_env_file=None)  # type: ignore[call-arg]
