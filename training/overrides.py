"""YAML and `key.path=value` overrides, before the config model sees them.

A list of named sections (`data.sources`) is addressed by name: `data.sources.realwaste.dir=...`
sets one source's folder, a new name adds a source, `data.sources.<name>=null` removes one.
"""

from __future__ import annotations

from typing import Any

import yaml

NAMED_LISTS = frozenset({"sources"})
"""Keys whose value is a list of sections with a `name`."""


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names the key."""


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last one, silently dropping a whole section)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as a YAML scalar or list)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def _element(items: list[Any], part: str, *, create: bool) -> Any:
    """The element of a named list called `part` (or at position `part`); a new one if asked."""
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    if not create:
        return None
    items.append({"name": part})
    return items[-1]


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set `path` to `value` in the nested config `data`, creating sections on the way."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = _element(node, part, create=True)
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = [] if part in NAMED_LISTS else {}
            node = node[part]
        else:
            raise ConfigError(f"{'.'.join(path[:i])}: is a value, not a section")
    if isinstance(node, list):
        _set_element(node, path, value)
    elif isinstance(node, dict):
        node[path[-1]] = value
    else:
        raise ConfigError(f"{'.'.join(path[:-1])}: is a value, not a section")


def _set_element(items: list[Any], path: list[str], value: Any) -> None:
    """`sources.<name>=<mapping>` replaces (or adds) a source, `=null` removes it."""
    element = _element(items, path[-1], create=False)
    if value is None:
        if element is not None:
            items.remove(element)
        return
    if not isinstance(value, dict):
        key = ".".join(path)
        raise ConfigError(f"{key}: a source is a mapping ({{dir: ..., role: ...}}) or null")
    if element is None:
        items.append({"name": path[-1], **value})
    else:
        element.clear()
        element.update({"name": path[-1], **value})
