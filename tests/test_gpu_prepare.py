"""benchmarks/gpu_prepare.py (what travels to a GPU machine without network) and the GPU check's
config overlay. The check itself runs with `make gpu-rehearsal`, not here: it needs Python 3.12
with the GPU image's versions, and the whole DAG."""

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("gpu_prepare", ROOT / "benchmarks/gpu_prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up while it is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in requires)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}-{version}.dist-info/METADATA", metadata)


def test_closure_stops_at_the_image_and_follows_markers_and_extras(prepare, tmp_path, monkeypatch):
    roots = [Requirement("alpha==1.0"), Requirement("torch==2.11.0")]
    monkeypatch.setattr(prepare, "runtime_roots", lambda: roots)
    monkeypatch.setattr(prepare, "pip", lambda *a: pytest.fail(f"no download expected: {a}"))
    fake_wheel(
        tmp_path, "alpha", "1.0", ["beta[fast]", "jinja2>=3.0", 'winonly; sys_platform == "win32"']
    )
    fake_wheel(tmp_path, "beta", "2.0", ['gamma; extra == "fast"', 'delta; extra == "other"'])
    fake_wheel(tmp_path, "gamma", "3.0", ['typing-extensions>=4.4; python_version < "3.13"'])
    image = {"torch": "2.11.0", "jinja2": None, "typing-extensions": None}
    lock = {"alpha": "1.0", "beta": "2.0", "gamma": "3.0", "delta": "4.0", "winonly": "1.0"}

    closure, wheels = prepare.resolve(image, lock, tmp_path, carry=set())

    assert closure.carried == {"alpha": "1.0", "beta": "2.0", "gamma": "3.0"}
    assert set(wheels) == {"alpha", "beta", "gamma"}
    # MEDUSA's own pin gives way to the image's version; a wheel's requirement stays whole.
    assert sorted(closure.on_image) == [
        "jinja2>=3.0  # alpha",
        "torch  # medusa-ser",
        'typing-extensions>=4.4; python_version < "3.13"  # gamma',
    ]


def test_carry_overrides_the_image_and_unpinned_packages_stop_it(prepare, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "runtime_roots", lambda: [Requirement("transformers==5.23.0")])
    monkeypatch.setattr(prepare, "pip", lambda *a: pytest.fail(f"no download expected: {a}"))
    fake_wheel(tmp_path, "transformers", "5.23.0", ["huggingface-hub>=1.0"])
    image = {"transformers": "5.17.0", "huggingface-hub": "1.33.0"}
    closure, _ = prepare.resolve(image, {"transformers": "5.23.0"}, tmp_path, {"transformers"})
    assert closure.carried == {"transformers": "5.23.0"}
    assert closure.on_image == ["huggingface-hub>=1.0  # transformers"]
    with pytest.raises(SystemExit, match="huggingface-hub .*no pin"):
        prepare.resolve({}, {"transformers": "5.23.0"}, tmp_path, set())


def test_lock_pins_for_the_gpu_python(prepare, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "scipy==1.17.1 ; python_full_version < '3.12' \\\n    --hash=sha256:00\n"
        "scipy==1.18.1 ; python_full_version >= '3.12' \\\n    --hash=sha256:11\n"
        "snakemake==9.27.1 \\\n    --hash=sha256:22\n    # via medusa-ser\n"
    )
    assert prepare.read_lock(lock) == {"scipy": "1.18.1", "snakemake": "9.27.1"}


def test_check_image_names_each_unmet_requirement(prepare, tmp_path, capsys):
    requirements = tmp_path / "image-requirements.txt"
    requirements.write_text("# header\npackaging>=1  # a\n")
    assert prepare.check_image(requirements) == 0
    requirements.write_text("packaging>=1  # a\npackaging<1  # b\nno-such-dist-xyz  # c\n")
    assert prepare.check_image(requirements) == 1
    err = capsys.readouterr().err
    assert "packaging<1: " in err and " installed" in err
    assert "no-such-dist-xyz: not installed" in err


def test_too_large_a_carry_stops_with_the_sizes(prepare, tmp_path, monkeypatch, capsys):
    carry = tmp_path / ".gpu-carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "big-1.0-py3-none-any.whl").write_bytes(b"\0" * (2 * 2**20))
    monkeypatch.setattr(prepare, "CARRY", carry)
    closure = prepare.Closure()
    assert prepare.report_sizes(closure)
    monkeypatch.setattr(prepare, "MAX_CARRY_MIB", 1.5)
    assert not prepare.report_sizes(closure)
    out = capsys.readouterr()
    assert ".gpu-carry/: 2.0 MiB" in out.out and "TOO LARGE" in out.err


def merged_gpu_config() -> dict:
    def merge(base: dict, over: dict) -> dict:
        for key, value in over.items():
            is_dict = isinstance(value, dict) and isinstance(base.get(key), dict)
            base[key] = merge(base[key], value) if is_dict else value
        return base

    config: dict = {}
    for name in ("config/config.yaml", "config/demo.yaml", "tests/config/ci.yaml"):
        merge(config, yaml.safe_load((ROOT / name).read_text()))
    return merge(config, yaml.safe_load((ROOT / "benchmarks/gpu_check.yaml").read_text()))


def test_gpu_overlay_uses_only_random_backbones_that_fit_their_layer_view(tmp_path):
    """Every backbone the GPU check's DAG uses is built by demo_backbone from a random
    configuration (the wheels of the real ones cannot travel), and its layer view exists in it."""
    from transformers import AutoConfig

    from medusa.demo.backbones import BACKBONE_NAMES, build_backbone
    from medusa.features.backbone import _check_layer
    from medusa.features.extract import FeatureSetConfig

    config = merged_gpu_config()
    from_wheels = {"whisper-tiny-en-asr", "whisper-tiny-en-15s-asr", "minilm-l6"}
    from_wheels |= {"whisper-tiny-en-encoder", "whisper-tiny-en-5s-encoder"}
    assert Path(config["asr"]["model"]).parent.name == "whisper-random-asr"
    enabled = [m for m in config["models"].values() if m.get("enabled", True)]
    used = sorted({name for model in enabled for name in model["features"]})
    assert used == ["roberta", "wavlm", "whisper"]  # tests/config/ci.yaml's two models
    for name in used:
        entry = config["feature_sets"][name]
        backbone = Path(entry["backbone"])
        assert backbone.parent == Path("resources/backbones"), name
        assert backbone.name in BACKBONE_NAMES and backbone.name not in from_wheels, name
        built = build_backbone(backbone.name, tmp_path / backbone.name)
        feature_set = FeatureSetConfig.from_dict(entry, name)
        _check_layer(feature_set, AutoConfig.from_pretrained(built))
