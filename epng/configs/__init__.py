"""Training configs shipped inside the package, found by name.

``get_config_file("demo_cpu")`` is the path of the bundled ``demo_cpu.yaml`` wherever the
package is installed (a wheel, a normal or an editable install): the files are package
data, read through :mod:`importlib.resources`, never looked up relative to a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from epng.errors import ConfigError

SUFFIX = ".yaml"


def list_configs() -> list[str]:
    """The names of the bundled configs (file names without ``.yaml``), sorted."""
    return sorted(f.name.removesuffix(SUFFIX) for f in files(__name__).iterdir() if f.name.endswith(SUFFIX))


def get_config_file(name: str) -> Path:
    """The file of the bundled config ``name`` (``"demo_cpu"`` or ``"demo_cpu.yaml"``).

    The package is installed as plain files (not imported from a zip), so the resource is a path on disk.
    """
    stem = name.removesuffix(SUFFIX)
    if stem not in list_configs():
        raise ConfigError(f"{name!r} is not a bundled config; bundled configs: {', '.join(list_configs())}")
    return Path(files(__name__).joinpath(stem + SUFFIX))
