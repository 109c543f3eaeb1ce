"""Issue 15: pretrained encoders users can bring. The catalogue, the download into a cache
(resumed, sha256 checked, cancellable) from a loopback HTTP server serving files built here in
the published key layout, and the encoders of a network started from them."""

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from landfuse.core import downloads
from landfuse.core.errors import CancelledError
from landfuse.models import encoders
from landfuse.models.resnet import resnet50


class _Server:
    """Serves files from a folder with HTTP Range support, counting the requests."""

    def __init__(self, folder: Path) -> None:
        outer = self
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = folder / self.path.lstrip("/")
                outer.requests.append((self.path, self.headers.get("Range")))
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The SSL4EO-S12 Sentinel-2 row of the catalogue, pointed at a loopback server that serves
    a ResNet-50 state_dict of 13 input bands built here (timm/torchvision keys, with ``fc``)."""
    folder = tmp_path / "www"
    folder.mkdir()
    torch.manual_seed(3)
    trunk = resnet50(in_channels=13)
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = folder / "resnet50_s2.pth"
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    server = _Server(folder)
    row = dataclasses.replace(
        encoders.get_encoder_weights("ssl4eo_s12_s2_moco"),
        url=f"{server.url}/resnet50_s2.pth",
        sha256=sha,
    )
    monkeypatch.setitem(encoders._TABLE._rows, row.key, row)
    monkeypatch.setenv("LANDFUSE_CACHE", str(tmp_path / "cache"))
    yield row, state, server
    server.close()


def test_the_catalogue_says_where_what_and_under_which_licence() -> None:
    row = encoders.get_encoder_weights("ssl4eo_s12_s1_moco")
    assert row.encoder == "resnet50" and row.modality == "s1" and row.bands == ("VV", "VH")
    assert len(row.sha256) == 64 and row.url.startswith("https://") and "CC-BY" in row.licence
    assert encoders.get_encoder_weights("ssl4eo_s12_s2_moco").bands[8] == "B8A"
    assert "dB" in row.normalisation
    with pytest.raises(Exception, match="the catalogue has ssl4eo_s12_s2_moco"):
        encoders.get_encoder_weights("nope")
    assert encoders.parse_init_encoders("s2=ssl4eo_s12_s2_moco, s1=/x.pth") == {
        "s2": "ssl4eo_s12_s2_moco", "s1": "/x.pth"
    }  # fmt: skip
    assert encoders.parse_init_encoders("imagenet_resnet34") == {"*": "imagenet_resnet34"}


def test_a_download_is_checked_cached_and_resumed(served, tmp_path) -> None:
    row, _, server = served
    seen = []
    path = downloads.encoder_file(row.key, progress=lambda done, total: seen.append((done, total)))
    assert Path(path) == tmp_path / "cache" / row.filename
    assert downloads.file_sha256(Path(path)) == row.sha256 and seen[-1][0] == seen[-1][1]
    assert downloads.encoder_file(row.key) == path and len(server.requests) == 1  # cached
    # Resume: half a file left by an interrupted download is completed with a Range request.
    data = Path(path).read_bytes()
    Path(path).unlink()
    part = Path(path + ".part")
    part.write_bytes(data[: len(data) // 2])
    assert downloads.encoder_file(row.key) == path
    assert server.requests[-1][1] == f"bytes={len(data) // 2}-"
    assert Path(path).read_bytes() == data and not part.exists()


def test_a_wrong_file_is_refused_and_a_cancel_keeps_the_part(served, tmp_path, monkeypatch) -> None:
    row, _, _ = served
    bad = dataclasses.replace(row, sha256="0" * 64)
    monkeypatch.setitem(encoders._TABLE._rows, row.key, bad)
    with pytest.raises(downloads.DownloadError, match="sha256"):
        downloads.encoder_file(row.key)
    assert not (tmp_path / "cache" / row.filename).exists()
    assert not (tmp_path / "cache" / f"{row.filename}.part").exists()
    monkeypatch.setitem(encoders._TABLE._rows, row.key, row)
    with pytest.raises(CancelledError, match="resumes"):
        downloads.encoder_file(row.key, cancel=lambda: True)
    with pytest.raises(downloads.DownloadError, match="Cannot reach"):
        downloads.fetch("http://127.0.0.1:9/x.pth", "x.pth", "0" * 64)


def test_a_network_starts_from_catalogued_encoders(served) -> None:
    """AMM-FuseNet's Sentinel-2 encoder takes the SSL4EO-S12 weights key for key; the other
    encoders stay as they were; another encoder depth is refused with what to do."""
    from landfuse.core.training import build_model, init_encoders_from
    from landfuse.core.training.base import TrainingConfig, TrainingError, resolve_model_spec

    row, state, _ = served
    spec = resolve_model_spec(
        TrainingConfig(model="amm_fusenet_s2_s1_dem", output_dir="/tmp/x", encoder="resnet50")
    )
    model = build_model(spec)
    before_s1 = model.backbone2.conv1.weight.clone()
    info = init_encoders_from(model, spec, "s2=ssl4eo_s12_s2_moco")
    assert info["encoders"] == ["backbone1"]
    assert info["per_encoder"]["backbone1"]["catalogue"] == row.key
    assert torch.equal(model.backbone1.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])
    assert torch.equal(model.backbone1.conv1.weight, state["conv1.weight"])  # 13 bands as served
    assert torch.equal(model.backbone2.conv1.weight, before_s1)
    light = resolve_model_spec(
        TrainingConfig(model="amm_fusenet_s2_s1_dem", output_dir="/tmp/x", encoder="resnet18")
    )
    with pytest.raises(TrainingError, match="--encoder resnet50"):
        init_encoders_from(build_model(light), light, "s2=ssl4eo_s12_s2_moco")
    with pytest.raises(TrainingError, match="no encoder for rgb"):
        init_encoders_from(model, spec, "rgb=ssl4eo_s12_s2_moco")


def test_the_command_line_lists_the_catalogue(capsys) -> None:
    from landfuse.core.cli import main

    assert main(["encoders"]) == 0
    text = capsys.readouterr().out
    for key in encoders.ENCODER_WEIGHTS:
        assert f"{key}: " in text
    assert "df8b932e2a23a0773febedf3f650aa7d342b805f7876ca5ed6b139d7245d7c09" in text
