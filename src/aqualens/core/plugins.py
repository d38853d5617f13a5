"""One registry for every plugin point, fed by entry points.

Built-ins register through ``pyproject.toml`` entry points exactly like third-party plugins, so
``aqualens.formats``, ``aqualens.models``, ``aqualens.storage``, ``aqualens.services`` and ``aqualens.jobs``
(job kinds) all list
what is installed the same way. Entry points load lazily, on first use of a group; tests and
notebooks can also :meth:`Registry.register` an object directly.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any

from aqualens.core.errors import NotFound

GROUPS = ("aqualens.storage", "aqualens.formats", "aqualens.models", "aqualens.services",
          "aqualens.jobs")


class Registry:
    """Plugins by group and name."""

    def __init__(self) -> None:
        self._loaded: dict[str, dict[str, Any]] = {}
        self._eps: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _entry_points(self, group: str) -> dict[str, Any]:
        with self._lock:
            if group not in self._eps:
                self._eps[group] = {ep.name: ep for ep in entry_points(group=group)}
                self._loaded.setdefault(group, {})
            return self._eps[group]

    def register(self, group: str, name: str, obj: Any) -> None:
        """Register ``obj`` under ``group``/``name``, replacing an entry point of that name."""
        self._entry_points(group)
        with self._lock:
            self._loaded[group][name] = obj

    def unregister(self, group: str, name: str) -> None:
        """Remove a directly registered plugin (tests use this to clean up)."""
        with self._lock:
            self._loaded.get(group, {}).pop(name, None)

    def names(self, group: str) -> list[str]:
        """Every plugin name known in ``group``, sorted."""
        eps = self._entry_points(group)
        return sorted(set(eps) | set(self._loaded.get(group, {})))

    def get(self, group: str, name: str) -> Any:
        """The plugin object for ``name``; loads its entry point on first use."""
        eps = self._entry_points(group)
        loaded = self._loaded[group]
        if name in loaded:
            return loaded[name]
        if name not in eps:
            raise NotFound(f"no plugin {name!r} in {group}", field=group,
                           valid=", ".join(self.names(group)) or "none installed")
        obj = eps[name].load()
        with self._lock:
            loaded[name] = obj
        return obj

    def all(self, group: str) -> dict[str, Any]:
        """Every plugin in ``group``, loaded."""
        return {name: self.get(group, name) for name in self.names(group)}


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (created on first call, never at import)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
