"""``python -m audioproc.models > docs/manifest.schema.json``: the manifest's JSON Schema."""

import json
import sys

from audioproc.models.manifest import Manifest

sys.stdout.write(json.dumps(Manifest.json_schema(), indent=2) + "\n")
