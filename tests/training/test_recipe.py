"""Training recipes (`steer train RECIPE.yaml`) and Hugging Face data sources, offline: the
`datasets` library is replaced by an in-memory stand-in, the model by the tiny Llama."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import types
from pathlib import Path

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call

from steer.corpus.documents import HFSource
from steer.corpus.windows import build_windows
from steer.errors import SteerError
from steer.sae import load_sae
from steer.training.config import TrainConfig
from steer.training.recipe import load_train_recipe

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {name: field.default for name, field in TrainConfig.model_fields.items()}
SHIPPED_RECIPE = ROOT / "recipes" / "train-smollm2-res12.yaml"
_VOCAB = "the cat sat on a mat and the dog ran in the park while a little girl played"
WORDS = _VOCAB.split()


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "." for _ in range(n)]


@pytest.fixture
def plain_text(tmp_path):
    path = tmp_path / "data" / "plain.txt"
    path.parent.mkdir()
    path.write_text("\n\n".join(_sentences(80)))
    return path


def _write(tmp_path: Path, data, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _small(plain_text: Path, **over) -> dict:
    """A tiny-model recipe that trains in about a second."""
    base = {
        "model": "tiny-llama",
        "layer": 2,
        "d_sae": 64,
        "k": 4,
        "data": [{"path": str(plain_text)}],
        "tokens": {"collect": 4096, "train": 8192},
        "batch_size": 256,
        "out": "sae-out",
    }
    base.update(over)
    return base


# ----------------------------------------------------------------------------- the shipped recipe


def _experiment_module():
    spec = importlib.util.spec_from_file_location(
        "train_first_sae", ROOT / "experiments/train_first_sae.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_recipe_gives_the_config_of_the_training_experiment(tmp_path, monkeypatch):
    bench = _experiment_module()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, _ in bench.MIX:  # stand-ins: the recipe only checks that the sources exist
        (corpus / name).write_text("x")
    monkeypatch.setenv("STEER_CORPUS", str(corpus))
    monkeypatch.delenv("STEER_WORK", raising=False)

    from_recipe = load_train_recipe(SHIPPED_RECIPE)
    args = bench.parse_args(
        [
            *("--d-sae", "8192", "--k", "64", "--train-tokens", "4405248"),
            *("--collect-tokens", "819200", "--batch-size", "2048", "--lr", "2e-3"),
            *("--storage-dtype", "float16", "--out", "/tmp/steer-first-sae/sae"),
        ]
    )
    from_bench = bench.build_config(args, corpus=corpus)
    for name in TrainConfig.model_fields:
        if name != "metadata":  # says which of the two trained it
            assert getattr(from_recipe, name) == getattr(from_bench, name), name
    assert (from_recipe.d_sae, from_recipe.k, from_recipe.total_steps) == (8192, 64, 2151)
    # The recipe writes beside its cache, never over the SAE shipped in the package.
    assert from_recipe.out == "/tmp/steer-first-sae/sae"


def test_shipped_recipe_reads_the_shipped_sample_without_the_corpus(monkeypatch):
    # A clone has no ../shared/corpus: without $STEER_CORPUS the recipe reads the sample shipped
    # in the package, in the corpus's layout, so every one of its files is there.
    monkeypatch.delenv("STEER_CORPUS", raising=False)
    cfg = load_train_recipe(SHIPPED_RECIPE, check_files=True)
    sample = ROOT / "steer" / "data" / "corpus" / "train-sample"
    assert cfg.data[0].path == str(sample / "wikipedia_wiki_demo.txt")
    assert all(entry.path.startswith(str(sample)) for entry in cfg.data)
    assert cfg.weights() == (0.25, 0.20, 0.10, 0.10, 0.10, 0.10, 0.15)


# ----------------------------------------------------------------------------- schema


def test_a_minimal_recipe_keeps_the_train_config_defaults(tmp_path, plain_text):
    cfg = load_train_recipe(_write(tmp_path, {"data": [{"path": "data/plain.txt"}], "out": "o"}))
    assert cfg == TrainConfig(out=str(tmp_path / "o"), data=[{"path": str(plain_text)}])
    assert cfg.sources() == (str(plain_text),) and cfg.weights() is None


def test_relative_paths_are_taken_from_the_recipe_folder(tmp_path, plain_text, monkeypatch):
    monkeypatch.chdir(ROOT)  # not the recipe's folder
    monkeypatch.setenv("MY_CORPUS", str(plain_text.parent))
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    data = {
        "data": [
            {"path": "data/plain.txt", "weight": 2},
            {"path": "${MY_CORPUS}/plain.txt"},
            {"path": "${NOT_SET_HERE:-data}/plain.txt"},
        ],
        "out": "out/sae",
        "cache_dir": "${NOT_SET_HERE:-work}/acts",
    }
    cfg = load_train_recipe(_write(tmp_path, data))
    assert cfg.sources() == (str(plain_text),) * 3
    assert cfg.weights() == (2.0, 1.0, 1.0)
    assert cfg.out == str(tmp_path / "out" / "sae")
    assert cfg.cache_dir == str(tmp_path / "work" / "acts")


def test_flags_override_recipe_keys_and_merge_tokens(tmp_path, plain_text):
    path = _write(tmp_path, _small(plain_text, seed=3, lr="2e-3"))
    cfg = load_train_recipe(path, {"k": 8, "tokens": {"train": 4096}})
    assert (cfg.k, cfg.seed, cfg.lr) == (8, 3, 0.002)  # YAML's 2e-3 is text; it is a float here
    assert (cfg.tokens.collect, cfg.tokens.train) == (4096, 4096)


def test_an_architecture_flag_drops_the_other_architectures_keys(tmp_path, plain_text):
    path = _write(tmp_path, _small(plain_text, k_aux=8))
    cfg = load_train_recipe(path, {"architecture": "standard", "l1_coefficient": 2.0})
    assert (cfg.architecture, cfg.l1_coefficient) == ("standard", 2.0)
    assert (cfg.k, cfg.k_aux) == (DEFAULTS["k"], None)  # the recipe's k: 4, k_aux: 8 are gone
    back = _write(tmp_path, _small(plain_text, architecture="standard", k=None, resample_every=9))
    cfg = load_train_recipe(back, {"architecture": "topk"})
    assert (cfg.architecture, cfg.resample_every) == ("topk", DEFAULTS["resample_every"])


def test_standard_recipe_maps_its_settings(tmp_path, plain_text):
    data = _small(plain_text, architecture="standard", l1_coefficient=1.5, resample_every=50)
    del data["k"]
    cfg = load_train_recipe(_write(tmp_path, data))
    assert (cfg.architecture, cfg.l1_coefficient, cfg.resample_every) == ("standard", 1.5, 50)
    assert cfg.resample_until == DEFAULTS["resample_until"]  # unset keys keep the defaults


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"batchsize": 5}, "batchsize: unknown key"),
        ({"d_sae": "big"}, "d_sae: Input should be a valid integer"),
        ({"layer": -1}, "layer: Input should be greater than or equal to 0"),
        ({"d_sae": 8, "k": 16}, "k: k=16 is larger than d_sae=8"),
        ({"data": []}, "data: must not be empty"),
        ({"data": [{"path": "a.txt", "hf": "o/n"}]}, "data[0]: give exactly one of path or hf"),
        ({"data": [{"path": "a.txt", "split": "test"}]}, "data[0]: split is only for hf sources"),
        ({"data": [{"path": "a.txt", "weight": 0}]}, "data[0].weight: Input should be greater"),
        ({"l1_coefficient": 2.0}, "l1_coefficient: only applies to architecture standard"),
        ({"architecture": "standard"}, "k: only applies to architecture topk or batchtopk"),
        ({"architecture": "gated"}, "architecture: Input should be 'topk', 'batchtopk' or 'stan"),
        (
            {"architecture": "batchtopk", "l1_coefficient": 2.0},
            "l1_coefficient: only applies to architecture standard",
        ),
        ({"architecture": "batchtopk", "d_sae": 8, "k": 16}, "k: k=16 is larger than d_sae=8"),
        ({"tokens": {"train": 0}}, "tokens.train: Input should be greater than or equal to 1"),
        ({"out": None}, "out: Input should be a valid string"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, plain_text, change, fragment):
    path = _write(tmp_path, _small(plain_text, **change))
    with pytest.raises(SteerError) as info:
        load_train_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message


def test_an_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("STEER_NO_SUCH_VAR", raising=False)
    path = _write(tmp_path, {"data": [{"path": "${STEER_NO_SUCH_VAR}/a.txt"}], "out": "o"})
    with pytest.raises(SteerError, match=r"data\[0\]\.path: environment variable STEER_NO_SUCH"):
        load_train_recipe(path)


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("change", "flags", "fragments"),
    [
        ({"batchsize": 5}, [], ["train.yaml", "batchsize: unknown key"]),
        ({"d_sae": "big"}, [], ["train.yaml", "d_sae: Input should be a valid integer"]),
        ({"data": [{"path": "nope.txt"}]}, [], ["data[0].path: data file not found", "nope.txt"]),
        ({"layer": 9}, [], ["train.yaml", "layer 9 out of range (model has 4)"]),
        ({}, ["--k", "128"], ["train.yaml", "k: k=128 is larger than d_sae=64"]),
        ({"architecture": "standard", "k": None, "l1_coefficient": -1.0}, [], ["l1_coefficient"]),
        (
            {},
            ["--architecture", "standard", "--k", "4"],
            ["k: only applies to architecture topk or batchtopk"],
        ),
    ],
)
def test_cli_bad_recipe_input_exits_2_with_one_line(
    tiny_everywhere, tmp_path, plain_text, capsys, change, flags, fragments
):
    data = {key: value for key, value in _small(plain_text, **change).items() if value is not None}
    code, _, err = call(["train", str(_write(tmp_path, data)), *flags], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "sae-out").exists()


def test_cli_missing_recipe_and_missing_flags(tmp_path, capsys):
    code, _, err = call(["train", str(tmp_path / "none.yaml")], capsys)
    assert_one_line_error(code, err, "none.yaml", "training recipe file not found")
    code, _, err = call(["train", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "give a training RECIPE, or --data and --out")


def test_cli_trains_from_a_recipe_with_flag_overrides(
    tiny_everywhere, tmp_path, plain_text, capsys
):
    data = _small(plain_text, architecture="standard", l1_coefficient=1.0)
    del data["k"]
    recipe = _write(tmp_path, data)
    code, out, err = call(["train", str(recipe), "--d-sae", "32", "--seed", "2"], capsys)
    assert code == 0, err
    assert f"saved {tmp_path / 'sae-out'}" in out
    sae = load_sae(tmp_path / "sae-out")
    assert (sae.cfg.architecture, sae.cfg.d_sae, sae.cfg.layer) == ("standard", 32, 2)
    meta = json.loads((tmp_path / "sae-out" / "cfg.json").read_text())["metadata"]
    assert meta["seed"] == 2 and meta["train_config"]["l1_coefficient"] == 1.0


# ----------------------------------------------------------------------------- Hugging Face data


class _FakeDatasets(types.ModuleType):
    """Stands in for the `datasets` library: load_dataset streams in-memory records and
    counts how many were read."""

    def __init__(self, records: list[dict]):
        super().__init__("datasets")
        self.records, self.calls, self.read = records, [], 0

    def load_dataset(self, name, config=None, *, split, streaming):
        self.calls.append((name, config, split, streaming))

        def stream():
            for rec in self.records:
                self.read += 1
                yield rec

        return stream()


@pytest.fixture
def fake_datasets(monkeypatch):
    fake = _FakeDatasets([{"body": s, "id": i} for i, s in enumerate(_sentences(5000, seed=1))])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    return fake


def test_hf_source_streams_only_its_share(tiny_model, fake_datasets):
    source = HFSource("owner/stories", split="validation", text_field="body", config="en")
    windows = build_windows(tiny_model.tokenizer, [source], ctx_len=32, n_tokens=32 * 20)
    assert windows.shape == (20, 32)
    assert fake_datasets.calls == [("owner/stories", "en", "validation", True)]
    assert fake_datasets.read <= 1024  # stopped once 20 windows were full, not 5,000 records


def test_hf_source_max_rows_bounds_what_is_read(tiny_model, fake_datasets):
    source = HFSource("owner/stories", text_field="body", max_rows=30)
    windows = build_windows(tiny_model.tokenizer, [source], ctx_len=32)
    assert fake_datasets.read == 30
    tokens = sum(
        len(ids) + 1
        for ids in tiny_model.tokenizer(
            [r["body"] for r in fake_datasets.records[:30]], add_special_tokens=False
        )["input_ids"]
    )
    assert len(windows) == tokens // 32


def test_hf_record_without_the_text_field(tiny_model, fake_datasets):
    with pytest.raises(SteerError, match=r"hf:owner/stories:train:1: record has no 'text' field"):
        build_windows(tiny_model.tokenizer, [HFSource("owner/stories")], ctx_len=32)


def test_hf_without_the_datasets_library_names_the_extra(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(SteerError) as info:
        build_windows(tiny_model.tokenizer, [HFSource("owner/stories")], ctx_len=32)
    assert "pip install steer[hf]" in str(info.value) and "\n" not in str(info.value)


def test_hf_load_failure_is_one_line(tiny_model, monkeypatch):
    fake = _FakeDatasets([])

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\nretry later")

    fake.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(SteerError) as info:
        build_windows(tiny_model.tokenizer, [HFSource("owner/stories")], ctx_len=32)
    assert (
        str(info.value) == "hf:owner/stories:train: cannot load the dataset: Couldn't reach the Hub"
    )


def test_hf_failure_while_streaming_is_one_line(tiny_model, monkeypatch):
    fake = _FakeDatasets([])

    def flaky(*args, **kwargs):
        yield {"text": "fine"}
        raise TimeoutError("read timed out\nafter 10 s")

    fake.load_dataset = flaky
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(SteerError) as info:
        build_windows(tiny_model.tokenizer, [HFSource("owner/stories")], ctx_len=32)
    assert str(info.value) == "hf:owner/stories:train: cannot read record 2: read timed out"


def test_cli_trains_on_an_hf_dataset_mixed_with_a_file(
    tiny_everywhere, fake_datasets, tmp_path, plain_text, capsys
):
    data = _small(plain_text)
    data["data"].append({"hf": "owner/stories", "text_field": "body", "max_rows": 400, "weight": 1})
    code, _, err = call(["train", str(_write(tmp_path, data))], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "sae-out" / "cfg.json").read_text())["metadata"]
    assert meta["hf_datasets"] == [
        {
            "name": "owner/stories",
            "split": "train",
            "text_field": "body",
            "config": None,
            "max_rows": 400,
        }
    ]
    assert "hf:owner/stories:train" in meta["dataset_path"]
    assert [f["path"] for f in meta["data_files"]] == [str(plain_text)]
    assert fake_datasets.read <= 400
