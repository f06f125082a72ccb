"""GPU check: steering, monitoring and pinpointing on CUDA in bfloat16, with ratios against plain
transformers ``generate`` measured side by side in one run. For whenever a GPU machine is there;
CI has none. Under 5 minutes on one GPU with the defaults (the bundled SmolLM2 and SAE).

    python bench/gpu_check.py                      # cuda, bfloat16
    python bench/gpu_check.py --device cpu --dtype float32 --quick   # the same checks on a CPU

Checks (each printed PASS / FAIL, exit 1 on any FAIL):
  * the model and SAEs are on the device, in the dtype asked for;
  * a recipe with an SAE attached and no edit gives plain generate's tokens (greedy);
  * a clamp at the residual stream (layer 12) and at an MLP's output (layer 6) changes them;
  * a monitor reports events on the device;
  * pinpoint (attribution patching, 4 Winogender prompts) runs and ranks features.
Timings: tokens/s of plain generate and of each steered variant, and their ratio to plain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # run as a script or imported: generation.py beside it
from generation import PROMPTS  # noqa: E402  the same prompts as the CPU benchmark

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'  ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(name)


def mlp_sae(folder: Path, d_model: int) -> Path:
    """A random TopK SAE on block 6's MLP output: the cost of an edit does not depend on what
    the features mean, and a strong clamp on any feature changes the tokens."""
    from steer.sae import SAEConfig, get_architectures, save_sae

    cfg = SAEConfig(
        architecture="topk", d_in=d_model, d_sae=4 * d_model, k=32,
        hook_name="blocks.6.hook_mlp_out", model_name="smollm2-135m-instruct",
    )  # fmt: skip
    sae = get_architectures()["topk"](cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.05)
    save_sae(sae, folder)
    return folder


def timed(fn, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after a warm-up; CUDA is synchronised."""
    fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def steering(model, args, tmp: Path) -> None:
    from steer.steering.engine import Steerer
    from steer.steering.generation import generate_plain
    from steer.steering.recipe import parse_recipe

    mlp = mlp_sae(tmp / "mlp6", model.d_model)
    saes = [{"id": "res", "builtin": "smollm2-135m-res12-topk"}, {"id": "mlp", "path": str(mlp)}]
    gen = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "batch_size": args.batch}
    base = {"saes": saes, "prompts": PROMPTS[: args.batch], "generation": gen}
    variants = {
        "steer, no edit": {},
        "clamp resid_post 12": {"interventions": [
            {"plugin": "clamp", "sae": "res", "features": [831], "value": 60.0}]},
        "clamp mlp_out 6": {"interventions": [
            {"plugin": "clamp", "sae": "mlp", "features": [0], "value": 400.0}]},
        "monitor resid_post 12": {"monitors": [
            {"name": "any", "sae": "res", "features": list(range(64)), "threshold": 0.0}]},
    }  # fmt: skip
    steerers = {name: Steerer(parse_recipe({**base, **extra}), model=model)
                for name, extra in variants.items()}  # fmt: skip
    for name, steerer in steerers.items():
        for sae, _hook in steerer.saes.values():
            check(
                f"{name}: SAE on {args.device}", sae.device.type == torch.device(args.device).type
            )
    plain_recipe = parse_recipe(base)
    enc = model.tokenize(PROMPTS[: args.batch], chat=None)
    results = {name: s.run(baseline=True).results for name, s in steerers.items()}
    check("no edit gives plain generate's tokens",
          all(r.steered == r.baseline for r in results["steer, no edit"]))  # fmt: skip
    for name in ("clamp resid_post 12", "clamp mlp_out 6"):
        check(f"{name} changes the tokens", any(r.steered != r.baseline for r in results[name]))
    events = sum(len(r.events) for r in results["monitor resid_post 12"])
    check("the monitor reports events", events > 0, f"{events} events")
    n_tokens = args.tokens * args.batch
    plain_s = timed(lambda: generate_plain(model, enc, plain_recipe), args.reps)
    print(f"\n{'variant':24} {'tokens/s':>10} {'x plain time':>13}")
    print(f"{'plain generate':24} {n_tokens / plain_s:10.1f} {1.0:13.3f}")
    for name, steerer in steerers.items():
        seconds = timed(lambda s=steerer: s.run(baseline=False), args.reps)
        print(f"{name:24} {n_tokens / seconds:10.1f} {seconds / plain_s:13.3f}")
    print()


def pinpoint(model, args) -> None:
    from steer.pinpoint import Pinpointer, load_pinpoint_recipe
    from steer.pinpoint.recipe import parse_pinpoint_recipe

    full = load_pinpoint_recipe(REPO / "recipes" / "pinpoint-gender.yaml")
    data = full.model_dump(mode="json", exclude_none=True)
    data.update(prompts=data["prompts"][:4], side_effect_data=None, neuron_baseline=False,
                top_k=10, curve_max=10)  # fmt: skip
    data.pop("counterfactuals", None)
    recipe = parse_pinpoint_recipe(data)
    t0 = time.perf_counter()
    result = Pinpointer(recipe, model=model).run().to_dict()
    seconds = time.perf_counter() - t0
    ranked = result["sites"][0]["features"]["ranked"]
    check("pinpoint ranks features", len(ranked) > 0, f"{len(ranked)} ranked in {seconds:.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 tokens, batch 2, 1 rep")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.batch, args.reps = 8, 2, 1
    from steer.model import load_model

    t0 = time.perf_counter()
    model = load_model(device=args.device, dtype=args.dtype)
    print(f"model on {model.device} in {model.hf.dtype}, loaded in {time.perf_counter() - t0:.1f}s")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    check("model on the device", model.hf.device.type == torch.device(args.device).type)
    check("model in the dtype", str(model.hf.dtype) == f"torch.{args.dtype}")
    with tempfile.TemporaryDirectory() as tmp:
        steering(model, args, Path(tmp))
    pinpoint(model, args)
    print(f"\n{len(FAILURES)} failed" if FAILURES else "\nall checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
