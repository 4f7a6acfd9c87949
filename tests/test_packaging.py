"""The training configs are package data: found by name, shipped in the wheel, and found
from an installed wheel outside the source tree (where ``epng demo`` runs after ``pip install``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from epng.configs import get_config_file, list_configs
from epng.engine.config import load_config
from epng.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SOURCE_CONFIGS = REPO / "epng" / "configs"
YAML_NAMES = sorted(p.name for p in SOURCE_CONFIGS.glob("*.yaml"))


def test_bundled_configs_are_found_by_name():
    assert YAML_NAMES == ["demo_cpu.yaml", "png_r101_bert.yaml"]
    assert list_configs() == ["demo_cpu", "png_r101_bert"]
    for name in YAML_NAMES:
        stem = name.removesuffix(".yaml")
        assert get_config_file(stem) == get_config_file(name)
        assert get_config_file(stem).read_bytes() == (SOURCE_CONFIGS / name).read_bytes()
    with pytest.raises(
        ConfigError, match=r"'demo_gpu' is not a bundled config; bundled configs: demo_cpu, png_r101_bert"
    ):
        get_config_file("demo_gpu")


def test_config_argument_an_existing_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = OmegaConf.load(SOURCE_CONFIGS / "demo_cpu.yaml")
    assert load_config("demo_cpu").optim.lr == load_config("demo_cpu.yaml").optim.lr == bundled.optim.lr == 1e-3
    assert load_config("demo_cpu").data.image_size == bundled.data.image_size == 128
    Path("demo_cpu").write_text("optim: {lr: 0.5}\n")  # a file named like the bundled config
    assert load_config("demo_cpu").optim.lr == 0.5
    assert load_config("demo_cpu.yaml").optim.lr == 1e-3  # no such file here: the bundled one
    for missing in ("demo_gpu", "configs/demo_cpu.yaml"):
        with pytest.raises(ConfigError, match=rf"{missing}: no such config file.*bundled: demo_cpu, png_r101_bert"):
            load_config(missing)


def _pip(*args: str) -> None:
    # offline: no index, no build isolation (the installed setuptools builds), no version check
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    run = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, f"pip {' '.join(args)}:\n{run.stdout}\n{run.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the package, built from a copy of what the build reads (an in-tree build
    would leave build/ and *.egg-info in the checkout, and a stale build/ can leak into a wheel)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "epng", src / "epng", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src))
    (built,) = dist.glob("epng-*.whl")
    return built


def test_the_wheel_holds_the_configs(wheel):
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(Path(n).name for n in zf.namelist() if n.startswith("epng/configs/") and n.endswith(".yaml"))
        assert shipped == YAML_NAMES
        for name in YAML_NAMES:
            assert zf.read(f"epng/configs/{name}") == (SOURCE_CONFIGS / name).read_bytes()


def test_an_installed_wheel_finds_the_demo_config_outside_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the install folder
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    lookup = (
        "import json, epng\n"
        "from epng.cli.demo import DEFAULT_CONFIG\n"
        "from epng.engine.config import config_file, load_config\n"
        "cfg = load_config(DEFAULT_CONFIG)\n"
        "print(json.dumps({'package': epng.__file__, 'config': str(config_file(DEFAULT_CONFIG)),"
        " 'lr': cfg.optim.lr, 'image_size': cfg.data.image_size}))\n"
    )
    run = subprocess.run([sys.executable, "-c", lookup], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["package"]).resolve().is_relative_to(site.resolve())  # the installed copy, not the checkout
    config = Path(found["config"]).resolve()
    assert config.is_relative_to(site.resolve()) and config.name == "demo_cpu.yaml"
    assert config.read_bytes() == (SOURCE_CONFIGS / "demo_cpu.yaml").read_bytes()
    source = OmegaConf.load(SOURCE_CONFIGS / "demo_cpu.yaml")
    assert (found["lr"], found["image_size"]) == (source.optim.lr, source.data.image_size)

    cli = [sys.executable, "-m", "epng.cli.main", "train", "--help"]
    run = subprocess.run(cli, cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "bundled config (demo_cpu, png_r101_bert)" in " ".join(run.stdout.split())
