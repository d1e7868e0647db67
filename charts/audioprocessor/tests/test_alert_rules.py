"""The chart's alerts under ``promtool``: each fires on the series that should trigger it, when
its ``for:`` has passed, with its labels and annotations, and stays quiet otherwise.

The unit tests are promtool's YAML, one file per alert, in charts/audioprocessor/tests/rules/.
They name the rule file ``audioprocessor-rules.yaml``: this module renders the chart's
PrometheusRule (release ``rel``, default values), writes its ``spec.groups`` under that name into
a temporary directory and copies the tests beside it. promtool is built from the Go module
github.com/prometheus/prometheus by e2e/controlplane/build-promtool.sh (``make promtool``, which
``make test`` runs first); without it these tests skip and say how to build it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_support import CHART, REPO, of_kind, render

RULE_TESTS = CHART / "tests" / "rules"
RULES_FILE = "audioprocessor-rules.yaml"
BUILD_SCRIPT = REPO / "e2e" / "controlplane" / "build-promtool.sh"
ENABLED = "metrics.prometheusRule.enabled=true"


def promtool_path() -> Path:
    """build-promtool.sh's cached binary (``AUDIOPROC_PROMTOOL`` overrides); skip if not built."""
    if override := os.environ.get("AUDIOPROC_PROMTOOL"):
        return Path(override)
    where = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--path"], capture_output=True, text=True, check=True
    )
    path = Path(where.stdout.strip())
    if not os.access(path, os.X_OK):
        pytest.skip(f"promtool is not built yet: run `make promtool` ({BUILD_SCRIPT.name})")
    return path


def promtool(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool_path()), *args],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def rendered_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``spec.groups`` of the chart's PrometheusRule, as a Prometheus rule file holds them.

    ``values`` go in through a values file: ``--set`` would pass a ratio as a string.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        yaml.safe_dump(values or {}, values_file)
        values_file.flush()
        objects = render("audio", values_files=[Path(values_file.name)], sets=[ENABLED])
    (rule,) = of_kind(objects, "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def write_rules_and_tests(directory: Path, values: dict[str, Any] | None = None) -> Path:
    """The rendered rule file and copies of the rule tests, side by side in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = {"groups": rendered_groups(values)}
    (directory / RULES_FILE).write_text(yaml.safe_dump(rules, sort_keys=False))
    for test_file in RULE_TESTS.glob("*.yaml"):
        shutil.copy(test_file, directory / test_file.name)
    return directory


def failure_ratio(ratio: float) -> dict[str, Any]:
    return {"metrics": {"prometheusRule": {"itemFailureRatio": ratio}}}


def alert_names(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    promtool_path()  # skip before rendering when there is nothing to run
    return write_rules_and_tests(tmp_path_factory.mktemp("rules"))


def test_promtool_checks_the_rendered_rules(rule_dir: Path) -> None:
    result = promtool(rule_dir, "check", "rules", RULES_FILE)
    assert result.returncode == 0, f"promtool check rules:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("test_file", sorted(p.name for p in RULE_TESTS.glob("*.yaml")))
def test_promtool_rule_unit_tests_pass(rule_dir: Path, test_file: str) -> None:
    result = promtool(rule_dir, "test", "rules", test_file)
    assert result.returncode == 0, (
        f"promtool test rules {test_file}:\n{result.stdout}{result.stderr}"
    )


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """A new alert without unit tests, or a test of an alert that no longer exists, fails here."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS.glob("*.yaml"):
        spec = yaml.safe_load(test_file.read_text())
        assert spec["rule_files"] == [RULES_FILE], test_file.name
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = alert_names(rendered_groups())
    assert len(alerts) == 4
    assert firing == alerts, f"alerts without a test where they fire: {alerts - firing}"
    assert quiet == alerts, f"alerts without a test where they stay quiet: {alerts - quiet}"


def test_rule_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The tests pin the defaults: a ratio of 0.2 no longer fires on 18 % failed items."""
    directory = write_rules_and_tests(tmp_path, failure_ratio(0.2))
    result = promtool(directory, "test", "rules", "audiojob-items-failing.yaml")
    assert result.returncode != 0, result.stdout
    assert "AudioJobItemsFailing" in result.stdout + result.stderr


def test_failure_ratio_summary_is_a_whole_percentage() -> None:
    """0.07 * 100 is 7.000000000000001 in floating point; the summary rounds it."""
    rules = {r["alert"]: r for g in rendered_groups(failure_ratio(0.07)) for r in g["rules"]}
    assert rules["AudioJobItemsFailing"]["annotations"]["summary"].startswith("More than 7% ")


def test_no_operator_down_alert_without_an_operator() -> None:
    assert alert_names(rendered_groups({"operator": {"enabled": False}})) == {
        "AudioJobStuck",
        "AudioJobItemsFailing",
        "AudioProcessorApiErrors",
    }
