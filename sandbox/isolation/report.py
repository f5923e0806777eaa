"""What a worker got: one ``LayerReport`` per isolation layer, sent in the ``ready`` frame.

A layer is ``applied``, ``not_needed`` (the uid drop when not root), ``unavailable`` (the host
lacks it), ``failed`` (it was tried and refused) or ``disabled`` (configured off). Strict mode
(``missing_layers``) refuses the last three unless the layer is named optional.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

LayerStatus = Literal["applied", "not_needed", "unavailable", "failed", "disabled"]
STATUSES: tuple[str, ...] = get_args(LayerStatus)
LAYERS = (
    "environment",
    "descriptors",
    "cgroup",
    "network",
    "rlimits",
    "uid",
    "no_new_privs",
    "filesystem",
    "seccomp",
)
MISSING: tuple[str, ...] = ("unavailable", "failed", "disabled")


@dataclass(frozen=True)
class LayerReport:
    name: str
    status: LayerStatus
    supported: bool  # does the host offer it?
    detail: str = ""  # how it was applied (mode, limits), or why not

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "supported": self.supported,
            "applied": self.applied,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerReport:
        status = data.get("status")
        return cls(
            name=str(data.get("name", "?")),
            status=status if status in STATUSES else "failed",
            supported=data.get("supported") is True,
            detail=str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class IsolationReport:
    """Every layer the worker tried, in the order applied; ``notes`` add anything else."""

    layers: tuple[LayerReport, ...] = ()
    notes: tuple[str, ...] = ()

    def layer(self, name: str) -> LayerReport | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def applied(self, name: str) -> bool:
        layer = self.layer(name)
        return layer is not None and layer.applied

    # The first-layer fields, as before issue 7.
    @property
    def env_scrubbed(self) -> bool:
        return self.applied("environment")

    @property
    def fds_closed(self) -> bool:
        return self.applied("descriptors")

    @property
    def no_new_privs(self) -> bool:
        return self.applied("no_new_privs")

    @property
    def core_dumps_disabled(self) -> bool:
        return self.applied("rlimits")

    def missing(self, optional: Iterable[str] = ()) -> list[LayerReport]:
        """Layers strict mode refuses: not applied and not merely unneeded, unless optional."""
        skip = set(optional)
        found = {layer.name for layer in self.layers}
        absent = [
            LayerReport(name, "failed", False, "not reported by the worker")
            for name in LAYERS
            if name not in found
        ]
        return [
            layer for layer in (*self.layers, *absent) if layer.status in MISSING and layer.name not in skip
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IsolationReport:
        layers = data.get("layers", [])
        notes = data.get("notes", [])
        return cls(
            layers=tuple(LayerReport.from_dict(x) for x in layers if isinstance(x, dict))
            if isinstance(layers, list)
            else (),
            notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
        )

    def summary(self) -> str:
        return ", ".join(f"{layer.name}={layer.status}" for layer in self.layers)


def describe_missing(missing: Iterable[LayerReport]) -> str:
    return "; ".join(
        f"{layer.name} ({layer.status}: {layer.detail or 'no reason given'})" for layer in missing
    )
