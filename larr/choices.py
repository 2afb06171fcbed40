"""String choices (config values, CLI flags, model-config parameters) as enums whose members are their spelling.

    class StoreKind(ChoiceEnum):
        LRU = "lru"

    StoreKind.parse("lru")          # StoreKind.LRU; an unknown value is a ValueError naming the known ones
    f"{StoreKind.LRU}"              # "lru": members go into paths, f-strings, JSON and YAML as the bare value

(``enum.StrEnum`` prints the same but arrives in Python 3.11; we support 3.10.) Layer 1: imports nothing of larr.
"""

from __future__ import annotations

import enum


class ChoiceEnum(str, enum.Enum):
    """A str enum that prints as its value and parses with an error that lists the choices."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def choice_name(cls) -> str:
        """How an error names the setting (override with the parameter's or the option's name)."""
        return cls.__name__

    @classmethod
    def parse(cls, value):
        """``value`` as a member (a member passes through); a ValueError naming the known values otherwise."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(repr(member.value) for member in cls)
            raise ValueError(f"unknown {cls.choice_name()} {value!r}: one of {known}") from None
