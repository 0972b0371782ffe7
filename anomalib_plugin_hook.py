"""Register anomalib plugins, declared as entry points, the moment anomalib imports its model/data modules.

anomalib 2.7 has no plugin mechanism.  Its name lookups only see classes that are already imported:

- ``anomalib train --model NAME`` (and ``export``, ``test``, ...): jsonargparse resolves a short name
  among imported subclasses of ``AnomalibModule`` (``--data NAME``: of ``AnomalibDataModule``);
- ``anomalib.models.get_model("name")``: direct subclasses of ``AnomalibModule``;
- ``get_model({"class_path": "Name"})`` and the benchmark pipeline: attributes of ``anomalib.models``,
  and a dotted ``class_path`` only from the modules in ``anomalib.models.ALLOWED_MODULES``;
- ``anomalib.data.get_datamodule``: attributes of ``anomalib.data``.

So a plugin class must be imported and set as an attribute of ``anomalib.models`` / ``anomalib.data``
before any of these run.  A ``.pth`` file in site-packages calls :func:`install` at interpreter start;
it puts a finder at the front of ``sys.meta_path`` that answers nothing itself: for anomalib's modules
(itself, its public sub-packages, and the modules it serves or fixes) it takes the spec from the finders
behind it and wraps the loader, so that it knows when the outermost anomalib import has finished.
Once ``anomalib.models`` or ``anomalib.data`` has run and no anomalib module is
executing any more, every entry point of the group of the same name (from every installed
distribution, so it serves any plugin) is loaded and registered:

- ``setattr(anomalib.models, ep.name, cls)`` (resp. ``anomalib.data``), through ``sys.modules``
  because ``anomalib.models`` is not yet an attribute of ``anomalib`` while anomalib imports itself;
- for models, the entry point's module and the class's module are added to ``ALLOWED_MODULES`` so that
  ``class_path: anomalib_unias.UniAS`` also works in ``get_model`` and benchmark configs.

The same finder applies fixes: an entry point of the group ``anomalib_plugin_hook.fixes`` named after an
anomalib module (``"anomalib.cli.cli" = "pkg.module:function"``) is called with that module once it has
been imported, under the same ordering rules (see ``anomalib_unias.anomalib_fixes``).

Importing the class is what makes jsonargparse's short names and ``get_model("name")`` work.  When both
modules are served the finder removes itself.  Until then it costs one string test per import, and
this module imports nothing but ``os`` and ``sys`` (already loaded at start-up); ``importlib.metadata``
and ``warnings`` are imported only when anomalib is (no ``from __future__`` import either: it costs
a quarter of a millisecond).

Ordering:

- ``anomalib.models`` imports ``anomalib.data`` half-way through its own code, ``anomalib.metrics``,
  ``anomalib.post_processing`` and ``anomalib.visualization`` import ``anomalib.data`` before they are
  complete themselves, and plugins import all of them: entry points are loaded only when no tracked
  anomalib module is still executing (whatever a user imports first), and a module that finishes while entry
  points are being loaded is queued behind them.
- A plugin that is itself being imported (``from anomalib_unias import UniAS`` imports
  ``anomalib.models`` from inside ``anomalib_unias/__init__.py``) cannot be loaded yet; its entry
  point is resolved on first attribute access instead (a module ``__getattr__``, PEP 562), or when the
  next anomalib module finishes importing (e.g. ``anomalib.cli`` in a script that imported the plugin
  first: the CLI's subclass lookup never asks for the attribute); the finder stays until then.

A broken entry point only produces a ``RuntimeWarning`` naming it.  ``ANOMALIB_PLUGINS_DISABLE=1`` in
the environment at interpreter start turns the hook off; full class paths
(``--model anomalib_unias.UniAS``) keep working without it, since jsonargparse imports dotted paths.
"""

import os
import sys

DISABLE_ENV = "ANOMALIB_PLUGINS_DISABLE"

# Module name -> (entry-point group, name of the base class in that module that plugins must subclass).
_WATCHED = {
    "anomalib.models": ("anomalib.models", "AnomalibModule"),
    "anomalib.data": ("anomalib.data", "AnomalibDataModule"),
}

# Entry points of this group are functions ``fix(module)`` that adjust the anomalib module named by
# the entry point right after it has been imported (anomalib_unias.anomalib_fixes documents ours).
FIX_GROUP = "anomalib_plugin_hook.fixes"

_done: set[str] = set()  # watched modules already imported and served
_fixes: dict | None = None  # module name -> entry points of FIX_GROUP, read at the first anomalib import
_executing = 0  # tracked anomalib modules whose code is running now
_pending: list[str] = []  # watched modules that finished and wait for their entry points
_loading = False


def install() -> None:
    """Put the finder at the front of ``sys.meta_path`` unless disabled or already there."""
    disabled = os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if not disabled and not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _is_tracked(name: str) -> bool:
    """anomalib, its public sub-packages (``anomalib.<name>``), and the modules served or fixed.

    One of these is the outermost anomalib module of any import a user starts: a deeper module runs only
    after its parent packages have run.  Deeper modules are not wrapped, so that a warning anomalib
    emits while importing them is still attributed to anomalib's own importing line.
    """
    if name == "anomalib" or (name.startswith("anomalib.") and name.count(".") == 1):
        return True
    return name in _WATCHED or (name.startswith("anomalib.") and name in _fix_entry_points())


class _Finder:
    """Meta-path finder that wraps the loaders of the tracked anomalib modules (it answers nothing itself)."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN202 (importlib protocol)
        if not _is_tracked(fullname) or fullname in _done:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _NotifyingLoader(spec.loader, fullname)
                return spec
        return None


class _NotifyingLoader:
    """Run the real loader, then restore it on the module and load the module's plugins."""

    def __init__(self, loader, name: str) -> None:  # noqa: ANN001
        self._loader = loader
        self._name = name

    def __getattr__(self, attr: str):  # noqa: ANN204 (get_resource_reader, is_package, get_code, ...)
        return getattr(self._loader, attr)

    def create_module(self, spec):  # noqa: ANN001, ANN202
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        global _executing  # noqa: PLW0603
        _executing += 1
        try:
            self._loader.exec_module(module)
        finally:
            _executing -= 1
        module.__loader__ = module.__spec__.loader = self._loader
        if self._name in _WATCHED or self._name in _fix_entry_points():
            _done.add(self._name)
            _pending.append(self._name)
        _drain()
        served = _done.issuperset(_WATCHED) and _done.issuperset(_fix_entry_points())
        if served and not _pending and not _executing and not _deferred():
            sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]


def _fix_entry_points() -> dict:
    """Entry points of :data:`FIX_GROUP` by module name (read once, when anomalib is first imported)."""
    global _fixes  # noqa: PLW0603
    if _fixes is None:
        from importlib.metadata import entry_points  # noqa: PLC0415 (kept off the start-up path)

        _fixes = {}
        for entry_point in entry_points(group=FIX_GROUP):
            _fixes.setdefault(entry_point.name, []).append(entry_point)
    return _fixes


def _drain() -> None:
    """Load the entry points of finished modules, unless an anomalib module or a load is under way."""
    global _loading  # noqa: PLW0603
    if _executing or _loading:
        return
    _loading = True
    try:
        while _pending:
            _load_group(_pending.pop(0))
        _load_deferred()
    finally:
        _loading = False


def _deferred() -> list:
    """The lazy attributes of the watched modules that still hold deferred entry points."""
    lazy = [sys.modules[name].__dict__.get("__getattr__") for name in _done if name in _WATCHED]
    return [attributes for attributes in lazy if isinstance(attributes, _LazyAttributes) and attributes.entry_points]


def _load_deferred() -> None:
    """Load the deferred entry points whose plugin has finished importing since.

    Name lookups that scan subclasses (anomalib's CLI: ``--data UnifiedFolder``) never ask for the
    attribute, so a plugin imported by a script before anomalib's CLI is loaded here, at the CLI's import.
    """
    for attributes in _deferred():
        for name, entry_point in list(attributes.entry_points.items()):
            if not _is_initializing(entry_point.module):
                del attributes.entry_points[name]
                _load(entry_point, attributes.module)


def _load_group(module_name: str) -> None:
    from importlib.metadata import entry_points  # noqa: PLC0415 (kept off the start-up path)

    target = sys.modules[module_name]
    for entry_point in _fix_entry_points().get(module_name, []):
        _apply_fix(entry_point, target)
    if module_name not in _WATCHED:
        return
    group, _ = _WATCHED[module_name]
    for entry_point in entry_points(group=group):
        if _is_initializing(entry_point.module):
            _LazyAttributes.on(target).entry_points[entry_point.name] = entry_point
            _allow(target, entry_point.module)
        else:
            _load(entry_point, target)


def _is_initializing(module_name: str) -> bool:
    """Whether ``module_name`` or a parent package is part-way through its own import.

    ``ModuleSpec._initializing`` is what CPython itself checks to report a "partially initialized module".
    """
    parts = module_name.split(".")
    for end in range(1, len(parts) + 1):
        spec = getattr(sys.modules.get(".".join(parts[:end])), "__spec__", None)
        if getattr(spec, "_initializing", False):
            return True
    return False


def _load(entry_point, target):  # noqa: ANN001, ANN202
    """Load and register one entry point on ``target``; warn and return ``None`` if that fails."""
    group, base_name = _WATCHED[target.__name__]
    try:
        base = getattr(target, base_name)
        obj = entry_point.load()
        if not (isinstance(obj, type) and issubclass(obj, base)):
            msg = f"{obj!r} is not a subclass of {base.__module__}.{base_name}"
            raise TypeError(msg)
        existing = target.__dict__.get(entry_point.name)
        if existing is not None and existing is not obj:
            msg = f"{target.__name__}.{entry_point.name} already exists ({existing!r})"
            raise ValueError(msg)
    except Exception as error:  # noqa: BLE001 (any plugin failure must leave anomalib usable)
        _warn(entry_point, group, error)
        return None
    setattr(target, entry_point.name, obj)
    _allow(target, entry_point.module, obj.__module__)
    return obj


def _apply_fix(entry_point, target) -> None:  # noqa: ANN001
    """Call the fix ``entry_point`` with the module ``target``; warn if that fails."""
    try:
        entry_point.load()(target)
    except Exception as error:  # noqa: BLE001 (a failing fix must leave anomalib usable)
        _warn(entry_point, FIX_GROUP, error)


def _warn(entry_point, group: str, error: Exception) -> None:  # noqa: ANN001
    import warnings  # noqa: PLC0415

    dist = getattr(entry_point.dist, "name", "?")
    warnings.warn(
        f"anomalib plugin entry point '{entry_point.name} = {entry_point.value}' (group '{group}', "
        f"distribution '{dist}') was skipped: {type(error).__name__}: {error}",
        RuntimeWarning,
        stacklevel=1,
    )


def _allow(target, *modules: str) -> None:  # noqa: ANN001
    """Add plugin modules to ``get_model``'s ``class_path`` allowlist (only ``anomalib.models`` has one)."""
    allowed = target.__dict__.get("ALLOWED_MODULES")
    if isinstance(allowed, set):
        allowed.update(modules)


class _LazyAttributes:
    """Module ``__getattr__`` (PEP 562) that loads entry points deferred while their plugin was importing."""

    def __init__(self, module, fallback) -> None:  # noqa: ANN001
        self.module = module
        self.fallback = fallback
        self.entry_points: dict = {}

    @classmethod
    def on(cls, module) -> "_LazyAttributes":  # noqa: ANN001
        current = module.__dict__.get("__getattr__")
        if not isinstance(current, cls):
            current = cls(module, current)
            module.__getattr__ = current
        return current

    def __call__(self, name: str):  # noqa: ANN204
        entry_point = self.entry_points.pop(name, None)
        obj = None if entry_point is None else _load(entry_point, self.module)
        if obj is not None:
            return obj
        if self.fallback is not None:
            return self.fallback(name)
        msg = f"module {self.module.__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
