"""CORS policies for the local server, as MediaStore containers had them.

A policy is the JSON ``aws mediastore put-cors-policy --cors-policy`` took: a list of up to
100 rules, each with ``AllowedOrigins``, ``AllowedMethods``, ``AllowedHeaders`` and optional
``MaxAgeSeconds`` and ``ExposeHeaders`` (the ``{"CorsPolicy": [...]}`` form that
``get-cors-policy`` printed is accepted too). The first rule that applies wins. The rules and
their public sources are in docs/contract.md ("CORS"). A CORS policy only tells browsers
which cross-origin reads may see the answer; it opens nothing: an unsigned GET still needs
anonymous reads (``allow_anonymous``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InvalidParameterError

__all__ = ["CORS_METHODS", "CorsPolicy", "CorsPolicyError", "CorsRule"]

#: The methods a rule may allow (the CorsRule API reference).
CORS_METHODS: Final = ("PUT", "GET", "DELETE", "HEAD")
_MAX_RULES: Final = 100
_MAX_ITEMS: Final = 100
_MAX_AGE: Final = 2_147_483_647
_KEYS: Final = frozenset(
    {"AllowedOrigins", "AllowedMethods", "AllowedHeaders", "MaxAgeSeconds", "ExposeHeaders"}
)


class CorsPolicyError(InvalidParameterError):
    """A CORS policy that PutCorsPolicy would have refused; the message says which rule and
    field, and what the field takes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule="cors.policy")


def _pattern(text: str, *, case: bool) -> re.Pattern[str]:
    # One '*' at most (checked before), matching any run of characters, e.g. http://*.example.com.
    return re.compile(
        ".*".join(re.escape(p) for p in text.split("*")), 0 if case else re.IGNORECASE
    )


@dataclass(frozen=True)
class CorsRule:
    """One rule of a :class:`CorsPolicy` (the fields of the API's CorsRule)."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    expose_headers: tuple[str, ...] = ()

    def origin_allowed(self, origin: str) -> bool:
        return any(_pattern(o, case=True).fullmatch(origin) for o in self.allowed_origins)

    def headers_allowed(self, requested: Iterable[str]) -> bool:
        patterns = [_pattern(h, case=False) for h in self.allowed_headers]
        return all(any(p.fullmatch(h) for p in patterns) for h in requested)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AllowedOrigins": list(self.allowed_origins),
            "AllowedMethods": list(self.allowed_methods),
            "AllowedHeaders": list(self.allowed_headers),
        }
        if self.max_age_seconds is not None:
            out["MaxAgeSeconds"] = self.max_age_seconds
        if self.expose_headers:
            out["ExposeHeaders"] = list(self.expose_headers)
        return out


def _strings(rule: Mapping[str, Any], key: str, where: str, *, required: bool) -> tuple[str, ...]:
    value = rule.get(key)
    if value is None:
        if required:
            raise CorsPolicyError(f"{where} has no {key}; it takes a list of strings")
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CorsPolicyError(f"{where}: {key} must be a list of non-empty strings")
    if len(value) > _MAX_ITEMS:
        raise CorsPolicyError(f"{where}: {key} has {len(value)} items; at most {_MAX_ITEMS}")
    return tuple(value)


@dataclass(frozen=True)
class CorsPolicy:
    """A container's CORS policy: rules tried in order, the first that applies wins."""

    rules: tuple[CorsRule, ...]

    @classmethod
    def from_json(cls, data: object) -> CorsPolicy:
        """From the decoded JSON: the list of rules, or ``{"CorsPolicy": [...]}``. Raises
        :class:`CorsPolicyError` for what PutCorsPolicy refused."""
        if isinstance(data, Mapping) and set(data) == {"CorsPolicy"}:
            data = data["CorsPolicy"]
        if not isinstance(data, list) or not data:
            raise CorsPolicyError(
                "a CORS policy is a non-empty JSON list of rules (or {\"CorsPolicy\": [...]})"
            )
        if len(data) > _MAX_RULES:
            raise CorsPolicyError(f"the policy has {len(data)} rules; at most {_MAX_RULES}")
        rules = []
        for i, raw in enumerate(data, 1):
            where = f"rule {i}"
            if not isinstance(raw, Mapping):
                raise CorsPolicyError(f"{where} is not a JSON object")
            unknown = set(raw) - _KEYS
            if unknown:
                raise CorsPolicyError(
                    f"{where} has unknown fields {sorted(unknown)}; a rule takes "
                    + ", ".join(sorted(_KEYS))
                )
            origins = _strings(raw, "AllowedOrigins", where, required=True)
            methods = _strings(raw, "AllowedMethods", where, required=True)
            headers = _strings(raw, "AllowedHeaders", where, required=True)
            expose = _strings(raw, "ExposeHeaders", where, required=False)
            if not origins or not methods:
                raise CorsPolicyError(
                    f"{where} needs at least one AllowedOrigins and one AllowedMethods entry"
                )
            bad = [m for m in methods if m not in CORS_METHODS]
            if bad:
                raise CorsPolicyError(
                    f"{where}: AllowedMethods {bad} not allowed; use {', '.join(CORS_METHODS)}"
                )
            for key, values in (("AllowedOrigins", origins), ("AllowedHeaders", headers)):
                if any(v.count("*") > 1 for v in values):
                    raise CorsPolicyError(f"{where}: an {key} entry has more than one '*'")
            max_age = raw.get("MaxAgeSeconds")
            if max_age is not None and (
                isinstance(max_age, bool) or not isinstance(max_age, int)
                or not 0 <= max_age <= _MAX_AGE
            ):
                raise CorsPolicyError(f"{where}: MaxAgeSeconds must be an integer 0..{_MAX_AGE}")
            rules.append(CorsRule(origins, methods, headers, max_age, expose))
        return cls(tuple(rules))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorsPolicy:
        """Read a policy file (JSON); raises :class:`CorsPolicyError` naming the file."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise CorsPolicyError(f"cannot read CORS policy {os.fspath(path)!r}: {exc}") from None
        except ValueError as exc:
            raise CorsPolicyError(f"CORS policy {os.fspath(path)!r} is not JSON: {exc}") from None
        try:
            return cls.from_json(data)
        except CorsPolicyError as exc:
            raise CorsPolicyError(f"CORS policy {os.fspath(path)!r}: {exc.message}") from None

    def to_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.rules]

    def find(
        self, origin: str, method: str, request_headers: Sequence[str] = ()
    ) -> CorsRule | None:
        """The first rule allowing ``origin`` to send ``method`` with ``request_headers``."""
        for rule in self.rules:
            if (
                method in rule.allowed_methods
                and rule.origin_allowed(origin)
                and rule.headers_allowed(request_headers)
            ):
                return rule
        return None

    def preflight_headers(
        self, origin: str, method: str, request_headers: Sequence[str]
    ) -> dict[str, str] | None:
        """The answer to a preflight (``OPTIONS`` with ``Access-Control-Request-Method``), or
        ``None`` when no rule allows it."""
        rule = self.find(origin, method, request_headers)
        if rule is None:
            return None
        headers = self._common(rule, origin)
        headers["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
        if request_headers:
            # Only the headers that were requested are sent back (the CorsRule reference).
            headers["Access-Control-Allow-Headers"] = ", ".join(request_headers)
        if rule.max_age_seconds is not None:
            headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
        return headers

    def response_headers(self, origin: str, method: str) -> dict[str, str]:
        """The CORS headers of an actual request's answer (none when no rule allows it)."""
        rule = self.find(origin, method)
        if rule is None:
            return {}
        headers = self._common(rule, origin)
        if rule.expose_headers:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
        return headers

    @staticmethod
    def _common(rule: CorsRule, origin: str) -> dict[str, str]:
        if "*" in rule.allowed_origins:
            return {"Access-Control-Allow-Origin": "*"}
        # The answer depends on Origin: caches must keep one copy per origin.
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def parse_request_headers(value: str | None) -> list[str]:
    """The header names of an ``Access-Control-Request-Headers`` value, lower-cased."""
    if not value:
        return []
    return [h.strip().lower() for h in value.split(",") if h.strip()]
