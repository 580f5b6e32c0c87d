#!/usr/bin/env python3
"""Mixture-of-Depths (--method mod) or Adaptive Computation Modules (--method
acm) wall time against FLOPs on a BERT-base-shaped model.

A randomly initialised BERT-base (12 x 768, 12 heads, FFN 3072; written by
tests/reference/make_random_bert.py) gets learned routers fitted on it with
skim-calibrate --mod-capacity C (forward passes over calibration paragraphs,
routers on the default layers 2-10), or ACM gates on every FFN with
skim-calibrate --acm-budget (fitted once; each budget B is then asked of
skim-eval --acm-budget B), then skim-eval runs evaluation paragraphs one
request at a time with MoD (ACM) off and on. Texts: TinyStories validation stories
(../shared/data/tinystories, CDLA-Sharing-1.0) cut to about --words words, so a
request is about 128 tokens; calibration and evaluation stories do not overlap.
The model's labels are random, so only cost is read here, not quality.

  flops share = transformer_flops / transformer_dense_flops (skim-eval, MoD on)
  ffn share   = transformer_ffn_flops / transformer_dense_ffn_flops (ACM)
  wall share  = median seconds (MoD on) / median seconds (MoD off)
Each setting is timed --repeats times, alternating off and on; medians, with min-max.
The JSON is drawn beside it as an SVG (wall share against FLOPs share);
--plot-only JSON redraws an earlier run's.

Usage: bench/mod/wall_time.py [--method mod|acm] [--acm-refit] [--build build] [--work DIR] [--budgets 0.75,0.5,0.25]
           [--repeats 3] [--threads 2] [--model DIR] [--out bench/<method>/bert_base_wall_time.json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench"))
from plot_svg import line_chart  # noqa: E402
STORIES = "/work/shared/data/tinystories/tinystories_valid_first1000.txt"


def stories(words):
    text = open(STORIES, encoding="utf-8").read()
    out = []
    for story in text.split("<|endoftext|>"):
        story = " ".join(story.split())
        if len(story.split()) >= words:
            out.append(" ".join(story.split()[:words]))
    return out


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def plot(results, svg_path):
    """Wall-time share against executed FLOPs share, with the line where they are equal."""
    acm = results.get("method", "mod") == "acm"  # runs before --method existed were MoD
    name = "ACM%s" % (" (refit)" if results.get("acm_refit") else "") if acm else "MoD (learned routers)"
    points = [[p["flops_share"], p["wall_share"]] for p in results["points"]]  # both of the whole transformer
    series = [{"name": name, "points": points},
              {"name": "wall = FLOPs", "points": [[0, 0], [1, 1]], "color": "#7f7f7f", "dash": "4,2", "marker": "plus"}]
    line_chart([{"x_label": "executed FLOPs share (transformer)",
                 "y_label": "wall-time share (median)", "x_range": [0, 1.05], "y_range": [0, 1.05],
                 "series": series, "ref_points": [{"name": "dense", "x": 1.0, "y": 1.0}]}],
               "%s, random BERT-base: wall vs FLOPs" % name.split(" (")[0], svg_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", help="an existing random BERT-base directory (default: write one)")
    ap.add_argument("--budgets", default="0.75,0.5,0.25")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--words", type=int, default=100)
    ap.add_argument("--calib-texts", type=int, default=48)
    ap.add_argument("--eval-texts", type=int, default=32)
    ap.add_argument("--method", default="mod", choices=["mod", "acm"])
    ap.add_argument("--acm-refit", action="store_true", help="ACM: skim-calibrate --acm-refit (least-squares prefixes)")
    ap.add_argument("--out", help="default bench/<method>/bert_base_wall_time.json")
    ap.add_argument("--work", help="scratch directory, kept; a model calibrated there by an earlier run with the "
                    "same settings is reused (calibrating BERT-base with --acm-refit takes ~20 min)")
    ap.add_argument("--plot-only", metavar="JSON", help="redraw the SVG of an earlier run's JSON, and stop")
    a = ap.parse_args()
    if a.plot_only:
        plot(json.load(open(a.plot_only)), os.path.splitext(a.plot_only)[0] + ".svg")
        return
    out_path = a.out or os.path.join(REPO, "bench", a.method, "bert_base_wall_time.json")
    acm = a.method == "acm"
    calibrate = os.path.join(a.build, "examples/skim-calibrate/skim-calibrate")
    evaluate = os.path.join(a.build, "examples/skim-eval/skim-eval")
    work = a.work or tempfile.mkdtemp(prefix="skim-mod-wall-")
    os.makedirs(work, exist_ok=True)
    source = a.model
    if not source:
        source = os.path.join(work, "source")
        run(["/usr/bin/python3", os.path.join(REPO, "tests/reference/make_random_bert.py"), "--out", source, "--seed", "0"])
    texts = stories(a.words)
    calib, evaluation = texts[:a.calib_texts], texts[a.calib_texts:a.calib_texts + a.eval_texts]
    for name, rows in (("calib.tsv", calib), ("eval.tsv", evaluation)):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            for t in rows:
                f.write(f"{t}\tneutral\n")
    results = {"command": " ".join(sys.argv), "method": a.method, "acm_refit": a.acm_refit,
               "texts": {"calib": len(calib), "eval": len(evaluation), "words": a.words},
               "threads": a.threads, "points": []}
    print(f"{'budget':>7} {'layers':>28} {'flops':>7} {'ffn':>7} {'wall':>7}  off s (min-max)     on s (min-max)     calib s")
    model = None
    for budget in a.budgets.split(","):
        if model is None or not acm:
            model = os.path.join(work, f"model-{budget}")
            out = "(calibrated by an earlier run in --work)"
            if not os.path.exists(os.path.join(model, "skim.json")):
                os.makedirs(model, exist_ok=True)
                for name in os.listdir(source):
                    if not name.startswith("skim.") and name != "reference.json" and \
                            not os.path.exists(os.path.join(model, name)):
                        os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(model, name))
                out = run([calibrate, "--model", model, "--calib", os.path.join(work, "calib.tsv"),
                           "--acm-budget" if acm else "--mod-capacity", budget, "--threads", a.threads] +
                          (["--acm-refit"] if acm and a.acm_refit else []))
            calib_seconds = json.load(open(os.path.join(model, "skim.json")))[a.method]["fit"]["seconds"]
        off, on, flops, ffn = [], [], None, None
        for _ in range(a.repeats):
            for mode, sink in (("off", off), ("on", on)):
                cmd = [evaluate, "--model", model, "--data", os.path.join(work, "eval.tsv"), "--no-router",
                       "--threads", a.threads, "--" + a.method, mode]
                j = json.loads(run(cmd + (["--acm-budget", budget] if acm and mode == "on" else [])))
                sink.append(j["seconds"])
                if mode == "on":
                    flops = j["transformer_flops"] / j["transformer_dense_flops"]
                    ffn = j["transformer_ffn_flops"] / j["transformer_dense_ffn_flops"]
                    if acm:
                        layers = [{"layer": l, "capacity": j["acm"]["budget"]} for l in j["acm"]["layers"]]
                    else:
                        layers = j["mod"]["layers"] if j["mod"] else []
        point = {"budget": float(budget), "layers": layers, "flops_share": flops, "ffn_flops_share": ffn,
                 "wall_share": statistics.median(on) / statistics.median(off),
                 "seconds_off": off, "seconds_on": on, "calibration_seconds": calib_seconds,
                 "calibrate_stdout": out.strip().splitlines()[-2:]}
        results["points"].append(point)
        desc = ",".join(f"{l['layer']}:{l['capacity']:.3g}" for l in layers)
        print(f"{budget:>7} {desc[:28]:>28} {flops:7.3f} {ffn:7.3f} {point['wall_share']:7.3f}  "
              f"{statistics.median(off):6.2f} ({min(off):.2f}-{max(off):.2f})  "
              f"{statistics.median(on):6.2f} ({min(on):.2f}-{max(on):.2f})  {calib_seconds:6.1f}", flush=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.splitext(out_path)[0] + ".svg")
    if not a.work:
        shutil.rmtree(work)
    print(f"wrote {out_path} and its .svg")


if __name__ == "__main__":
    main()
