"""Loading plugins from entry points, one at a time, so that one broken plugin cannot break the rest.

Built-in plugins are entry points of the ``segzoo`` distribution itself and go through exactly this
path. Each plugin is imported, registered with pluggy (which validates hook names and arguments),
and its hooks are called with a registrar of its own; its names land in the registry only if all of
that succeeded. Failures are recorded with the plugin's and distribution's names.

Environment:
    SEGZOO_DISABLE_PLUGINS=a,b          skip these plugins (entry-point or distribution names)
    SEGZOO_DISABLE_PLUGIN_AUTOLOAD=1    load only segzoo's built-in plugins
    SEGZOO_STRICT_PLUGINS=1             re-raise the first plugin failure instead of recording it
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from ..core import hookspecs
from ..core.errors import PluginError
from .registry import Registrar, Registry

GROUP = "segzoo"
BUILTIN_DIST = "segzoo"
HOOKS = ("segzoo_register_backbones", "segzoo_register_heads", "segzoo_register_recipes", "segzoo_register_presets",
         "segzoo_register_weight_layouts", "segzoo_register_losses")


@dataclass
class PluginRecord:
    """What happened to one plugin: ``loaded``, ``disabled`` or ``failed`` (with the error)."""

    name: str
    dist: str
    version: str
    module: str
    status: str
    error: str = ""
    registered: int = 0

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    @property
    def source(self) -> str:
        """``plugin 'name' (distribution version)``: how every message names a plugin."""
        return f"plugin '{self.name}' ({self.dist} {self.version})".replace(" )", ")")

    def message(self) -> str:
        """One line saying what happened to this plugin, for people."""
        text = f"{self.source} {self.status}"
        if self.status == "failed":
            text += f": {self.error}"
        return text


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _env_list(name: str) -> set[str]:
    return {s.strip() for s in os.environ.get(name, "").split(",") if s.strip()}


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Segzoo_Plugin.X`` is ``segzoo-plugin-x``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def discover() -> list[tuple[metadata.EntryPoint, str, str]]:
    """Entry points of the group as (entry point, distribution, version), built-ins first.

    A distribution found twice on sys.path (an editable install plus a copy) counts once: the first
    one Python would import wins.
    """
    found: dict[tuple[str, str], tuple[metadata.EntryPoint, str, str]] = {}
    seen_dists: set[str] = set()
    for dist in metadata.distributions():
        dname = normalize(dist.metadata["Name"] or "?")
        if dname in seen_dists:
            continue
        seen_dists.add(dname)
        for ep in dist.entry_points:
            if ep.group == GROUP:
                found.setdefault((dname, ep.name), (ep, dname, dist.version or "?"))
    return sorted(found.values(), key=lambda t: (t[1] != BUILTIN_DIST, t[1], t[0].name))


def load_plugins(
    registry: Registry | None = None,
    disabled: set[str] | None = None,
    external: bool | None = None,
    strict: bool | None = None,
    extra: list[tuple[str, Any]] | None = None,
) -> Registry:
    """Fill a registry from every installed plugin; ``extra`` adds (name, module) pairs by hand (tests)."""
    registry = registry if registry is not None else Registry()
    disabled = {normalize(n) for n in (disabled or set()) | _env_list("SEGZOO_DISABLE_PLUGINS")}
    external = (not _env_flag("SEGZOO_DISABLE_PLUGIN_AUTOLOAD")) if external is None else external
    strict = _env_flag("SEGZOO_STRICT_PLUGINS") if strict is None else strict
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)

    candidates = [(ep.name, dname, version, ep) for ep, dname, version in discover()]
    candidates += [(name, "<in-process>", "", module) for name, module in (extra or [])]
    for name, dname, version, source in candidates:
        module_name = getattr(source, "value", getattr(source, "__name__", "?"))
        record = PluginRecord(name, dname, version, module_name, "loaded")
        registry.plugins.append(record)
        if normalize(name) in disabled or dname in disabled or (not external and dname != BUILTIN_DIST):
            record.status = "disabled"
            continue
        module = None
        try:
            module = source.load() if isinstance(source, metadata.EntryPoint) else source
            _register_one(pm, registry, module, record)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported, not fatal
            record.status, record.error = "failed", _describe(exc)
            if module is not None and pm.is_registered(module):
                pm.unregister(module)
            if strict:
                raise PluginError(f"plugin '{name}' from distribution '{dname}' failed: {record.error}") from exc
    return registry


def _register_one(pm: pluggy.PluginManager, registry: Registry, module: Any, record: PluginRecord) -> None:
    """Validate one plugin's hooks, call them with its own registrar, commit its names all at once."""
    pm.register(module, name=f"{record.dist}:{record.name}")
    callers = pm.get_hookcallers(module) or []
    unknown = [hc.name for hc in callers if not hc.has_spec()]
    if unknown:
        raise PluginError(f"implements unknown hook(s) {unknown}; the hooks are {list(HOOKS)}")
    registrar = Registrar(plugin=record.name, dist=f"{record.dist} {record.version}".strip())
    for hook in HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.plugin is module:  # pluggy's rule: an implementation takes the spec's arguments it names
                impl.function(**{arg: registrar for arg in impl.argnames})
    registry.commit(registrar)
    record.registered = len(registrar.staged)


def _describe(exc: BaseException) -> str:
    """One line for the table, with the plugin's own frame (not segzoo's or pluggy's) where the error was raised."""
    internal = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(pluggy.__file__), "<frozen ")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(internal)]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}{where}"
