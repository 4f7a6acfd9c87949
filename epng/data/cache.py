"""The on-disk cache of a split's tables: built once, then memory-mapped read-only by every process.

A cache lives in ``<cache dir>/<split>-<key>/``: one ``.npy`` file per array of
:class:`SplitTables` and ``manifest.json`` (the key, each file's size and SHA-256, and
the few small values). The key is the SHA-256 of the content and resolved path of the
split's two json files, the tokenizer's fingerprint, ``max_length``, the cache format and
the epng version, so a changed input gets a cache of its own. A cache is used only when
its manifest holds the key and every file has the recorded size and hash; a damaged one
is removed and rebuilt (with a warning). A cache is written in a temporary folder and
renamed into place, so nobody reads half of one.

Under ``torch.distributed`` every process must construct the dataset: the first process
of each machine (``LOCAL_RANK`` 0) loads or builds the cache while the others wait on a
barrier, then they map it. The cache dir is the ``cache_dir`` argument, else the
``EPNG_CACHE`` environment variable; without either nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from epng import __version__
from epng.data.layout import SplitLayout
from epng.data.narrative_table import NarrativeTable
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import LoadReport
from epng.data.split_tables import SplitTables, build_split_tables
from epng.data.tokenization import BatchAlignment, tokenizer_fingerprint
from epng.errors import ConfigError, DataError

CACHE_ENV = "EPNG_CACHE"
#: bump when the parse or alignment rules or the arrays change: older caches are then not used
FORMAT = 1
MANIFEST = "manifest.json"


class CacheDamaged(Exception):
    """A cache folder that must not be used; the message says why."""


def cache_dir_from(cache_dir: str | Path | None) -> Path | None:
    """``cache_dir``, else ``$EPNG_CACHE``, else None (no cache)."""
    if cache_dir is not None and str(cache_dir):
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV, "")
    return Path(env) if env else None


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def split_key(layout: SplitLayout, tokenizer, max_length: int) -> tuple[str, dict]:
    """(key, description) of the cache of ``layout``'s split as ``tokenizer`` and ``max_length`` encode it."""
    sources = {}
    for name, path in (("narratives", layout.narratives_json), ("panoptic", layout.panoptic_json)):
        try:
            sources[name] = {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
    described = {
        "format": FORMAT,
        "epng": __version__,
        "sources": sources,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": int(max_length),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest(), described


def _groups(tables: SplitTables) -> dict[str, dict[str, np.ndarray]]:
    return {
        "panoptic": tables.panoptic.arrays(),
        "narratives": tables.narratives.arrays(),
        "tokens": tables.alignment.arrays(),
    }


def save_tables(folder: Path, tables: SplitTables, key: str, described: dict) -> None:
    """Write ``tables`` as the cache ``folder`` (atomically); keeps a complete cache another process wrote first.
    :class:`ConfigError` when the cache dir cannot be written."""
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        _write(tmp, folder, tables, key, described)
    except OSError as err:
        raise ConfigError(f"{folder.parent}: cannot write the data cache there ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(tmp: Path, folder: Path, tables: SplitTables, key: str, described: dict) -> None:
    """The arrays and the manifest (last) into ``tmp``, then ``tmp`` renamed to ``folder``."""
    files = {}
    for group, arrays in _groups(tables).items():
        for name, array in arrays.items():
            path = tmp / f"{group}.{name}.npy"
            np.save(path, np.ascontiguousarray(array))
            files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    report = tables.load_report
    manifest = {
        **described,
        "key": key,
        "files": files,
        "categories": tables.panoptic.categories,
        "load_report": {
            "n_records": report.n_records,
            "skipped": dict(report.skipped),
            "examples": report.examples,
            "first_bad": report.first_bad,
        },
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / MANIFEST).is_file():
            raise


def load_tables(folder: Path, key: str, layout: SplitLayout, verify: bool = True) -> SplitTables | None:
    """The tables of the cache ``folder``, memory-mapped; None when there is none. Raises
    :class:`CacheDamaged` when it is incomplete, of another key, or a file's size or hash
    (with ``verify``) differs from the manifest."""
    if not folder.exists():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CacheDamaged(f"{folder / MANIFEST} is unreadable ({err})") from None
    if manifest.get("key") != key:
        raise CacheDamaged(f"{folder / MANIFEST} holds another key")
    groups: dict[str, dict[str, np.ndarray]] = {"panoptic": {}, "narratives": {}, "tokens": {}}
    for file_name, expected in manifest["files"].items():
        path = folder / file_name
        size = path.stat().st_size if path.is_file() else None
        if size != expected["bytes"]:
            raise CacheDamaged(f"{path} is {'missing' if size is None else f'{size} bytes'}, not {expected['bytes']}")
        if verify and file_sha256(path) != expected["sha256"]:
            raise CacheDamaged(f"{path} does not have the content it was written with")
        group, name = file_name.removesuffix(".npy").split(".", 1)
        try:
            groups[group][name] = np.asarray(np.load(path, mmap_mode="r"))  # a plain view: slicing stays cheap
        except (ValueError, OSError) as err:
            raise CacheDamaged(f"{path} is not a readable array ({err})") from None
    report = manifest["load_report"]
    try:
        return SplitTables(
            panoptic=PanopticIndex.from_arrays(layout.panoptic_json, groups["panoptic"], manifest["categories"]),
            narratives=NarrativeTable(groups["narratives"]),
            alignment=BatchAlignment(**groups["tokens"]),
            load_report=LoadReport(
                n_records=report["n_records"],
                skipped=Counter(report["skipped"]),
                examples=report["examples"],
                first_bad=tuple(report["first_bad"]) if report["first_bad"] else None,
            ),
            max_length=manifest["max_length"],
        )
    except (KeyError, TypeError) as err:
        raise CacheDamaged(f"{folder / MANIFEST} lacks {err}") from None


def _load_or_build(folder: Path, key: str, described: dict, layout: SplitLayout, tokenizer) -> tuple[SplitTables, str]:
    try:
        tables = load_tables(folder, key, layout)
        if tables is not None:
            return tables, "loaded"
        status = "built"
    except CacheDamaged as err:
        warnings.warn(f"data cache {folder}: {err}; rebuilding it", stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        status = f"rebuilt ({err})"
    save_tables(folder, build_split_tables(layout, tokenizer, described["max_length"]), key, described)
    tables = load_tables(folder, key, layout, verify=False)
    if tables is None:
        raise DataError(f"{folder}: the data cache vanished right after it was written")
    return tables, status


def _process_group():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def cached_split_tables(
    layout: SplitLayout, tokenizer, max_length: int, cache_dir: Path
) -> tuple[SplitTables, str, Path]:
    """The tables of ``layout``'s split from the cache under ``cache_dir``, built there when
    missing or damaged: ``(tables, status, folder)``, status ``"loaded"``, ``"built"`` or
    ``"rebuilt (why)"``. Under an initialised process group, see the module docstring."""
    key, described = split_key(layout, tokenizer, max_length)
    folder = Path(cache_dir) / f"{layout.split}-{key[:20]}"
    dist = _process_group()
    first = dist is None or int(os.environ.get("LOCAL_RANK", dist.get_rank())) == 0
    result, error = None, None
    if first:
        try:
            result = _load_or_build(folder, key, described, layout, tokenizer)
        except Exception as err:  # the others must not wait forever: they meet the barrier, then fail alike
            error = err
    if dist is not None:
        dist.barrier()
    if error is not None:
        raise error
    if result is None:  # mapped from the cache the first process wrote (built here when this machine sees none)
        result = _load_or_build(folder, key, described, layout, tokenizer)
    return (*result, folder)
