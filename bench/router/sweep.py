#!/usr/bin/env python3
"""The meaning-first router on CLINC150 at several ε: calibrate with
skim-calibrate, measure with skim-eval, one JSON object per setting.

Two protocols (see DESIGN.md, "Quality and cost evaluation"):
  val->test   proposer trained on train, certificate from val, measured on test.
              Val holds 3% out-of-scope utterances, test 18%: a real shift, and
              the certificate promises nothing for it.
  exchangeable  proposer trained on train, certificate from calib.tsv, measured on
              eval.tsv: val + test shuffled (seed 0) and halved by
              bench/fixtures/clinc150_to_tsv.py --exchangeable 0, where the
              guarantee applies.

Usage: bench/router/sweep.py --model examples/models/clinc150-bert [--build build]
           [--epsilons 0.005,0.01,0.02,0.05] [--threads 2] [--out results.jsonl]
The model's files are linked into a scratch directory, so the model directory
itself is left as it is.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CLINC = "/work/shared/data/clinc150/data_full.json"
HERE = os.path.dirname(os.path.abspath(__file__))


def link_model(source, target):
    """The model's files linked into target (its skim.* package and *.md left out)."""
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        if not name.startswith("skim.") and not name.endswith(".md"):
            os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(target, name))


def protocols(work):
    """CLINC150 as TSVs in work/tsv; per protocol, its calibration and test files."""
    tsv = os.path.join(work, "tsv")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "fixtures", "clinc150_to_tsv.py"), "--json", CLINC,
                    "--out", tsv, "--exchangeable", "0"], check=True, stdout=subprocess.DEVNULL)
    return tsv, {"val->test": (os.path.join(tsv, "val.tsv"), os.path.join(tsv, "test.tsv")),
                 "exchangeable": (os.path.join(tsv, "calib.tsv"), os.path.join(tsv, "eval.tsv"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--build", default="build")
    ap.add_argument("--epsilons", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--delta", default="0.05")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", help="append the JSON lines here too")
    a = ap.parse_args()
    calibrate = os.path.join(a.build, "examples/skim-calibrate/skim-calibrate")
    evaluate = os.path.join(a.build, "examples/skim-eval/skim-eval")
    work = tempfile.mkdtemp(prefix="skim-router-sweep-")
    model = os.path.join(work, "model")
    link_model(a.model, model)
    tsv, calib_and_test = protocols(work)
    out = open(a.out, "a") if a.out else None
    for protocol, (calib, test) in calib_and_test.items():
        for eps in a.epsilons.split(","):
            cal = subprocess.run([calibrate, "--model", model, "--train", os.path.join(tsv, "train.tsv"), "--calib", calib,
                                  "--epsilon", eps, "--delta", a.delta, "--threads", a.threads],
                                 check=True, capture_output=True, text=True)
            ev = subprocess.run([evaluate, "--model", model, "--data", test, "--threads", a.threads],
                                check=True, capture_output=True, text=True)
            r = json.loads(ev.stdout)
            row = {"protocol": protocol, "epsilon": float(eps), "delta": float(a.delta)}
            for k in ("n", "accuracy", "transformer_accuracy", "in_scope_accuracy", "transformer_in_scope_accuracy",
                      "oos_recall", "transformer_oos_recall", "call_rate", "accepted", "accepted_disagreements",
                      "accepted_disagreement_rate", "flops", "dense_flops", "seconds", "transformer_only_seconds",
                      "speedup", "routes", "certificate", "monitor", "router"):
                if k in r:
                    row[k] = r[k]
            row["avoided"] = 1 - r["call_rate"]
            row["calibrate_summary"] = cal.stdout.strip().splitlines()
            line = json.dumps(row)
            print(line, flush=True)
            if out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
