"""What every DEPO config dataclass shares: the error that names keys, and the per-field checks.

Each dataclass of the ``depo:`` block (``DEPOConfig`` and its sections) is a verl ``BaseConfig``
whose ``__post_init__`` checks its own fields with a :class:`FieldChecks` and reports every bad
field at once, each under its full key (``depo.filter.window: ...``). :func:`build` turns a YAML
mapping into one of them and keeps going past a bad field (it falls back to that field's default)
so that one run of the checks reports everything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any


class DEPOConfigError(ValueError):
    """One or more invalid settings. ``problems`` holds ``(key, message)`` pairs; the text is one
    line per problem, each starting with its key."""

    def __init__(self, problems: Iterable[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("\n".join(f"{key}: {message}" for key, message in self.problems))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FieldChecks:
    """Checks the fields of one config dataclass (whose class attribute ``config_key`` is its place
    in the YAML, e.g. ``depo.filter``). Normalising checks write the cleaned value back."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.prefix = type(owner).config_key
        self.problems: list[tuple[str, str]] = []

    def fail(self, name: str, message: str) -> None:
        self.problems.append((f"{self.prefix}.{name}", message))

    def _set(self, name: str, value: Any) -> None:
        # BaseConfig freezes fields once set; normalising in __post_init__ is the one exception.
        object.__setattr__(self.owner, name, value)

    def boolean(self, name: str) -> None:
        value = getattr(self.owner, name)
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {value!r}")

    def integer(self, name: str, minimum: int | None = None, optional: bool = False) -> None:
        value = getattr(self.owner, name)
        if value is None and optional:
            return
        if not is_int(value) or (minimum is not None and value < minimum):
            bound = "" if minimum is None else " > 0" if minimum == 1 else f" >= {minimum}"
            self.fail(name, f"must be an int{bound}{' or null' if optional else ''}, got {value!r}")

    def number(
        self, name: str, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False
    ) -> None:
        value = getattr(self.owner, name)
        if not is_number(value):
            self.fail(name, f"must be a finite number, got {value!r}")
            return
        if (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi):
            self.fail(name, f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {value!r}")
            return
        self._set(name, float(value))

    def choice(self, name: str, options: Iterable[str]) -> None:
        value, options = getattr(self.owner, name), tuple(options)
        if value not in options:
            self.fail(name, f"must be one of {options}, got {value!r}")

    def text(self, name: str, optional: bool = False, what: str = "a non-empty string") -> None:
        value = getattr(self.owner, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            self.fail(name, f"must be {what}{' or null' if optional else ''}, got {value!r}")

    def done(self) -> None:
        if self.problems:
            raise DEPOConfigError(self.problems)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name != "_target_"]


def to_plain(values: Any) -> Any:
    """An OmegaConf node as plain Python (other values unchanged)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(values, (DictConfig, ListConfig)):
        return OmegaConf.to_container(values, resolve=True)
    return values


def build(cls: type, values: Any, problems: list[tuple[str, str]]) -> Any:
    """``cls(**values)`` for a config dataclass, appending what is wrong to ``problems``.

    ``_target_`` (hydra's instantiation key) is dropped; unknown keys are reported by name. A field
    that fails its check falls back to its default, so the caller can go on checking the rest.
    """
    values = to_plain(values)
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        problems.append((cls.config_key, f"must be a mapping, got {values!r}"))
        return cls()
    known = field_names(cls)
    values = {k: v for k, v in values.items() if k != "_target_"}
    for name in sorted(set(values) - set(known)):
        problems.append((f"{cls.config_key}.{name}", f"unknown key; valid keys: {sorted(known)}"))
    values = {k: v for k, v in values.items() if k in known}
    try:
        return cls(**values)
    except DEPOConfigError as err:
        problems.extend(err.problems)
        bad = {key[len(cls.config_key) + 1 :].split(".")[0] for key, _ in err.problems}
        try:
            return cls(**{k: v for k, v in values.items() if k not in bad})
        except DEPOConfigError:
            return cls()
