"""`epng app`: the default checkpoint, the missing-gradio message, and a real start on loopback."""

from __future__ import annotations

import socket
import sys

import pytest
from helpers_app import HOST, free_port, synthetic_scene, tiny_checkpoint

from epng.cli.main import main

# gradio's queue calls pandas options that pandas deprecates: not this project's warnings
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def test_without_a_checkpoint_it_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no demo_out/run/best here
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert "demo_out/run/best does not exist" in err and "make demo" in err and "--checkpoint" in err
    assert "Traceback" not in err


def test_without_gradio_it_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now fails
    assert main(["app", "--checkpoint", str(tmp_path)]) == 2
    assert 'pip install "epng[app]"' in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("app_cli") / "model")


def test_a_taken_port_gets_a_readable_error(checkpoint, capsys):
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["app", "--checkpoint", str(checkpoint), "--host", HOST, "--port", str(port), "--device", "cpu"]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on {HOST}:{port}" in err and "choose another --port" in err and "Traceback" not in err


def test_it_serves_the_checkpoint_on_the_given_loopback_port(checkpoint, tmp_path, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")
    pytest.importorskip("gradio")
    import epng.app.server as server

    started = []

    def launch_in_background(predictor, host, port, **kwargs):  # the real launch, not blocking the test
        app = server_launch(predictor, host, port, block=False, quiet=True, examples_dir=tmp_path)
        started.append((predictor, app))
        return app

    server_launch = server.launch
    monkeypatch.setattr(server, "launch", launch_in_background)
    port = free_port()
    argv = ["app", "--checkpoint", str(checkpoint), "--host", HOST, "--port", str(port), "--device", "cpu"]
    assert main([*argv, "--precision", "fp32", "--fast"]) == 0
    predictor, app = started[0]
    try:
        assert predictor.options.fast and predictor.options.precision == "fp32" and predictor.device.type == "cpu"
        assert app.server_name == HOST and app.server_port == port
        client = gradio_client.Client(f"http://{HOST}:{port}/", verbose=False, download_files=str(tmp_path / "dl"))
        picture = gradio_client.handle_file(str(synthetic_scene(tmp_path / "scene.png", 1, 64)[0]))
        result = client.predict(picture, "a [square] on the [road]", 0.5, api_name="/ground")
        assert result[4] == "" and result[3].startswith("Latency: ") and "(2 phrases)" in result[3]
    finally:
        app.close(verbose=False)
