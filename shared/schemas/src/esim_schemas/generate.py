"""Writes the committed JSON Schema and sample of every contract event: `make schemas`."""

import json
import sys
from pathlib import Path
from typing import Any

from esim_schemas.envelope import CloudEvent
from esim_schemas.events import EVENT_MODELS
from esim_schemas.samples import sample_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "json"
SAMPLE_DIR = ROOT / "samples"


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of a whole CloudEvent of one type, envelope and data."""
    model = next(m for m in EVENT_MODELS if m.event_type == event_type)
    schema: dict[str, Any] = CloudEvent[model].model_json_schema(mode="serialization")  # type: ignore[valid-type]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://esim.example/schemas/{event_type}.json"
    schema["title"] = f"{model.__name__} ({event_type})"
    schema["description"] = (model.__doc__ or "").strip()
    schema["properties"]["type"] = {"const": event_type, "title": "Type", "type": "string"}
    schema["properties"]["data"] = {"$ref": f"#/$defs/{model.__name__}"}
    schema["required"] = sorted(
        {*schema.get("required", []), "specversion", "id", "source", "type", "time", "data"}
    )
    return schema


def render(document: dict[str, Any]) -> str:
    """Stable JSON text for a committed file."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[Path, str]:
    """Every generated file and its content."""
    files: dict[Path, str] = {}
    for model in EVENT_MODELS:
        files[SCHEMA_DIR / f"{model.event_type}.json"] = render(event_schema(model.event_type))
        files[SAMPLE_DIR / f"{model.event_type}.json"] = render(sample_event(model.event_type))
    return files


def main() -> int:
    """Write the files; with `--check`, only report drift and exit 1 if there is any."""
    check = "--check" in sys.argv[1:]
    drift = []
    for path, content in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != content:
            drift.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
    verb = "differ from the models" if check else "written"
    for path in drift:
        print(f"{path.relative_to(ROOT)}: {verb}")
    return 1 if check and drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
