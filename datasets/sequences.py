"""Which MRI sequence a series is: rules on SeriesDescription, overridable per dataset.

The defaults cover the vendor naming seen in the two papers' centres (Siemens ``t2_tse_tra``, GE ``Ax T2 FRFSE``,
``Sag T1 FSPGR +C``, ``ep2d_diff_..._ADC``...). A dataset's ``sequences.yaml`` can put its own rules first, replace
the defaults, or map series explicitly by SeriesInstanceUID (the way out when a description is ambiguous).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import DataError

SEQUENCES = ("T2WI", "CET1WI", "DWI", "ADC")

# Order matters: an ADC series is usually named after its DWI series ("ep2d_diff_tra_ADC"), and a DWI series may
# mention T2 ("DWI T2 ref"), so the more specific rules come first.
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("ADC", r"adc|apparent diffusion"),
    ("DWI", r"dwi|diff|trace|\bb\s*=?\s*\d{2,4}\b"),
    ("CET1WI", r"cet1|ce[-_ ]?t1|t1.*(\+\s*c\b|post|gd|gad|contrast|enh)"),
    ("T2WI", r"t2"),
)

RULES_FILE = "sequences.yaml"


def check_sequence(value: str) -> str:
    """``value`` if it is a known sequence name; ValueError listing the known ones otherwise (for validators)."""
    if value not in SEQUENCES:
        raise ValueError(f"unknown sequence {value!r}; known: {', '.join(SEQUENCES)}")
    return value


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequence: str
    pattern: str

    _known_sequence = field_validator("sequence")(classmethod(lambda cls, value: check_sequence(value)))

    @field_validator("pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value


class _RulesFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[_RuleModel] = Field(default_factory=list)
    series: dict[str, str] = Field(default_factory=dict)
    replace_defaults: bool = False

    @field_validator("series")
    @classmethod
    def _known_sequences(cls, value: dict[str, str]) -> dict[str, str]:
        for uid, sequence in value.items():
            if sequence not in SEQUENCES:
                raise ValueError(f"series {uid}: unknown sequence {sequence!r}; known: {', '.join(SEQUENCES)}")
        return value


@dataclass(frozen=True)
class SequenceRules:
    """Maps a series to a sequence name: explicit UIDs first, then regex rules in order (first match wins)."""

    rules: tuple[tuple[str, str], ...] = DEFAULT_RULES
    series: Mapping[str, str] = field(default_factory=dict)

    def classify(self, series_uid: str, description: str) -> str | None:
        """The sequence of a series, or None when no rule matches (localizers, plain T1...)."""
        if series_uid in self.series:
            return self.series[series_uid]
        for sequence, pattern in self.rules:
            if re.search(pattern, description, flags=re.IGNORECASE):
                return sequence
        return None

    def as_dict(self) -> dict:
        """A JSON-able form, used in cache keys (a rule change re-indexes)."""
        return {"rules": [list(rule) for rule in self.rules], "series": dict(sorted(self.series.items()))}


def load_rules(root: Path, path: Path | None = None) -> SequenceRules:
    """The rules for dataset ``root``: ``path`` if given, else ``root/sequences.yaml`` if present, else the defaults.

    Raises:
        DataError: naming the file and the key when the rules file is malformed.
    """
    path = path or root / RULES_FILE
    if not path.exists():
        if path.name != RULES_FILE or path.parent != root:
            raise DataError(str(path), "sequence rules file not found")
        return SequenceRules()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        parsed = _RulesFileModel.model_validate(raw)
    except yaml.YAMLError as exc:
        raise DataError(str(path), f"not valid YAML: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DataError(str(path), details) from None
    own = tuple((rule.sequence, rule.pattern) for rule in parsed.rules)
    rules = own if parsed.replace_defaults else own + DEFAULT_RULES
    return SequenceRules(rules=rules, series=dict(parsed.series))
