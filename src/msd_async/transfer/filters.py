"""Include and exclude rules: which paths of a tree a transfer looks at.

A rule is ``("include", pattern)`` or ``("exclude", pattern)``; the command line writes them
``--include PATTERN`` and ``--exclude PATTERN``. A pattern is matched against the path
relative to the transfer's root (``/`` separators) as one line of a ``.gitignore`` file
(matched by the ``pathspec`` library):

* without a ``/`` (other than a trailing one) it matches a name at any depth: ``*.tmp``
  matches ``a.tmp`` and ``x/y/a.tmp``;
* with a ``/`` it is anchored at the root: ``vod/*.ts`` matches ``vod/a.ts``, not
  ``vod/x/a.ts`` nor ``old/vod/a.ts``;
* ``*`` and ``?`` never match ``/``; ``**`` matches any number of folders;
* a trailing ``/`` matches a folder and everything under it: ``logs/``.

Rules are tried in the order given and the first that matches decides. A path that no rule
matches is included, unless there is an include rule: then only what some include rule
matches is. The same rules select the source's paths, the destination's paths and so what
``delete`` may delete: an excluded path is never transferred nor deleted on either side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import pathspec

from ..errors import InvalidParameterError

__all__ = ["FilterRule", "PathFilter"]

#: ``("include" | "exclude", pattern)``.
FilterRule = tuple[Literal["include", "exclude"], str]


class PathFilter:
    """Compiled rules; ``selects(path)`` says whether a relative path takes part."""

    __slots__ = ("_default", "_rules")

    def __init__(self, rules: Sequence[FilterRule] = ()) -> None:
        compiled: list[tuple[bool, pathspec.GitIgnoreSpec]] = []
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
            # A str was taken as rules one character long ("a filter rule is ..., not 'e'").
            raise InvalidParameterError(
                f"filters must be a sequence of ('include' or 'exclude', pattern) rules, not "
                f"{rules!r}",
                rule="transfer.filter",
            )
        for rule in rules:
            kind: object
            pattern: object
            try:
                kind, pattern = rule
            except (TypeError, ValueError):
                kind, pattern = "", ""
            if kind not in ("include", "exclude") or not isinstance(pattern, str):
                raise InvalidParameterError(
                    f"a filter rule is ('include' or 'exclude', pattern), not {rule!r}",
                    rule="transfer.filter",
                )
            text = pattern.strip()
            spec = pathspec.GitIgnoreSpec.from_lines([pattern])
            if not text or text.startswith(("!", "#")) or len(spec.patterns) != 1:
                raise InvalidParameterError(
                    f"filter pattern {pattern!r} matches nothing: give a name or a glob such "
                    "as '*.tmp' or 'logs/' (no leading '!' or '#')",
                    rule="transfer.filter",
                )
            compiled.append((kind == "include", spec))
        self._rules = tuple(compiled)
        self._default = not any(include for include, _ in compiled)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def excludes_folder(self, relative_path: str) -> bool:
        """Whether an exclude rule decides for ``relative_path`` as a file or as a folder:
        for a path whose content is unknown (it may hold either)."""
        for path in (relative_path, relative_path + "/"):
            for include, spec in self._rules:
                if spec.match_file(path):
                    if not include:
                        return True
                    break
        return False

    def selects(self, relative_path: str) -> bool:
        for include, spec in self._rules:
            if spec.match_file(relative_path):
                return include
        return self._default
