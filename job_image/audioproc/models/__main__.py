"""``python -m audioproc.models > docs/manifest.schema.json``: the manifest's JSON Schema."""

import json

from audioproc.models.manifest import Manifest

print(json.dumps(Manifest.json_schema(), indent=2))
