"""The instruction-set ceiling for XLA's CPU code, set before XLA's backend starts (see :mod:`modeseek._xla`).

Kept free of jax so that ``import modeseek`` can set it at once, however light
the rest of the package's import is.
"""

from __future__ import annotations

import os
import platform
import re
import sys

__all__ = ["cpu_isa", "DEFAULT_X86_ISA"]

#: The instruction-set ceiling on x86-64 unless MODESEEK_CPU_ISA says otherwise.
DEFAULT_X86_ISA = "AVX2"
_ISAS = ("SSE4_2", "AVX", "AVX2", "AVX512", "native")
_ISA_FLAG = "--xla_cpu_max_isa"


def _wanted_isa() -> str | None:
    isa = os.environ.get("MODESEEK_CPU_ISA", "").strip()
    if isa:
        if isa not in _ISAS:
            raise ValueError(f"MODESEEK_CPU_ISA={isa!r} is invalid; expected one of {', '.join(_ISAS)}")
        return None if isa == "native" else isa
    return DEFAULT_X86_ISA if platform.machine().lower() in ("x86_64", "amd64") else None


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):  # a future jax: assume the worst
        return True


def _flag_value(flags: str) -> str | None:
    found = re.findall(_ISA_FLAG + r"=(\S+)", flags)
    return found[-1] if found else None


def _pin_isa() -> str:
    """Set the ISA ceiling in XLA_FLAGS before XLA's CPU backend starts; return the ceiling in force."""
    flags = os.environ.get("XLA_FLAGS", "")
    given = _flag_value(flags)
    if given is not None:
        return given
    if _backend_started():
        return "native (XLA's backend started before modeseek was imported)"
    isa = _wanted_isa()
    if isa is None:
        return "native"
    os.environ["XLA_FLAGS"] = f"{flags} {_ISA_FLAG}={isa}".strip()
    return isa


_ISA_IN_FORCE = _pin_isa()


def cpu_isa() -> str:
    """The ``xla_cpu_max_isa`` ceiling XLA's CPU code is generated for in this process ("native": none)."""
    return _ISA_IN_FORCE
