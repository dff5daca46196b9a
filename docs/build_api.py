"""Build the HTML API reference from the docstrings with pdoc (``make docs``); exit 1 on any pdoc warning.

Usage: python docs/build_api.py [OUT_DIR]   (default docs/_build; open OUT_DIR/index.html)

Documents ``modeseek`` and every public module below it (names without a
leading underscore). pdoc follows a package's ``__all__``, which for
``modeseek`` lists only the core submodules, so the others (the run loop, the
sweep, the figure layer, the command line) are named here explicitly.

One pdoc warning is not about the docstrings and is left out: pdoc resolves
the string annotations of a ``typing.NamedTuple``'s generated ``__init__`` in
the namespace ``collections.namedtuple`` builds it in, where names such as
``Callable`` do not exist, although the module imports them. Every other
warning (a module that fails to import, a broken link, a bad docstring
section) fails the build.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path

_NAMEDTUPLE_INIT = re.compile(r"Error parsing type annotation .* for ([\w.]+)\.__init__\. Import of \w+ failed")


def public_modules(package: str = "modeseek") -> list[str]:
    """``package`` and every module below it whose dotted name has no part starting with ``_``, sorted."""
    pkg = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def _is_namedtuple(qualname: str) -> bool:
    module, _, cls = qualname.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _resolve_lazy_exports(names: list[str]) -> None:
    """Put every name of a module's ``__all__`` that its module ``__getattr__`` supplies lazily into the module's namespace.

    pdoc looks exported names up in the module's ``__dict__`` only, so a lazy
    export (e.g. ``modeseek.phase.PIECE``, imported on first use to keep the
    figure code out of ``import modeseek.phase``) would be missing from the page.
    """
    for name in names:
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", ()):
            if attr not in mod.__dict__:
                setattr(mod, attr, getattr(mod, attr))


def build(out_dir: str | Path) -> list[str]:
    """Write the reference into ``out_dir``; return the pdoc warnings that count (empty when clean)."""
    import pdoc
    import pdoc.extract
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The smallest set of specs that reaches every public module: pdoc adds a spec's submodules itself
        # and warns about a module named twice.
        modules = public_modules()
        _resolve_lazy_exports(modules)
        specs: list[str] = []
        covered: set[str] = set()
        for name in modules:
            if name not in covered:
                specs.append(name)
                covered.update(pdoc.extract.walk_specs([name]))
        # jax.Array is a C++ class whose qualified name is jaxlib._jax.Array: pdoc would print the
        # annotation as jax.jaxlib._jax.Array. Render it as users write it for the build's duration.
        import jax

        qualname = jax.Array.__qualname__
        jax.Array.__qualname__ = "Array"
        try:
            pdoc.pdoc(*specs, output_directory=Path(out_dir))
        finally:
            jax.Array.__qualname__ = qualname
    found = []
    for w in caught:
        if not issubclass(w.category, (UserWarning, RuntimeWarning)) or "pdoc" not in w.filename:
            continue  # deprecations and the like from imported libraries, not from pdoc
        message = str(w.message)
        m = _NAMEDTUPLE_INIT.search(message)
        if m and _is_namedtuple(m.group(1)):
            continue
        found.append(message)
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/_build")
    found = build(out)
    for message in found:
        print(f"pdoc warning: {message}", file=sys.stderr)
    if found:
        print(f"{len(found)} pdoc warning(s); the reference in {out} is incomplete", file=sys.stderr)
        return 1
    print(f"API reference: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
