"""Reading the text files users hand to skipsearch (specs, coefficient files), with limits.

A hostile or broken file gets one ``UserError`` naming the file and what is wrong, never a traceback or a
hang: files are capped in size, must be UTF-8, and nest at most ``MAX_DEPTH`` levels. YAML is parsed with
PyYAML's safe loader, without aliases (``*name`` references, the root of "billion laughs" bombs) and
without repeated keys (which YAML would silently resolve to the last value).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from skipsearch.errors import UserError

MAX_BYTES = 1 << 20  # 1 MiB: a spec or coefficient file is a few KB
MAX_DEPTH = 32


class _LimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases, repeated keys and deep nesting while it composes the document."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it with its position
                break
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_text(path: str | Path, what: str) -> str:
    """The file's text: it must exist, be at most MAX_BYTES and be UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a {what} is a small text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") from None


def depth(value: object, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of lists and dicts, counted up to ``limit + 1`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse(text: str, fmt: str, source: str) -> object:
    """YAML, JSON or TOML text -> Python data, or a UserError saying where the text is wrong."""
    try:
        if fmt == "yaml":
            loader = _LimitedLoader(text)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
        elif fmt == "json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except yaml.YAMLError as err:
        raise UserError(f"{source}: not valid YAML: {err}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{source}: not valid JSON: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source}: not valid TOML: {err}") from None
    except RecursionError:
        raise UserError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        raise UserError(f"{source}: unreadable value: {str(err).splitlines()[0]}") from None
    if depth(data) > MAX_DEPTH:
        raise UserError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    return data
