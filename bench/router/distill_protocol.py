#!/usr/bin/env python3
"""Distillation for the meaning-first router, with the pool chosen on data the
certificate never sees.

The proposer can be trained on unlabeled utterances the transformer labels
(skim-calibrate --distill): it then imitates the transformer where the
training set is silent. Which pool, and how much of it, is a choice; made on
the calibration set it would void the certificate. So each protocol's
calibration set is halved (seed 0):
  select   every pool size is tried: proposer on train + pool, certified at ε
           on this half; the size with the largest certified coverage wins
           (none certified: the largest agreement with the transformer);
  certify  the winner is certified afresh on the other half, then measured
           with skim-eval on the protocol's test set.
Protocols as in sweep.py: val->test (select/certify on halves of val, measure
on test) and exchangeable (halves of calib.tsv, measure on eval.tsv).

The pool is fixed before any data is seen: the user side of task-oriented
dialogue and open-domain questions from ../shared/data/corpus (SGD user turns,
Taskmaster-4 coffee, NQ-open), shuffled with seed 0; sizes are its prefixes.
The transformer labels it once (skim-classify --no-router), which is what
--distill does inside skim-calibrate.

Usage: bench/router/distill_protocol.py --model examples/models/clinc150-bert [--build build]
           [--epsilons 0.005,0.01,0.02] [--sizes 0,15000,30000,60000,132203] [--threads 2]
           [--work DIR] [--out results.jsonl]
One JSON object per protocol and ε on stdout (and appended to --out).
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

from sweep import link_model, protocols  # noqa: E402  (this directory)

SHARED = "/work/shared/data"
POOL_FILES = ["corpus/conv-sgd-user-part-000.txt", "corpus/conv-sgd-user-part-001.txt",
              "corpus/conv-taskmaster4-coffee.txt", "corpus/question-nq-open.txt"]


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def halve(path, first, second):
    rows = read_rows(path)
    random.Random(0).shuffle(rows)
    half = len(rows) // 2
    with open(first, "w", encoding="utf-8") as f:
        f.writelines(rows[:half])
    with open(second, "w", encoding="utf-8") as f:
        f.writelines(rows[half:])


def labelled_pool(classify, model, work, threads):
    """The pool's utterances with the transformer's labels, in pool order."""
    texts = []
    for name in POOL_FILES:
        with open(os.path.join(SHARED, name), encoding="utf-8") as f:
            texts += [" ".join(line.split()) for line in f if line.strip()]
    random.Random(0).shuffle(texts)
    cache = os.path.join(work, "pool_labels.tsv")
    if os.path.exists(cache):
        rows = read_rows(cache)
        if len(rows) == len(texts):
            return rows
    out = subprocess.run([classify, "--model", model, "--no-router", "--json", "--threads", threads],
                         input="\n".join(texts) + "\n", check=True, capture_output=True, text=True).stdout
    rows = [f"{t}\t{json.loads(line)['label']}\n" for t, line in zip(texts, out.splitlines())]
    if len(rows) != len(texts):
        sys.exit(f"skim-classify answered {len(rows)} of {len(texts)} pool utterances")
    with open(cache, "w", encoding="utf-8") as f:
        f.writelines(rows)
    return rows


def training_file(train, pool, size, work):
    path = os.path.join(work, f"train_pool_{size}.tsv")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(read_rows(train) + pool[:size])
    return path


def calibrate(tool, model, train, calib, eps, a, out_dir):
    run = subprocess.run([tool, "--model", model, "--train", train, "--calib", calib, "--epsilon", eps,
                          "--delta", a.delta, "--threads", a.threads, "--out", out_dir],
                         check=True, capture_output=True, text=True)
    summary = [line for line in run.stdout.splitlines() if line.strip()]
    text = "\n".join(summary)
    agreement = float(re.search(r"agreement with the transformer ([0-9.]+)", text).group(1))
    certified = text.find("\ncertified:") >= 0 or text.startswith("certified:")
    coverage = 0.0
    if certified:
        coverage = float(re.search(r"\(([0-9.]+)% of transformer calls avoided", text).group(1)) / 100
    return {"certified": certified, "coverage": coverage, "agreement": agreement, "summary": summary}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--build", default="build")
    ap.add_argument("--epsilons", default="0.005,0.01,0.02")
    ap.add_argument("--sizes", default="0,15000,30000,60000,132203")
    ap.add_argument("--delta", default="0.05")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--work", help="scratch directory, kept (the labelled pool is reused from it)")
    ap.add_argument("--out", help="append the JSON lines here too")
    a = ap.parse_args()
    tools = {name: os.path.join(a.build, f"examples/{name}/{name}")
             for name in ("skim-calibrate", "skim-eval", "skim-classify")}
    work = a.work or tempfile.mkdtemp(prefix="skim-distill-")
    os.makedirs(work, exist_ok=True)
    base = os.path.join(work, "model")
    if not os.path.isdir(base):
        link_model(a.model, base)
    tsv, calib_and_test = protocols(work)
    pool = labelled_pool(tools["skim-classify"], base, work, a.threads)
    sizes = [min(int(s), len(pool)) for s in a.sizes.split(",")]
    train = os.path.join(tsv, "train.tsv")
    out = open(a.out, "a") if a.out else None
    for protocol, (calib, test) in calib_and_test.items():
        tag = protocol.replace("->", "-")
        select, certify = os.path.join(work, f"{tag}.select.tsv"), os.path.join(work, f"{tag}.certify.tsv")
        halve(calib, select, certify)
        for eps in a.epsilons.split(","):
            tried = {}
            for size in sizes:
                trial = calibrate(tools["skim-calibrate"], base, training_file(train, pool, size, work), select, eps, a,
                                  os.path.join(work, f"trial-{tag}-{eps}-{size}"))
                tried[size] = trial
                print(f"# {protocol} ε={eps} pool {size}: certified={trial['certified']} "
                      f"coverage={trial['coverage']:.3f} agreement={trial['agreement']:.4f}", file=sys.stderr, flush=True)
            chosen = max(sizes, key=lambda s: (tried[s]["coverage"], tried[s]["agreement"]))
            model = os.path.join(work, f"model-{tag}-{eps}")
            if not os.path.isdir(model):
                link_model(a.model, model)
            final = calibrate(tools["skim-calibrate"], model, training_file(train, pool, chosen, work), certify, eps, a,
                              model)
            ev = json.loads(subprocess.run([tools["skim-eval"], "--model", model, "--data", test, "--threads", a.threads],
                                           check=True, capture_output=True, text=True).stdout)
            row = {"protocol": protocol, "epsilon": float(eps), "delta": float(a.delta), "pool": chosen,
                   "selection": {str(s): {k: tried[s][k] for k in ("certified", "coverage", "agreement")} for s in sizes},
                   "certified": final["certified"], "expected_avoided": final["coverage"],
                   "calibrate_summary": final["summary"]}
            for k in ("n", "accuracy", "transformer_accuracy", "call_rate", "accepted", "accepted_disagreements",
                      "accepted_disagreement_rate", "seconds", "transformer_only_seconds", "speedup", "routes"):
                if k in ev:
                    row[k] = ev[k]
            row["avoided"] = 1 - ev["call_rate"]
            line = json.dumps(row)
            print(line, flush=True)
            if out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
