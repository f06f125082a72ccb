"""Write steer/data/sae_releases.yaml: the releases of SAELens's pretrained_saes.yaml that users
meet most, shipped so that `release:` + `sae_id:` work without sae-lens installed.

    python experiments/ship_release_list.py   # needs sae-lens installed (pip install -e .[test])

SAELens is MIT-licensed; the entries are copied unchanged (fields steer reads and the rest).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from steer.io import atomic_write_text
from steer.sae.releases import SHIPPED_LIST, installed_list

SHIPPED = (
    "gemma-scope-2b-pt-res-canonical",
    "gemma-scope-2b-pt-mlp-canonical",
    "gemma-scope-2b-pt-att-canonical",
    "gemma-scope-9b-pt-res-canonical",
    "gemma-scope-2b-pt-transcoders",
    "gemma-scope-2-270m-pt-res",
    "gemma-scope-2-1b-pt-res",
    "gemma-scope-2-4b-pt-res",
    "gemma-scope-2-4b-pt-transcoders",
    "gpt2-small-res-jb",
    "gpt2-small-resid-post-v5-32k",
    "gpt2-small-mlp-out-v5-32k",
    "gpt2-small-attn-out-v5-32k",
    "pythia-70m-deduped-res-sm",
    "mistral-7b-res-wg",
    "llama_scope_lxr_8x",
    "llama_scope_lxm_8x",
    "llama_scope_lxa_8x",
    "goodfire-llama-3.1-8b-instruct",
    "goodfire-llama-3.3-70b-instruct",
    "qwen-scope-3-1.7b-base-w32k-l50",
    "qwen-scope-3-8b-base-w64k-l50",
    "deepseek-r1-distill-llama-8b-qresearch",
    "sae_bench_pythia70m_sweep_topk_ctx128_0730",
    "llama-3.1-8b-instruct-andyrdt",
    "gemma-2-2b-res-matryoshka-dc",
)

HEADER = """\
# The SAE releases steer knows without sae-lens installed: entries copied unchanged from
# SAELens's pretrained_saes.yaml (MIT licence, https://github.com/decoderesearch/SAELens),
# version {version}. With sae-lens installed, its own full list is used instead.
# Regenerate: python experiments/ship_release_list.py
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="ship_release_list.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=SHIPPED_LIST, help="where to write the list")
    args = parser.parse_args()
    source = installed_list()
    if source is None:
        print("sae-lens is not installed (pip install -e .[test])", file=sys.stderr)
        return 2
    full = yaml.load(source.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    subset = {name: full[name] for name in SHIPPED}
    from importlib.metadata import version

    text = HEADER.format(version=version("sae-lens")) + yaml.safe_dump(subset, sort_keys=False)
    atomic_write_text(args.out, text)
    count = sum(len(entry["saes"]) for entry in subset.values())
    print(f"{args.out}: {len(subset)} releases, {count} SAEs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
