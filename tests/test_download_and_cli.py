"""`nnlab data get` (against a local file:// archive, sha256-checked), `models`, data lookup."""

import hashlib

import pytest

from conftest import tar_folder, write_cifar_python
from nnlab.data import download
from nnlab.data.images import load_images


@pytest.fixture
def local_archive(tmp_path, monkeypatch):
    folder = write_cifar_python(tmp_path / "src")
    archive = tar_folder(folder, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(
        url=archive.as_uri(), sha256=digest, filename="cifar-10-python.tar.gz"))
    return archive, digest


def test_data_get_downloads_verifies_and_is_found(local_archive, run_cli, tmp_path, monkeypatch):
    r = run_cli("data", "get", "cifar10")
    assert r.code == 0, r.err
    target = download.downloaded_path("cifar10")
    assert target.is_file() and not target.with_suffix(".gz.part").exists()
    src = load_images(str(target))
    assert src.format == "cifar-python" and len(src.train) == 40
    # without --data, training finds the downloaded archive
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--epochs", "1", "--out", out, "--quiet",
                "--set", "data.val_size=10")
    assert r.code == 0, r.err
    assert "cifar-10-python.tar.gz" in (out / "config.json").read_text()


def test_data_get_rejects_a_wrong_checksum(local_archive, run_cli, monkeypatch):
    archive, _ = local_archive
    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(
        url=archive.as_uri(), sha256="0" * 64, filename="cifar-10-python.tar.gz"))
    r = run_cli("data", "get", "cifar10")
    assert r.code == 2 and "does not match" in r.err
    assert not download.downloaded_path("cifar10").exists()
    assert not list(download.downloaded_path("cifar10").parent.glob("*.part"))


def test_data_get_unreachable_is_one_line(run_cli, monkeypatch, tmp_path):
    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(
        url=(tmp_path / "missing.tar.gz").as_uri(), sha256="0" * 64, filename="x.tar.gz"))
    r = run_cli("data", "get", "cifar10")
    assert r.code == 2 and "cannot download" in r.err and "\n" not in r.err.strip()
    assert run_cli("data", "get", "imagenet").code == 2


def test_nnlab_data_env_is_searched(tmp_path, monkeypatch, run_cli):
    write_cifar_python(tmp_path / "root" / "cifar10")
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path / "root"))
    out = tmp_path / "run"
    r = run_cli("train", "image", "--model", "cnn", "--epochs", "1", "--out", out, "--quiet",
                "--set", "data.val_size=10")
    assert r.code == 0, r.err


def test_models_lists_and_describes(run_cli):
    r = run_cli("models")
    assert r.code == 0 and "resnet18" in r.out and "classic-cnn-gap" in r.out
    r = run_cli("models", "cnn", "--input-shape", "1,28,28", "--classes", "5")
    assert r.code == 0, r.err
    assert "32x26x26" in r.out  # first 3x3 valid convolution on 28x28
    n = 1 * 9 * 32 + 32
    assert f"{n:,}" in r.out
    assert run_cli("models", "cnn", "--input-shape", "abc").code == 2


def test_demo_downloads_cifar_when_online_and_none_is_found(local_archive, capsys):
    from rich.console import Console

    from nnlab import demo

    console = Console(stderr=True, width=200)
    path = demo._download("image", console)
    assert path == str(download.downloaded_path("cifar10")) and load_images(path).format == "cifar-python"
    assert "No image data found: downloading cifar10" in capsys.readouterr().err
    assert demo._download("image", console) is None  # found now, where training looks: no second fetch
    assert demo._download("keyphrase", console) is None  # no official archive


def test_demo_falls_back_to_generated_images_offline(run_cli, monkeypatch, tmp_path, capsys):
    from rich.console import Console

    from nnlab import demo
    from nnlab.data import GENERATED

    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(
        url=(tmp_path / "[unreachable].tar.gz").as_uri(), sha256="0" * 64, filename="x.tar.gz"))
    assert demo._download("image", Console(stderr=True, width=300)) == GENERATED
    said = capsys.readouterr().err
    assert "Could not download cifar10 (cannot download" in said and "[unreachable]" in said  # escaped
    assert "uses generated data" in said
    assert not list(download.downloaded_path("cifar10").parent.glob("*.gz*"))  # no partial archive left


def test_demo_spreads_over_a_worker_per_core_only_where_ray_is_installed(monkeypatch):
    import builtins

    from nnlab.demo import demo_resources

    assert not demo_resources(1).ray  # --workers 1: here, one run after another
    assert demo_resources(3).workers == 3 and demo_resources(3).threads == 1
    monkeypatch.setattr("nnlab.demo.usable_cores", lambda: 4)
    pytest.importorskip("ray")
    auto = demo_resources(0)
    assert auto.ray and auto.workers == 4 and auto.threads == 1
    monkeypatch.setattr("nnlab.demo.usable_cores", lambda: 1)
    assert not demo_resources(0).ray  # one core: nothing to spread over
    monkeypatch.setattr("nnlab.demo.usable_cores", lambda: 2)
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert not demo_resources(0).ray  # without the extra: here
