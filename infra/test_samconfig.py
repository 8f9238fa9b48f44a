"""infra/samconfig.toml agrees with template.yaml, stage by stage.

Run: python3 -m pytest infra/test_samconfig.py
"""

from __future__ import annotations

import os
import re
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "local"))
from samtemplate import load_template  # noqa: E402

STAGES = ("dev", "staging", "prod")

with open(os.path.join(ROOT, "infra", "samconfig.toml"), "rb") as f:
    CONFIG = tomllib.load(f)
PARAMETERS = load_template(os.path.join(ROOT, "template.yaml"))["Parameters"]


def overrides(stage: str) -> dict[str, str]:
    items = CONFIG[stage]["deploy"]["parameters"]["parameter_overrides"]
    out = dict(item.split("=", 1) for item in items)
    assert len(out) == len(items), f"{stage}: a parameter is set twice"
    return out


def test_config_has_exactly_the_stages_template_yaml_allows():
    assert sorted(CONFIG) == sorted(["version", *STAGES])
    assert PARAMETERS["Stage"]["AllowedValues"] == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_overrides_name_template_parameters_and_satisfy_their_constraints(stage):
    values = overrides(stage)
    assert values["Stage"] == stage
    unknown = values.keys() - PARAMETERS.keys()
    assert not unknown, f"{stage}: not parameters of template.yaml: {sorted(unknown)}"
    missing = {k for k, spec in PARAMETERS.items() if "Default" not in spec} - values.keys()
    assert not missing, f"{stage}: required parameters not set: {sorted(missing)}"
    for key, value in values.items():
        spec = PARAMETERS[key]
        if "AllowedValues" in spec:
            assert value in spec["AllowedValues"], f"{stage}: {key}={value}"
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), f"{stage}: {key}={value}"
        assert "://" not in value or "@" not in value, f"{stage}: {key} looks like a URL with credentials"


@pytest.mark.parametrize("stage", STAGES)
def test_build_and_deploy_settings(stage):
    build = CONFIG[stage]["build"]["parameters"]
    deploy = CONFIG[stage]["deploy"]["parameters"]
    assert build["beta_features"] is True, "the rust-cargolambda builder needs --beta-features"
    assert not build.get("cached"), "cached builds hash only CodeUri and miss changes in shared/"
    assert "CAPABILITY_IAM" in deploy["capabilities"].split()
    assert CONFIG[stage]["global"]["parameters"]["stack_name"] == f"client-portal-{stage}"
    if stage != "dev":
        assert deploy["confirm_changeset"] is True
