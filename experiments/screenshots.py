"""Screenshots of steer's HTML pages on the real SmolLM2 and the shipped SAE, for the docs.

Builds three pages and photographs each in headless Chromium (Debian's chromium and
chromedriver, driven by selenium; nothing is downloaded):

* ``docs/dashboard-feature.png``: one feature's dashboard page. The shipped index has no
  quantile samples (it was built before steer sampled them), so by default a small fresh index
  of the shipped SAE is built first (``--tokens`` of the same corpus as the shipped one:
  WikiText-2 test and movie reviews); ``--shipped-index`` uses the shipped index instead.
* ``docs/monitor-report.png``: the report of ``recipes/monitor-crime-ablate.yaml`` (4 prompts,
  60 tokens, greedy), its features linked to that dashboard.
* ``docs/pinpoint-page.png``: ``curve.html`` of ``recipes/pinpoint-gender.yaml`` (all its
  prompts, or the first ``--prompts``; no side-effect text), features linked.

Every page must load without a console error (the script stops otherwise). The pages stay in
``--work`` (default ``/tmp/steer-screenshots``) and link to each other there. About 5 minutes
on two shared CPU cores with the defaults:

    python experiments/screenshots.py [--tokens 16384] [--feature sea] [--work DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import CORPUS, REPO

SAE = "smollm2-135m-res12-topk"
DATA = ("wikitext2_raw_test.txt", "labelled/pang_lee_movie_review_polarity.jsonl")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def parse_args() -> argparse.Namespace:
    """This script's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/steer-screenshots", help="Where the pages go.")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="Where the PNGs go.")
    parser.add_argument("--tokens", type=int, default=16384, help="Tokens of the fresh index.")
    parser.add_argument("--shipped-index", action="store_true", help="Use the shipped index.")
    parser.add_argument(
        "--feature",
        default=None,
        help="Feature (id or label) to photograph; default: the labelled feature that fired "
        "most often on the indexed text among those firing on under 1 %% of tokens.",
    )
    parser.add_argument(
        "--prompts", type=int, default=0, help="Use the first N pinpoint prompts (0: all)."
    )
    return parser.parse_args()


def build_dashboard(args, lm, folder: Path, sae) -> tuple[Path, int]:
    """The dashboard of the shipped SAE in ``work/dashboard``; returns it and the feature to
    photograph."""
    from steer.features.dashboard import write_dashboard
    from steer.features.index import build_index
    from steer.features.store import FeatureIndex
    from steer.sae.labels import load_labels, resolve_feature

    work = Path(args.work)
    db = folder / "features.sqlite"
    if not args.shipped_index:
        db = work / "features.sqlite"
        data = [CORPUS / name for name in DATA]
        result = build_index(lm, sae, folder, data, db=db, max_tokens=args.tokens)
        print(f"index {result.status}: {result.tokens} tokens, {result.seconds:.0f} s")
    labels = load_labels(folder)
    with FeatureIndex.open(db) as index:
        if args.feature is not None:
            ref = int(args.feature) if args.feature.isdigit() else args.feature
            feature = resolve_feature(labels, ref, d_sae=index.d_sae, where="--feature", sae=SAE)
        else:
            rows = {s.id: s for s in index.features()}
            rare = [f for f in labels if f in rows and 0 < rows[f].density < 0.01]
            feature = max(rare, key=lambda f: rows[f].n_fired)
        t0 = time.perf_counter()
        out = work / "dashboard"
        write_dashboard(index, labels, out, decoder=sae.W_dec, sae=SAE)
        print(f"dashboard: {out} ({time.perf_counter() - t0:.0f} s); feature {feature}")
    return out, feature


def monitor_report(lm, dashboard: Path, work: Path) -> Path:
    """The report of the conditional-ablation monitor demo, linked to the dashboard."""
    from steer.monitoring.report import dashboard_links, write_report
    from steer.steering.engine import Steerer
    from steer.steering.recipe import load_recipe

    steerer = Steerer(load_recipe(REPO / "recipes" / "monitor-crime-ablate.yaml"), model=lm)
    results = steerer.run()
    path = work / "monitor-report.html"
    links = dashboard_links(steerer.recipe, [str(dashboard)], work)
    return write_report(results, steerer.recipe, path, links=links)


def pinpoint_page(lm, dashboard: Path, work: Path, prompts: int) -> Path:
    """``curve.html`` of the gender pinpoint recipe on its first prompts, linked."""
    from steer.pinpoint import Pinpointer, load_pinpoint_recipe
    from steer.pinpoint.report import dashboard_links, write_outputs

    recipe = load_pinpoint_recipe(REPO / "recipes" / "pinpoint-gender.yaml")
    update = {"side_effect_data": None, "curve_max": 60}
    if prompts:
        update["prompts"] = recipe.prompts[:prompts]
    recipe = recipe.model_copy(update=update)
    result = Pinpointer(recipe, model=lm).run(progress=True).to_dict()
    out = work / "pinpoint"
    write_outputs(result, out, links=dashboard_links(recipe, [str(dashboard)], out))
    return out / "curve.html"


def browser():
    """Headless Chromium, and the size its window frame takes from the page area."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1000, 1000)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    return driver, (1000 - inner[0], 1000 - inner[1])


def photograph(driver, frame, page: Path, png: Path, size: tuple[int, int]) -> None:
    """Open ``page`` in a page area of ``size`` pixels and save what it shows as ``png``;
    console errors are fatal."""
    driver.set_window_size(size[0] + frame[0], size[1] + frame[1])
    driver.get(page.resolve().as_uri())
    time.sleep(0.5)  # let fonts settle
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    if errors:
        raise SystemExit(f"{page}: console errors: {errors}")
    driver.save_screenshot(str(png))
    print(f"wrote {png}")


def main() -> None:
    args = parse_args()
    from steer.sae.loading import load_sae_and_model

    t0 = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder, sae, lm = load_sae_and_model(SAE)
    dashboard, feature = build_dashboard(args, lm, folder, sae)
    report = monitor_report(lm, dashboard, work)
    curve = pinpoint_page(lm, dashboard, work, args.prompts)
    docs = Path(args.docs)
    driver, frame = browser()
    page = dashboard / "features" / f"{feature}.html"
    try:
        # Tall enough for the top contexts and the first bands of quantile samples.
        photograph(driver, frame, page, docs / "dashboard-feature.png", (1280, 1800))
        photograph(driver, frame, report, docs / "monitor-report.png", (1200, 1400))
        photograph(driver, frame, curve, docs / "pinpoint-page.png", (1280, 800))
    finally:
        driver.quit()
    print(f"done in {time.perf_counter() - t0:.0f} s; pages in {work}")


if __name__ == "__main__":
    main()
