"""Registry and specs, parametrized over every registered model."""

import json

import pytest

import zoo
from zoo import Modality, UnknownModelError, UnsupportedModalityError
from zoo.registry import family_of
from zoo.weights import available_offline, resolve


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_spec_is_complete(name):
    spec = zoo.get_spec(name)
    assert spec.name == name and spec.dim > 0 and spec.modalities and spec.license and spec.source
    assert family_of(spec).family == spec.family
    assert all(d <= spec.dim for d in spec.matryoshka_dims)
    if spec.default_prompt_name:
        assert spec.default_prompt_name in spec.prompts
    assert zoo.get_spec(name).to_dict()["name"] == name


def test_list_filters():
    text = zoo.list_models(modality="text")
    assert "sentence-transformers/all-MiniLM-L6-v2" in text
    assert zoo.list_models(pattern="*all-minilm*") == ["sentence-transformers/all-MiniLM-L6-v2"]
    for m in Modality:
        assert all(zoo.get_spec(n).supports(m) for n in zoo.list_models(modality=m))
    with pytest.raises(UnsupportedModalityError, match="choose one of"):
        zoo.list_models(modality="smell")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="all-MiniLM-L6-v2"):
        zoo.get_spec("sentence-transformers/all-MiniLM-L6")
    with pytest.raises(UnknownModelError, match="zoo list"):
        zoo.create("no-such-model-anywhere")


def test_default_weights_ship_offline():
    spec = zoo.get_spec("sentence-transformers/all-MiniLM-L6-v2")
    assert available_offline(spec)
    assert (resolve(spec) / "model.safetensors").is_file()


def test_unreachable_weights_say_where_they_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("ZOO_MODELS_DIR", str(tmp_path / "models"))
    spec = zoo.get_spec("BAAI/bge-small-en-v1.5")
    assert not available_offline(spec)
    with pytest.raises(zoo.WeightsUnavailableError) as err:
        zoo.create(spec.name)
    msg = str(err.value)
    assert "ZOO_MODELS_DIR" in msg and "Hugging Face cache" in msg and "download skipped" in msg


def test_models_dir_override(monkeypatch, tmp_path, minilm_dir):
    (tmp_path / "BAAI").mkdir()
    (tmp_path / "BAAI" / "bge-small-en-v1.5").symlink_to(minilm_dir)
    monkeypatch.setenv("ZOO_MODELS_DIR", str(tmp_path))
    assert resolve(zoo.get_spec("BAAI/bge-small-en-v1.5")) == tmp_path / "BAAI" / "bge-small-en-v1.5"


def test_folder_spec(minilm_dir):
    spec = zoo.get_spec(str(minilm_dir))
    assert spec.family == "text" and spec.dim == 384 and spec.max_length == 256
    assert spec.options["pooling"] == "mean"


def test_folder_that_is_no_model(tmp_path):
    with pytest.raises(zoo.InvalidArgumentError, match="config.json"):
        zoo.get_spec(str(tmp_path))


def test_unknown_family_is_named_as_a_family():
    spec = zoo.EmbedderSpec(name="x/y", family="txet", modalities=("text",), dim=4, license="mit", source="x/y")
    with pytest.raises(zoo.UnknownFamilyError, match=r"unknown family 'txet' \(model 'x/y'\)\. Did you mean: text"):
        family_of(spec)
    err = zoo.errors.from_wire(zoo.errors.to_wire(zoo.UnknownFamilyError("txet", ["text"])))
    assert type(err) is zoo.UnknownFamilyError and "unknown family 'txet'" in str(err)


@pytest.mark.parametrize("name", zoo.list_models())
def test_spec_from_dict_inverts_to_dict(name):
    spec = zoo.get_spec(name)
    assert zoo.EmbedderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_audio_models_declare_their_rate_as_a_field():
    for name in zoo.list_models(modality="audio"):
        spec = zoo.get_spec(name)
        assert spec.sample_rate and "sample_rate" not in spec.options and "batch_size" not in spec.options
    with pytest.raises(ValueError, match="audio model needs sample_rate"):
        zoo.EmbedderSpec(name="a", family="clap", modalities=("audio",), dim=4, license="mit", source="a")


# ---- the family contract ----------------------------------------------------------------------------------
def test_zoo_families_come_from_the_entry_point_group():
    """Every family zoo loads is an entry point of ``zoo.families`` (zoo's own too), and its key is its name."""
    from zoo.base import Embedder
    from zoo.plugins import FAMILIES, named
    from zoo.registry import list_families

    entries = named(FAMILIES)
    assert set(list_families()) == set(entries) >= {"text", "open_clip", "hf_clip", "clap", "m3", "omni"}
    for key, entry in entries.items():
        cls = entry.load()
        assert issubclass(cls, Embedder) and cls.family == key


def test_a_family_declaring_only_the_hook_leaves_folder_loading_intact(minilm_dir, tmp_path):
    """The base declares every attribute the registry reads: a family that sets none of them (no
    folder_priority, claims, runtimes, reproduces, spec_from_folder) registers, never claims a folder, and every
    other folder still loads; a folder it does claim is offered to it first when it says so."""
    import numpy as np

    from zoo import registry
    from zoo.base import Embedder

    class Bare(Embedder):
        def forward(self, batch, modality, opts, kind):
            return np.zeros((len(batch), 4), np.float32)

    registry.register_family("bare-test", Bare)
    try:
        assert zoo.get_spec(str(minilm_dir)).family == "text"

        class Claiming(Bare):
            folder_priority = 1
            claims = frozenset({"bert"})  # MiniLM's model_type: only this family may read such folders now

            @classmethod
            def spec_from_folder(cls, path):
                return zoo.EmbedderSpec(name=str(path), family="claiming-test", modalities=("text",), dim=4,
                                        license="MIT", source=str(path))

        registry.register_family("claiming-test", Claiming)
        try:
            assert zoo.get_spec(str(minilm_dir)).family == "claiming-test"
        finally:
            del registry._FAMILIES["claiming-test"]
        assert zoo.get_spec(str(minilm_dir)).family == "text"
    finally:
        del registry._FAMILIES["bare-test"]


def test_a_family_must_be_an_embedder():
    from zoo import registry

    with pytest.raises(TypeError, match="subclass of zoo.base.Embedder"):
        registry.register_family("not-a-family", object)
    assert "not-a-family" not in registry.list_families()


def test_the_text_fallback_leaves_composite_models_alone(tmp_path):
    """A folder of a model built of sub-models (here a CLIP-like config whose type no family claims) is not
    loaded as a text encoder by the fallback."""
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "some_new_vlm", "hidden_size": 8,
        "text_config": {"model_type": "some_new_vlm_text"}, "vision_config": {"model_type": "some_new_vlm_vision"}}))
    with pytest.raises(zoo.InvalidArgumentError, match="no family can load the folder"):
        zoo.get_spec(str(tmp_path))


def test_threads_never_see_a_part_of_the_families():
    """Two threads asking a fresh process's registry at once (a server's first requests) both see every family,
    however slowly the families import."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent('''
        import threading, time
        from zoo import registry

        entries = registry.named(registry.FAMILIES)

        class Slow:  # an entry point whose import takes a while, as torch-heavy families do
            def __init__(self, entry):
                self.entry, self.value = entry, entry.value

            def load(self):
                time.sleep(0.05)
                return self.entry.load()

        registry.named = lambda group: {k: Slow(e) for k, e in entries.items()}
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(len(registry.list_families()))) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
        print(seen, len(entries))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen, total = out.stdout.strip().rsplit(" ", 1)
    assert seen == str([int(total)] * 3), out.stdout


def test_folder_configs_that_are_not_objects_are_refused_plainly(tmp_path):
    for text in ("[1, 2]", "{not json", '{"model_type": ["bert"]}'):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(zoo.InvalidArgumentError, match="config.json|no family can load"):
            zoo.get_spec(str(tmp_path))


def test_two_families_cannot_claim_one_model_type():
    from zoo import registry
    from zoo.base import Embedder

    class Rival(Embedder):
        claims = frozenset({"bert"})

    class Second(Embedder):
        claims = frozenset({"bert"})

    registry.register_family("rival-test", Rival)
    try:
        with pytest.raises(ValueError, match="already claims"):
            registry.register_family("second-test", Second)
    finally:
        del registry._FAMILIES["rival-test"]
    assert "second-test" not in registry.list_families()
