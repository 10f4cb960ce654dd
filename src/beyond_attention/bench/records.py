"""Benchmark results as dataclasses that read and write the recorded JSON layout.

A :class:`Record` writes its fields in declaration order (the order of the keys on disk).
A field that is ``None`` is left out, unless it is declared with :func:`kept`, was read as
``null`` or is named in :meth:`Record.keep_null`: then it is written as ``null``. Keys a
reader does not know are kept in ``extra`` and written back after the fields, so a result
written by a newer version survives a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


def kept(default: Any = None) -> Any:
    """A field written to JSON even when ``None``."""
    return field(default=default, metadata={"kept": True})


@dataclass
class Record:
    """Base of the result dataclasses: ``to_json()`` / ``from_json()``."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    nulls: set[str] = field(default_factory=set, kw_only=True, repr=False, compare=False)
    #: The settings dataclass of a run's ``settings`` field (``to_dict`` / ``from_dict``).
    settings_type: ClassVar[Any] = None

    def keep_null(self, *names: str) -> None:
        """Write these fields as ``null`` when they are None (rather than leaving them out)."""
        self.nulls.update(names)

    def _encode(self, name: str, value: Any) -> Any:
        """The JSON form of one field (sub-records, lists of them and the settings are
        encoded)."""
        if name == "settings" and self.settings_type is not None:
            return value.to_dict()
        if isinstance(value, Record):
            return value.to_json()
        if isinstance(value, list):
            return [v.to_json() if isinstance(v, Record) else v for v in value]
        if isinstance(value, tuple):
            return list(value)
        return value

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        """The field value of one JSON entry (override for nested records)."""
        if name == "settings" and cls.settings_type is not None:
            return cls.settings_type.from_dict(value)
        return value

    def to_json(self) -> dict[str, Any]:
        """The dict written to disk, in the recorded layout."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", "nulls"):
                continue
            value = getattr(self, f.name)
            if value is None and not f.metadata.get("kept") and f.name not in self.nulls:
                continue
            out[f.name] = self._encode(f.name, value)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        """Read one record of the recorded layout; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_json expects a JSON object, got {data!r}")
        names = {f.name for f in fields(cls)} - {"extra", "nulls"}
        kw = {k: cls._decode(k, v) for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        nulls = {k for k in kw if data[k] is None}
        try:
            return cls(**kw, extra=extra, nulls=nulls)
        except TypeError as e:
            raise ValueError(f"{cls.__name__}.from_json: {e}") from None
