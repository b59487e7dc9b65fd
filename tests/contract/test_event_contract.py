"""Committed JSON Schemas match the models and CONTRACT.md; consumers accept the samples."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from esim_core.settings import Topics
from esim_schemas import EVENT_MODELS, EVENTS_BY_TYPE, EventData, decode_event
from esim_schemas.generate import SAMPLE_DIR, SCHEMA_DIR, expected_files
from esim_schemas.samples import SAMPLE_DATA

from tests.contract.contract_table import ENUMS, TABLE, TOPICS

EVENT_TYPES = sorted(EVENTS_BY_TYPE)


def committed(directory: Path, event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / f"{event_type}.json").read_text())
    return document


def data_schema(event_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = committed(SCHEMA_DIR, event_type)
    name = schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
    return schema["$defs"][name], schema


def resolve(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return schema["$defs"][prop["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        return resolve(options[0], schema)
    return prop


def test_committed_schemas_and_samples_match_the_models() -> None:
    drift = [
        str(path)
        for path, content in expected_files().items()
        if not path.exists() or path.read_text() != content
    ]
    assert drift == [], f"regenerate with `make schemas`: {drift}"


@pytest.mark.parametrize("event_type", sorted(TABLE))
def test_schema_keeps_every_contract_field_and_type(event_type: str) -> None:
    data, schema = data_schema(event_type)
    required = set(data.get("required", []))
    for field, json_type in TABLE[event_type].items():
        name = field.rstrip("?")
        assert name in data["properties"], f"{event_type} lost {name}"
        if not field.endswith("?"):
            assert name in required, f"{event_type}.{name} is no longer required"
        resolved = resolve(data["properties"][name], schema)
        assert resolved.get("type") == json_type, f"{event_type}.{name} changed type: {resolved}"
    extra_required = required - {f.rstrip("?") for f in TABLE[event_type]}
    assert not extra_required, f"{event_type} requires fields the contract lacks: {extra_required}"


@pytest.mark.parametrize(("key", "values"), sorted(ENUMS.items()))
def test_enumerations_keep_their_values(key: tuple[str, str], values: set[str] | set[int]) -> None:
    event_type, field = key
    data, schema = data_schema(event_type)
    resolved = resolve(data["properties"][field], schema)
    assert set(resolved["enum"]) == values


@pytest.mark.parametrize("event_type", sorted(TOPICS))
def test_default_topics_are_the_contracts(event_type: str) -> None:
    assert EVENTS_BY_TYPE[event_type].topic == TOPICS[event_type]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_sample_fits_its_committed_schema(event_type: str) -> None:
    sample = committed(SAMPLE_DIR, event_type)
    jsonschema.validate(sample, committed(SCHEMA_DIR, event_type))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_consumers_accept_the_committed_sample(event_type: str) -> None:
    raw = (SAMPLE_DIR / f"{event_type}.json").read_bytes()
    event = decode_event(raw, (EVENTS_BY_TYPE[event_type],))
    assert event.type == event_type
    data = json.loads(raw)["data"]
    # What the sample says comes back as it was; every field it leaves out reads as None.
    assert event.data.model_dump(mode="json", exclude_unset=True) == data
    dumped = event.data.model_dump(mode="json")
    assert {k: dumped[k] for k in type(event.data).model_fields if k not in data} == {
        k: None for k in type(event.data).model_fields if k not in data
    }


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_consumers_ignore_fields_added_later(event_type: str) -> None:
    sample = committed(SAMPLE_DIR, event_type)
    sample["data"]["added_in_a_later_version"] = {"anything": 1}
    sample["newextension"] = "x"
    decode_event(json.dumps(sample).encode(), (EVENTS_BY_TYPE[event_type],))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_sample_missing_a_required_field_is_refused(event_type: str) -> None:
    from esim_schemas import EventDecodeError

    sample = committed(SAMPLE_DIR, event_type)
    data, _ = data_schema(event_type)
    field = sorted(data["required"])[0]
    del sample["data"][field]
    with pytest.raises(EventDecodeError) as refused:
        decode_event(json.dumps(sample).encode(), (EVENTS_BY_TYPE[event_type],))
    assert refused.value.error_type == "schema_invalid"
    assert field in str(refused.value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sample, committed(SCHEMA_DIR, event_type))


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda model: model.__name__)
def test_every_event_model_has_a_topic_a_setting_and_a_sample(model: type[EventData]) -> None:
    assert model.topic.startswith("esim."), f"{model.__name__} has no contract-style topic"
    assert model.event_type.startswith(model.topic + "."), "type and topic disagree"
    assert model.event_type in SAMPLE_DATA, f"add a sample of {model.__name__} to samples.py"
    topics = Topics()
    assert topics.for_event(model) == model.topic
    assert getattr(topics, model.topic_setting()) == model.topic


def test_topics_and_event_models_are_one_to_one() -> None:
    names = [model.topic_setting() for model in EVENT_MODELS]
    assert len(set(names)) == len(names), "two event models share a topic setting"
    assert set(Topics().model_dump()) == set(names)
    assert len({model.topic for model in EVENT_MODELS}) == len(EVENT_MODELS)
    assert set(SAMPLE_DATA) == set(EVENTS_BY_TYPE), "a sample of an event that does not exist"
