"""``NCSNPipeline.from_pretrained(folder, export=True)``, the export cache, Hub ids and ``save_pretrained``.

A tiny diffusers-ncsn pipeline folder (a random 1x8x8 ``UNet2DModelForNCSN`` saved by diffusers-ncsn itself) is
exported once into a module-wide cache; the tests compare its samples with ``save_pretrained``'s folder, the
``ncsn-export`` and ``ncsn-sample`` CLIs, and check what the cache, the lock and the verification do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the runtime needs onnxruntime")
torch = pytest.importorskip("torch", reason="exporting needs torch (the export extra)")
pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
pytest.importorskip("ncsn.unet", reason="diffusers-ncsn is not installed (pip install --no-deps diffusers-ncsn)")

from ncsn_runtime import NCSNPipeline, pretrained  # noqa: E402
from ncsn_runtime.errors import ExportDirectoryError  # noqa: E402
from ncsn_runtime.verify import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEDULER = {"num_train_timesteps": 4, "num_annealed_steps": 3, "sigma_min": 0.05, "sigma_max": 1.0, "sampling_eps": 1e-4}
# Fewer artifacts and a small full check keep each export near 20 s here; the CLI test passes the same flags.
OPTIONS = {"artifacts": "sampler", "full_batch_size": 2}
CLI_FLAGS = ["--artifacts", "sampler", "--full-validation-batch-size", "2"]
SEED, BATCH = 3, 2


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime"), os.environ.get("PYTHONPATH", "")])}


def _run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                          env=env or _env())


def _samples(pipe: NCSNPipeline) -> np.ndarray:
    return pipe(batch_size=BATCH, seed=SEED, output_type="raw").images


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A diffusers-ncsn pipeline folder (model_index.json, unet/, scheduler/) written by ncsn.NCSNPipeline."""
    from ncsn import NCSNPipeline as SeedPipeline
    from ncsn.scheduler import AnnealedLangevinDynamicsScheduler
    from ncsn.unet import UNet2DModelForNCSN

    torch.manual_seed(0)
    unet = UNet2DModelForNCSN(
        sigma_min=SCHEDULER["sigma_min"], sigma_max=SCHEDULER["sigma_max"], num_train_timesteps=SCHEDULER["num_train_timesteps"],
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()
    with torch.no_grad():  # a freshly initialised UNet's output conv is zero: make the score non-trivial
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    directory = tmp_path_factory.mktemp("seed") / "tiny-ncsn"
    SeedPipeline(unet=unet, scheduler=AnnealedLangevinDynamicsScheduler(**SCHEDULER)).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def cached(folder, tmp_path_factory):
    """The first export=True load into a fresh cache: (cache root, pipeline, seconds, exports made)."""
    cache = tmp_path_factory.mktemp("cache")
    before = pretrained.STATS.exports
    start = time.perf_counter()
    pipe = NCSNPipeline.from_pretrained(str(folder), export=True, cache_dir=cache, export_options=OPTIONS)
    seconds = time.perf_counter() - start
    return cache, pipe, seconds, pretrained.STATS.exports - before


@pytest.mark.slow
def test_first_load_exports_into_the_keyed_cache(cached, folder):
    cache, pipe, seconds, exports = cached
    assert exports == 1
    entries = [entry for entry in (cache / "exports").iterdir() if not entry.name.startswith(".")]
    assert [entry.name for entry in entries] == [pipe.export_dir.name]
    digests = pretrained.pipeline_digests(folder)
    assert "unet/diffusion_pytorch_model.safetensors" in digests
    assert pipe.export_dir.name == pretrained.cache_key(digests, OPTIONS)
    assert pipe.export_dir.name != pretrained.cache_key(digests, {**OPTIONS, "opset": 19})  # options are in the key
    assert not [entry for entry in (cache / "exports").iterdir() if ".partial-" in entry.name]  # no staging left
    assert pipe.manifest["model"]["name"] == "tiny-ncsn"
    assert all(row["passed"] for row in pipe.manifest["validation"])  # export_model's validation ran and is recorded
    print(f"\nfirst export=True load: {seconds:.2f} s")


@pytest.mark.slow
def test_second_load_reuses_the_cache(cached, folder, caplog):
    cache, pipe, first_seconds, _ = cached
    exports, hits = pretrained.STATS.exports, pretrained.STATS.cache_hits
    mtime = (pipe.export_dir / "manifest.json").stat().st_mtime_ns
    start = time.perf_counter()
    with caplog.at_level("INFO", logger="ncsn_runtime"):
        again = NCSNPipeline.from_pretrained(str(folder), export=True, cache_dir=cache, export_options=OPTIONS)
    seconds = time.perf_counter() - start
    assert pretrained.STATS.exports == exports  # no second export
    assert pretrained.STATS.cache_hits == hits + 1
    assert "using the cached export" in caplog.text
    assert again.export_dir == pipe.export_dir
    assert (pipe.export_dir / "manifest.json").stat().st_mtime_ns == mtime
    assert seconds < first_seconds / 10, (seconds, first_seconds)
    np.testing.assert_array_equal(_samples(again), _samples(pipe))
    print(f"\ncached export=True load: {seconds:.3f} s (first: {first_seconds:.2f} s, ratio {first_seconds / seconds:.0f})")


@pytest.mark.slow
def test_same_samples_from_export_true_save_pretrained_and_the_clis(cached, folder, tmp_path):
    from ncsn_runtime.cli import main as sample_main

    from ncsn_export.cli import main as export_main

    _, pipe, _, _ = cached
    expected = _samples(pipe)
    assert np.isfinite(expected).all() and expected.std() > 1e-3

    saved = pipe.save_pretrained(tmp_path / "saved")
    assert saved == tmp_path / "saved"
    listed = set(json.loads((saved / "manifest.json").read_text())["files"])
    on_disk = {path.relative_to(saved).as_posix() for path in saved.rglob("*") if path.is_file()}
    assert on_disk == listed | {"manifest.json", "README.md"}
    assert not [entry for entry in tmp_path.iterdir() if entry.name.startswith(".")]  # staging renamed away
    np.testing.assert_array_equal(_samples(NCSNPipeline.from_pretrained(saved)), expected)

    assert sample_main([str(saved), "-n", str(BATCH), "--seed", str(SEED), "--output", str(tmp_path / "s.npy"),
                        "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), expected)

    assert export_main(["--model", str(folder), "--output", str(tmp_path / "cli"), *CLI_FLAGS, "-q"]) == 0
    np.testing.assert_array_equal(_samples(NCSNPipeline.from_pretrained(tmp_path / "cli")), expected)


@pytest.mark.slow
def test_model_card_has_hub_metadata_and_the_schedule(cached, tmp_path):
    _, pipe, _, _ = cached
    card = (pipe.save_pretrained(tmp_path / "card") / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: ncsn-export" in front
    assert "- ncsn" in front and "- onnx" in front
    assert "pipeline_tag: unconditional-image-generation" in front
    assert "| noise levels (`num_train_timesteps`) | 4, geometric from sigma_max = 1 to sigma_min = 0.05 |" in body
    assert "| Langevin steps per level (`num_annealed_steps`) | 3 |" in body
    for host in ('NCSNPipeline.from_pretrained("card")', "ncsn-sample card", "node runtime/js/cli.mjs card",
                 "examples/web/serve.mjs card", "examples/c/build/ncsn_sample card"):
        assert host in body, host


@pytest.mark.slow
def test_save_pretrained_replaces_only_an_earlier_export(cached, tmp_path):
    _, pipe, _, _ = cached
    target = pipe.save_pretrained(tmp_path / "out")
    pipe.save_pretrained(target)  # an earlier save (manifest, listed files, README.md) is replaced
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        pipe.save_pretrained(target)
    assert (target / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="not an ncsn-export directory"):
        pipe.save_pretrained(foreign)
    with pytest.raises(ValueError, match="own export directory"):
        pipe.save_pretrained(pipe.export_dir)
    with pytest.raises(TypeError, match="save_directory"):
        pipe.save_pretrained(None)


@pytest.mark.slow
def test_save_pretrained_refuses_a_tampered_source_and_leaves_nothing(cached, tmp_path):
    _, pipe, _, _ = cached
    source = tmp_path / "source"
    shutil.copytree(pipe.export_dir, source)
    copy = NCSNPipeline.from_pretrained(source)
    graph = source / "sampler.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match=r"sampler\.onnx sha256"):
        copy.save_pretrained(tmp_path / "dest")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["source"]  # no dest, no staging directory


@pytest.mark.slow
def test_a_corrupt_cache_entry_is_exported_again(cached, folder):
    cache, pipe, _, _ = cached
    graph = pipe.export_dir / "sampler.onnx"
    original = graph.read_bytes()
    expected = _samples(pipe)
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match=r"sha256"):
        NCSNPipeline.from_pretrained(pipe.export_dir)  # the cache entry is an export directory, checked like any
    exports = pretrained.STATS.exports
    again = NCSNPipeline.from_pretrained(str(folder), export=True, cache_dir=cache, export_options=OPTIONS)
    assert pretrained.STATS.exports == exports + 1
    assert graph.read_bytes() != bytes(data)
    np.testing.assert_array_equal(_samples(again), expected)


@pytest.mark.slow
def test_two_processes_exporting_the_same_key_export_once(folder, tmp_path):
    """Both start before either has finished (an export takes ~20 s); the lock makes the second reuse the first's."""
    cache = tmp_path / "cache"
    code = f"""
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from ncsn_runtime import NCSNPipeline, pretrained
        pipe = NCSNPipeline.from_pretrained({str(folder)!r}, export=True, cache_dir={str(cache)!r},
                                            export_options={OPTIONS!r})
        images = pipe(batch_size={BATCH}, seed={SEED}, output_type="raw").images
        print(json.dumps({{"exports": pretrained.STATS.exports, "hits": pretrained.STATS.cache_hits,
                          "dir": str(pipe.export_dir), "sum": float(images.astype("float64").sum())}}))
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.append((json.loads(out.strip().splitlines()[-1]), err))
    assert sum(result["exports"] for result, _ in results) == 1, results
    assert sorted(result["hits"] for result, _ in results) == [0, 1]
    assert len({result["dir"] for result, _ in results}) == 1
    assert len({result["sum"] for result, _ in results}) == 1
    assert [entry.name for entry in (cache / "exports").iterdir() if not entry.name.endswith(".lock")] == \
        [Path(results[0][0]["dir"]).name]


def _hub_cache(hub: Path, repo_id: str, source: Path) -> str:
    """``source``'s files as huggingface_hub stores a snapshot: blobs/ + snapshots/REV/ symlinks + refs/main."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        blob = repo / "blobs" / sha256_file(path)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = repo / "snapshots" / revision / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return revision


@pytest.mark.slow
def test_hub_ids_resolve_offline_from_the_hub_cache_without_torch(cached, folder, tmp_path):
    pytest.importorskip("huggingface_hub")
    cache, pipe, _, _ = cached
    hub = tmp_path / "hub"
    _hub_cache(hub, "someone/tiny-ncsn", folder)
    _hub_cache(hub, "someone/tiny-ncsn-onnx", pipe.save_pretrained(tmp_path / "saved"))
    expected = _samples(pipe)
    np.save(tmp_path / "expected.npy", expected)
    code = f"""
        import sys
        import numpy as np
        sys.modules["torch"] = None  # the runtime must not need it: the diffusers folder is already in the cache
        from ncsn_runtime import NCSNPipeline, pretrained
        expected = np.load({str(tmp_path / 'expected.npy')!r})
        pipe = NCSNPipeline.from_pretrained("someone/tiny-ncsn", export=True, cache_dir={str(cache)!r},
                                            export_options={OPTIONS!r})
        assert pretrained.STATS.exports == 0 and pretrained.STATS.cache_hits == 1, pretrained.STATS
        assert pipe.export_dir == __import__("pathlib").Path({str(pipe.export_dir)!r}), pipe.export_dir
        np.testing.assert_array_equal(pipe(batch_size={BATCH}, seed={SEED}, output_type="raw").images, expected)
        onnx_pipe = NCSNPipeline.from_pretrained("someone/tiny-ncsn-onnx", cache_dir={str(tmp_path / 'c2')!r})
        assert onnx_pipe.export_dir.parent.name == "hub" and not onnx_pipe.export_dir.is_symlink()
        np.testing.assert_array_equal(onnx_pipe(batch_size={BATCH}, seed={SEED}, output_type="raw").images, expected)
        try:
            NCSNPipeline.from_pretrained("someone/not-cached")
        except Exception as error:
            print("MISSING:", type(error).__name__, error)
        try:
            NCSNPipeline.from_pretrained("someone/tiny-ncsn")
        except Exception as error:
            print("NOEXPORT:", type(error).__name__, error)
        assert not [m for m in sys.modules if m.startswith("ncsn_export") or (m.startswith("torch") and sys.modules[m])]
        print("ok")
    """
    env = {**_env(), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    result = _run_python(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "ok"
    missing = next(line for line in lines if line.startswith("MISSING:"))
    assert "ExportDirectoryError" in missing and "someone/not-cached" in missing and "Hugging Face Hub" in missing
    noexport = next(line for line in lines if line.startswith("NOEXPORT:"))
    assert "export=True" in noexport and "ncsn-export --model" in noexport


def test_without_torch_export_true_says_what_to_install(folder, tmp_path):
    code = f"""
        import sys
        sys.modules["torch"] = None
        from ncsn_runtime import NCSNPipeline
        try:
            NCSNPipeline.from_pretrained({str(folder)!r}, export=True, cache_dir={str(tmp_path)!r})
        except ImportError as error:
            print(error)
    """
    result = _run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install 'ncsn-export[export,diffusers]'" in result.stdout
    assert "ncsn-export --model" in result.stdout
    assert not [entry for entry in (tmp_path / "exports").iterdir() if not entry.name.endswith(".lock")]


def test_install_hint_names_extras_that_pyproject_defines():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert pretrained.EXPORT_INSTALL_HINT == "pip install 'ncsn-export[export,diffusers]'"
    assert {"export", "diffusers"} <= set(extras)


def test_a_diffusers_folder_without_export_names_export_true_and_the_cli(folder):
    with pytest.raises(ExportDirectoryError) as info:
        NCSNPipeline.from_pretrained(folder)
    message = str(info.value)
    assert "export=True" in message and f"ncsn-export --model {folder} --output DIR" in message


def test_bad_inputs_are_refused_clearly(folder, tmp_path):
    with pytest.raises(TypeError, match=r"`export_options`: unknown 'opsett'; accepted: opset"):
        NCSNPipeline.from_pretrained(folder, export=True, cache_dir=tmp_path, export_options={"opsett": 18})
    with pytest.raises(TypeError, match=r"export_options\['artifacts'\]"):
        NCSNPipeline.from_pretrained(folder, export=True, cache_dir=tmp_path, export_options={"artifacts": {1}})
    with pytest.raises(ValueError, match="only apply with export=True"):
        NCSNPipeline.from_pretrained(folder, export_options={"opset": 18})
    with pytest.raises(TypeError, match="`export` must be True or False"):
        NCSNPipeline.from_pretrained(folder, export="yes")
    with pytest.raises(ValueError, match="`revision` applies to a Hugging Face Hub id"):
        NCSNPipeline.from_pretrained(folder, revision="main")
    with pytest.raises(ValueError, match=r"`cache_dir`.*not a directory"):
        (tmp_path / "file").write_text("x")
        NCSNPipeline.from_pretrained(folder, export=True, cache_dir=tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportDirectoryError, match="neither a diffusers-ncsn pipeline folder"):
        NCSNPipeline.from_pretrained(empty, export=True, cache_dir=tmp_path)
    with pytest.raises(ExportDirectoryError, match="not found"):
        NCSNPipeline.from_pretrained(tmp_path / "missing/x/y")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ExportDirectoryError, match=r"no unet/diffusion_pytorch_model\.safetensors"):
        NCSNPipeline.from_pretrained(broken, export=True, cache_dir=tmp_path)


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert pretrained.default_cache_dir() == tmp_path / "ncsn-export"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: relative values are ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.default_cache_dir() == tmp_path / "home" / ".cache" / "ncsn-export"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert pretrained.default_cache_dir() == tmp_path / "home" / ".cache" / "ncsn-export"


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    key = "0" * 64
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{key}.partial-{dead.stdout.strip()}-abcd"
    live = tmp_path / f".{key}.partial-{os.getppid()}-abcd"
    other = tmp_path / f".{'1' * 64}.partial-{dead.stdout.strip()}-abcd"
    for path in (stale, live, other):
        path.mkdir()
    pretrained._remove_stale(tmp_path, key)
    assert not stale.exists() and live.exists() and other.exists()


def test_bad_export_option_values_get_export_models_own_errors_and_leave_only_locks(folder, tmp_path):
    from ncsn_export.exporters.errors import ExportError, ExportInputError

    with pytest.raises(ExportError, match=r"`opset` must be in \[18, "):
        NCSNPipeline.from_pretrained(folder, export=True, cache_dir=tmp_path, export_options={"opset": 5})
    with pytest.raises(ExportInputError, match="artifacts"):
        NCSNPipeline.from_pretrained(folder, export=True, cache_dir=tmp_path, export_options={"artifacts": "nope"})
    left = sorted(entry.name for entry in (tmp_path / "exports").iterdir())
    assert left and all(name.startswith(".") and name.endswith(".lock") for name in left), left  # locks only
