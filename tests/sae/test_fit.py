"""Which model names are different models: family and size, with an instruction-tuned variant
the same model as its base, and names that say neither not judged."""

from __future__ import annotations

import pytest

from steer.sae.fit import model_names_differ


@pytest.mark.parametrize(
    ("sae_model", "model", "differ"),
    [
        ("gemma-2-2b", "google/gemma-2-2b-it", False),  # the -it model of the base's SAEs
        ("gemma-2-2b", "google/gemma-2-9b", True),  # same family, another size
        ("gpt2-small", "gpt2", False),  # TransformerLens's name for HF's gpt2
        ("gpt2-small", "openai-community/gpt2", False),
        ("mistral-7b", "mistralai/Mistral-7B-v0.1", False),
        ("meta-llama/Llama-3.1-8B", "smollm2-135m-instruct", True),  # another family
        ("pythia-70m-deduped", "EleutherAI/pythia-160m", True),
        ("Qwen/Qwen3-1.7B-Base", "qwen3-1.7b", False),
        ("smollm2-135m-instruct", "/models/SmolLM2-135M-Instruct-Q8_0.gguf", False),
        ("test-model", "/tmp/some-folder", False),  # names that say nothing are not judged
        (None, "gpt2", False),
    ],
)
def test_model_names_differ(sae_model, model, differ):
    assert model_names_differ(sae_model, model) is differ
