"""The AudioJob CustomResourceDefinition, generated from the pydantic models.

``python -m audioproc_operator.crd > crds/audiojob.yaml`` writes it; a test fails when the
file drifts from the models. Pydantic's JSON Schema is turned into a *structural* schema
(what the API server requires): references are inlined, ``anyOf [X, null]`` becomes ``X``
(optional fields are omitted on the wire, never null), and keywords the API server rejects
or ignores (``title``, ``additionalProperties: false``, ``default: null``) are dropped.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from audioproc.models.audiojob import (
    GROUP,
    KIND,
    ONE_ITEM_SOURCE,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    AudioJobSpec,
    AudioJobStatus,
)

#: JSON Schema keywords an apiextensions.k8s.io/v1 schema understands (the rest is dropped).
_KEPT_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "description",
        "default",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "uniqueItems",
        "items",
        "properties",
        "required",
    }
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "number", "jsonPath": ".status.progress"},
    {"name": "Device", "type": "string", "jsonPath": ".status.device"},
    {"name": "Items", "type": "integer", "jsonPath": ".status.counts.total"},
    {"name": "Succeeded", "type": "integer", "jsonPath": ".status.counts.succeeded"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.counts.failed"},
    # -o wide: the GPUs granted (held until it finishes) and the message (why it waits).
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus", "priority": 1},
    {"name": "Queue", "type": "string", "jsonPath": ".status.queue.localQueue", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s and flatten pydantic's JSON Schema ``node`` into a structural schema."""
    if not isinstance(node, dict):
        return node
    node = _flattened(node, defs)
    out = {
        key: _structural_value(key, value, defs)
        for key, value in node.items()
        if key in _KEPT_KEYWORDS and not (key == "default" and value is None)
    }
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _flattened(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` inlined and ``anyOf [X, null]`` made ``X`` (until neither
    is left; its own keywords win over the target's), and ``const`` made a one-value enum."""
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(
                f"cannot express a union of {len(variants)} types structurally: {node}"
            )
        node = {**variants[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    return node


def _structural_value(key: str, value: Any, defs: dict[str, Any]) -> Any:
    if key == "properties":
        return {name: structural(sub, defs) for name, sub in value.items()}
    if key == "items":
        return structural(value, defs)
    return value


def _drop_defaults(node: dict[str, Any]) -> None:
    node.pop("default", None)
    for sub in node.get("properties", {}).values():
        _drop_defaults(sub)
    if isinstance(node.get("items"), dict):
        _drop_defaults(node["items"])


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors would puzzle readers of the CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def model_schema(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode=mode)
    schema: dict[str, Any] = structural(raw, raw.get("$defs", {}))  # a dict in, a dict out
    return schema


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest as a dict."""
    spec_schema = model_schema(AudioJobSpec, "validation")
    # AudioJobSpec's model validator, as the API server's CEL rule: refused at kubectl apply.
    spec_schema["x-kubernetes-validations"] = [
        {"rule": "has(self.items) != has(self.itemsFrom)", "message": ONE_ITEM_SOURCE}
    ]
    status_schema = model_schema(AudioJobStatus, "serialization")
    status_schema.pop("required", None)  # the operator writes status piecewise
    _drop_defaults(status_schema)  # status is written, never defaulted
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "listKind": f"{KIND}List",
                "categories": ["audioproc"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A batch of media files to turn into audio feature manifests.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated from audioproc.models.audiojob by `python -m audioproc_operator.crd`; do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
