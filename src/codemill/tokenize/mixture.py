"""Mixtures: which records go into which component, with weights and epoch caps, and the blend.

A spec (YAML, or the `mixture:` part of a tokenize config):

    name: code-permissive
    permissive: true            # only permissive records (and no_license ones with allow_no_license)
    allow_no_license: false
    components:
      - name: python
        select: {language: Python}                 # every field must match; a list means any of
        weight: 0.7
        max_epochs: 4                              # cap on repeats at a given training length
      - name: web
        select: {language: [JavaScript, TypeScript, HTML, CSS]}
        weight: 0.3

A record goes to the first component it matches. The blend spreads each component's weight over
its shards in proportion to their tokens, and is written both as Megatron-LM's
`--data-path "w1 prefix1 w2 prefix2 ..."` and as (prefixes, weights) for megatron-core's
`BlendedMegatronDatasetBuilder`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from codemill.errors import UserError
from codemill.records import FileRecord, LicenseType
from codemill.settings import reject_unknown

_RECORD_FIELDS = {f.name for f in dataclasses.fields(FileRecord)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MixtureError(UserError):
    """A mixture spec that cannot be used (names the component and the problem)."""


@dataclass(frozen=True)
class Component:
    name: str
    select: dict = field(default_factory=dict)
    weight: float = 1.0
    max_epochs: float | None = None

    def matches(self, record: FileRecord) -> bool:
        for name, wanted in self.select.items():
            value = getattr(record, name)
            if isinstance(wanted, (list, tuple)):
                if value not in wanted:
                    return False
            elif value != wanted:
                return False
        return True


@dataclass(frozen=True)
class MixtureSpec:
    name: str = "all"
    permissive: bool = False
    allow_no_license: bool = False
    components: tuple[Component, ...] = (Component("all"),)

    def __post_init__(self) -> None:
        if not self.components:
            raise MixtureError(f"mixture {self.name!r} has no components")
        names = [c.name for c in self.components]
        for c in self.components:
            if not _NAME.match(c.name):
                raise MixtureError(
                    f"mixture component name {c.name!r} must be letters, digits, '_', '.', '-' (it names a folder)"
                )
            unknown = set(c.select) - _RECORD_FIELDS
            if unknown:
                raise MixtureError(
                    f"mixture component {c.name!r} selects on unknown field(s) {sorted(unknown)}; "
                    f"record fields: {', '.join(sorted(_RECORD_FIELDS))}"
                )
            if not isinstance(c.weight, (int, float)) or c.weight < 0:
                raise MixtureError(f"mixture component {c.name!r} has weight {c.weight!r}; weights must be >= 0")
            if c.max_epochs is not None and c.max_epochs <= 0:
                raise MixtureError(f"mixture component {c.name!r} has max_epochs {c.max_epochs}; it must be > 0")
        if len(set(names)) != len(names):
            raise MixtureError(f"mixture {self.name!r} repeats a component name: {names}")
        if sum(c.weight for c in self.components) <= 0:
            raise MixtureError(f"mixture {self.name!r}: all weights are zero")

    def component_of(self, record: FileRecord) -> str | None:
        if self.permissive:
            allowed = {LicenseType.PERMISSIVE} | ({LicenseType.NO_LICENSE} if self.allow_no_license else set())
            if record.license_type not in allowed:
                return None
        for c in self.components:
            if c.matches(record):
                return c.name
        return None

    @classmethod
    def from_dict(cls, values: dict) -> "MixtureSpec":
        reject_unknown(cls, values, "mixture")
        kwargs = dict(values)
        if "components" in kwargs:
            components = []
            for item in kwargs["components"] or ():
                if not isinstance(item, dict):
                    raise MixtureError(f"a mixture component must be a mapping, got {item!r}")
                reject_unknown(Component, item, "mixture component")
                components.append(Component(**item))
            kwargs["components"] = tuple(components)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: Path) -> "MixtureSpec":
        import yaml

        from codemill.settings import load_yaml

        try:
            data = load_yaml(Path(path).read_text())
        except OSError as err:
            raise MixtureError(f"cannot read mixture spec {path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise MixtureError(f"mixture spec {path} is not valid YAML: {err}") from None
        if isinstance(data, dict) and "mixture" in data:
            data = data["mixture"]
        if not isinstance(data, dict):
            raise MixtureError(f"mixture spec {path}: expected a mapping")
        return cls.from_dict(data)


def component_weights(spec: MixtureSpec, tokens: dict[str, int], train_tokens: int | None = None) -> dict[str, float]:
    """Normalised component weights; with `train_tokens`, components capped at max_epochs x their
    tokens give up the excess to the others in proportion to their weights (water-filling)."""
    weights = {c.name: float(c.weight) for c in spec.components if tokens.get(c.name, 0) > 0}
    caps = {
        c.name: c.max_epochs * tokens[c.name] / train_tokens
        for c in spec.components
        if c.name in weights and c.max_epochs is not None and train_tokens
    }
    fixed: dict[str, float] = {}
    while True:
        free = {n: w for n, w in weights.items() if n not in fixed}
        budget = 1.0 - sum(fixed.values())
        total = sum(free.values())
        if not free or total <= 0:
            break
        share = {n: budget * w / total for n, w in free.items()}
        over = {n for n, s in share.items() if n in caps and s > caps[n]}
        if not over:
            fixed.update(share)
            break
        for n in over:
            fixed[n] = caps[n]
    if sum(fixed.values()) < 1.0 - 1e-9 and train_tokens:
        raise MixtureError(
            f"the epoch caps allow only {sum(fixed.values()) * train_tokens:,.0f} of the "
            f"{train_tokens:,} training tokens; raise max_epochs or add data"
        )
    return fixed


def blend(spec: MixtureSpec, shard_tokens: dict[str, dict[str, int]], train_tokens: int | None = None) -> dict:
    """shard_tokens: component -> {shard prefix: tokens}. Returns the blend as JSON-ready data."""
    totals = {name: sum(shards.values()) for name, shards in shard_tokens.items()}
    empty = [c.name for c in spec.components if totals.get(c.name, 0) == 0 and c.weight > 0]
    if empty:
        raise MixtureError(f"mixture {spec.name!r}: component(s) {empty} selected no records (no tokens)")
    weights = component_weights(spec, totals, train_tokens)
    prefixes, shard_weights = [], []
    for name in sorted(weights):
        for prefix, count in sorted(shard_tokens[name].items()):
            prefixes.append(prefix)
            shard_weights.append(weights[name] * count / totals[name])
    return {
        "mixture": spec.name,
        "permissive": spec.permissive,
        "train_tokens": train_tokens,
        "components": {
            c.name: {
                "weight": weights.get(c.name, 0.0),
                "tokens": totals.get(c.name, 0),
                "max_epochs": c.max_epochs,
                "select": c.select,
                "epochs_at_train_tokens": (
                    weights.get(c.name, 0.0) * train_tokens / totals[c.name]
                    if train_tokens and totals.get(c.name)
                    else None
                ),
            }
            for c in spec.components
        },
        "prefixes": prefixes,
        "weights": shard_weights,
        "data_path": " ".join(f"{w:.10g} {p}" for w, p in zip(shard_weights, prefixes, strict=False)),
    }
