#!/usr/bin/env python3
"""Mixture-of-Depths (--task clinc150) or Adaptive Computation Modules (--task
clinc150-acm) on CLINC150, or on stories260K (--task stories-mod, stories-acm), at several
budgets: fit the routers or gates with
skim-calibrate, measure quality and cost with skim-eval, one JSON file and one
SVG for the whole sweep (default bench/<mod|acm>/<task>_sweep.{json,svg}).

ACM: the "layer sets" are variants: a learner count ("default", "8"), with
"+refit" for skim-calibrate --acm-refit, or "package:DIR" for a package made
elsewhere (e.g. bench/fixtures/distill_acm.py's distilled learners; no
calibration). The gates are fitted once per variant and every budget is asked
of skim-eval (--acm-budget), the
scorers are the fitted gates (learned), the oracle (each prefix's true error)
and uniform (every token the same share of learners: static pruning), and the
x axis is the FFNs' executed FLOPs share. The MoD description follows.

For each layer set (--layer-sets, default "default;1,2,3": skim-calibrate's
default routed layers, then layers 1-3) and each budget C (--budgets: the
average share of tokens processed in the routed layers), the model's files are
linked into a fresh scratch directory, skim-calibrate --mod-capacity C fits the
routers on val.tsv (forward passes only), and skim-eval measures test.tsv with
each token scorer (--routers):
  learned  the fitted routers: the real thing
  oracle   the true contribution of each block, ||f(x)|| / ||x||, found by running
           it: an upper bound on quality that saves nothing in reality. Its FLOPs
           are counted as if routed (the plot's x); its wall time means nothing,
           so it is run once and left out of the wall-time panel.
  random   seeded random scores: the floor.
One dense run (--mod off) is the reference. Each timed eval runs --repeats times;
the median of skim-eval's "seconds" is kept, min and max are reported.

  flops share = transformer_flops / transformer_dense_flops (skim-eval)
  wall share  = median seconds / dense median seconds

Usage: bench/mod/sweep.py --model examples/models/clinc150-bert [--build build]
           [--budgets 0.875,0.75,0.625,0.5,0.375,0.25] [--layer-sets "default;1,2,3"]
           [--routers learned,oracle,random] [--repeats 3] [--threads 2]
           [--out bench/mod/clinc150_sweep.json] [--svg FILE] [--dry-run] [--plot-only JSON]
The model directory itself is left as it is (skim.* and *.md are not linked).
--dry-run runs no skim binary and fakes their output, to test this script.
"""

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.dont_write_bytecode = True
from plot_svg import line_chart  # noqa: E402

CLINC = "/work/shared/data/clinc150/data_full.json"
WORK = None  # the scratch directory, named when a command fails
# Plot styles: colour and marker by scorer; dash and hollow markers by layer set.
ROUTER_STYLE = {"learned": ("#0072b2", "circle"), "oracle": ("#009e73", "square"), "random": ("#d55e00", "triangle"),
                "uniform": ("#cc79a7", "diamond")}


# What to vary: how a budget reaches skim-calibrate, which scorers skim-eval has,
# where skim-eval reports the package, which FLOPs the x axis counts.
# "variants" are MoD's routed layer sets and ACM's learner counts.
def _mod_calibrate(budget, layer_set, kind):
    args = ["--mod-flops" if kind == "flops" else "--mod-capacity", repr(budget)]
    return args + ([] if layer_set == "default" else ["--mod-layers", layer_set])


def _acm_calibrate(budget, variant, kind):
    """ACM variants: "default" or a learner count, "+refit" for --acm-refit."""
    learners, refit = variant.split("+")[0], variant.endswith("+refit")
    return (["--acm-budget", repr(budget)] + ([] if learners == "default" else ["--acm-learners", learners]) +
            (["--acm-refit"] if refit else []))


def _acm_variant_name(v, pkg):
    if v.startswith("package:"):  # trained learners, named by their directory
        return "trained: " + os.path.basename(os.path.normpath(v[len("package:"):]))
    learners = (pkg or {}).get("learners", v.split("+")[0]) if v.startswith("default") else v.split("+")[0]
    return "%s learners%s" % (learners, ", refit" if v.endswith("+refit") else "")


METHODS = {
    "mod": {"calibrate": _mod_calibrate, "router_args": lambda r: ["--mod-router", r], "off": ["--mod", "off"],
            "routers": "learned,oracle,random", "untimed": {"oracle"}, "package": "mod",
            "budgets": "0.875,0.75,0.625,0.5,0.375,0.25", "layer_sets": "default;1,2,3",
            # The routed blocks may differ by budget (greedy allocation), so the
            # series is named by the eligible set asked for.
            "variant_name": lambda v, pkg: "layers " + v if v != "default" else "default layers",
            "flops": ("transformer_flops", "transformer_dense_flops"), "x_label": "executed FLOPs share (transformer)",
            "calibrate_once": False},
    # The gates are fitted once per learner count: the package's budget grid
    # serves every budget (skim-eval --acm-budget), as at run time.
    "acm": {"calibrate": _acm_calibrate, "router_args": lambda r: ["--acm-gate", r], "off": ["--acm", "off"],
            "routers": "learned,oracle,uniform", "untimed": {"oracle"}, "package": "acm",
            "budgets": "0.9,0.8,0.7,0.6,0.5,0.4,0.3", "layer_sets": "default;8",
            "variant_name": _acm_variant_name,
            "flops": ("transformer_ffn_flops", "transformer_dense_ffn_flops"), "x_label": "executed FLOPs share (FFNs)",
            "calibrate_once": True, "budget_args": lambda b: ["--acm-budget", repr(b)]},
}


# How to read quality: the data, the fields kept, the one plotted, the tolerance line.
def _clinc_prepare(work):
    tsv = os.path.join(work, "tsv")
    cli([sys.executable, os.path.join(HERE, "..", "fixtures", "clinc150_to_tsv.py"), "--json", CLINC, "--out", tsv])
    return {"calib": ["--calib", os.path.join(tsv, "val.tsv")],
            "eval": ["--data", os.path.join(tsv, "test.tsv"), "--no-router"]}


# A decoder on TinyStories: the gates fit on the first 500 validation
# stories, perplexity is measured on the other 500.
STORIES = "/work/shared/data/tinystories/tinystories_valid_first1000.txt"


def _stories_prepare(work):
    with open(STORIES) as f:
        docs = [d.strip() for d in f.read().split("<|endoftext|>") if d.strip()]
    paths = {}
    for name, part in (("calib", docs[:500]), ("eval", docs[500:])):
        paths[name] = os.path.join(work, "stories_%s.txt" % name)
        with open(paths[name], "w") as f:
            f.write("\n<|endoftext|>\n".join(part) + "\n")
    return {"calib": ["--text", paths["calib"]], "eval": ["--perplexity", paths["eval"]]}


TASKS = {
    "clinc150": {"prepare": _clinc_prepare, "quality": ["accuracy", "in_scope_accuracy", "oos_recall"],
                 "primary": "accuracy", "higher_is_better": True, "method": "mod",
                 "ref_line": lambda dense: (dense - 0.01, "dense \u2212 1 point"),
                 "title": "Mixture-of-Depths on CLINC150 (test)"},
    "clinc150-acm": {"prepare": _clinc_prepare, "quality": ["accuracy", "in_scope_accuracy", "oos_recall"],
                     "primary": "accuracy", "higher_is_better": True, "method": "acm",
                     "ref_line": lambda dense: (dense - 0.01, "dense \u2212 1 point"),
                     "title": "Adaptive Computation Modules on CLINC150 (test)"},
    "stories-mod": {"prepare": _stories_prepare, "quality": ["perplexity"], "primary": "perplexity",
                    "higher_is_better": False, "method": "mod",
                    "ref_line": lambda dense: (dense * 1.03, "dense + 3%"),
                    "title": "Post-hoc MoD, stories260K (TinyStories val)"},
    "stories-acm": {"prepare": _stories_prepare, "quality": ["perplexity"], "primary": "perplexity",
                    "higher_is_better": False, "method": "acm",
                    "ref_line": lambda dense: (dense * 1.03, "dense + 3%"),
                    "title": "ACM, stories260K (TinyStories val)"},
}


def cli(cmd, dry=None):
    """Run a command; on failure print it with its stderr and exit 1. dry: fake stdout instead."""
    if dry is not None:
        print("  [dry] " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
        return dry
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        sys.exit("sweep.py: cannot run %s: %s" % (cmd[0], e))
    if p.returncode != 0:
        sys.stderr.write("sweep.py: command failed (exit %d):\n  %s\n--- stderr ---\n%s--- stdout (end) ---\n%s\n"
                         "(scratch directory left in %s)\n" % (p.returncode, " ".join(shlex.quote(c) for c in cmd),
                                                               p.stderr, p.stdout[-2000:], WORK))
        sys.exit(1)
    return p.stdout


def parse_json(text, cmd):
    try:
        return json.loads(text[text.index("{"):])
    except ValueError as e:
        sys.exit("sweep.py: %s printed no JSON object (%s):\n%s" % (cmd[0], e, text[-2000:]))


def link_model(src, dst, package=None):
    """The model's files linked into dst (a single-file model: that file;
    returns its path), and `package`'s skim.json / skim.safetensors copied in
    (a single file's: <file>.skim.json / .skim.safetensors)."""
    os.makedirs(dst)
    if os.path.isfile(src):
        name = os.path.basename(src)
        os.symlink(os.path.abspath(src), os.path.join(dst, name))
        for suffix in (".skim.json", ".skim.safetensors") if package else ():
            shutil.copy(os.path.join(package, name + suffix), os.path.join(dst, name + suffix))
        return os.path.join(dst, name)
    for name in os.listdir(src):
        if not name.startswith("skim.") and not name.endswith(".md"):
            os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(dst, name))
    for name in ("skim.json", "skim.safetensors") if package else ():
        shutil.copy(os.path.join(package, name), os.path.join(dst, name))
    return dst


def fake_eval(router, budget, layer_set, seed, repeat):
    """What skim-eval might print, for --dry-run: 4 layers, the default routes layer 2."""
    rng, clock = random.Random(seed), random.Random(seed * 31 + repeat + 1)
    layers = [2] if layer_set == "default" or "," not in layer_set else [int(x) for x in layer_set.split(",")]
    skipped = 0.0 if router is None else (1 - budget) * len(layers) / 4
    loss = {None: 0, "oracle": 0.01, "learned": 0.035, "random": 0.15, "uniform": 0.06}[router] * skipped * 4 / 3
    dense_t = 2.0e9
    acc = 0.935 - loss + rng.uniform(-0.002, 0.002)
    secs = 10.0 * (1.04 if router == "oracle" else 0.12 + 0.88 * (1 - 0.97 * skipped)) * clock.uniform(0.97, 1.05)
    return {"n": 5500, "accuracy": acc, "in_scope_accuracy": acc + 0.03, "oos_recall": 0.8 - 2 * loss,
            "perplexity": 5.2 * (1 + 5 * loss),
            "seconds": secs, "flops": dense_t * (1 - 0.97 * skipped), "dense_flops": dense_t,
            "transformer_flops": dense_t * (1 - 0.97 * skipped), "transformer_dense_flops": dense_t,
            "transformer_ffn_flops": 0.6 * dense_t * (1 - 0.97 * skipped), "transformer_dense_ffn_flops": 0.6 * dense_t,
            "mod": None if router is None else
            {"router": router, "layers": [{"layer": l, "capacity": budget} for l in layers]},
            "acm": None if router is None else {"gate": router, "layers": layers, "learners": 4, "budget": budget}}


def evaluate(cmd, repeats, quality, dry):
    runs = [parse_json(cli(cmd, json.dumps(dry(i)) if dry else None), cmd) for i in range(repeats)]
    for r in runs[1:]:
        if any(r.get(k) != runs[0].get(k) for k in quality):
            print("sweep.py: warning: quality differs between repeats of %s" % " ".join(cmd), file=sys.stderr)
    secs = [r["seconds"] for r in runs]
    return runs[0], {"median": statistics.median(secs), "min": min(secs), "max": max(secs), "all": secs}


def flops_share(r, keys=("transformer_flops", "transformer_dense_flops")):
    if keys[0] not in r or not r.get(keys[1]):
        sys.exit("sweep.py: skim-eval output lacks %s / %s" % keys)
    return r[keys[0]] / r[keys[1]]


def machine_note():
    note = {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            note["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
        git = ["git", "-C", REPO]
        note["git"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        note["git_dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "-uno"],
                                                capture_output=True, text=True).stdout.strip())
    except (OSError, StopIteration):
        pass
    return note


def row(label, budget, router, values, secs, cal):
    f = lambda v: ("%.4f" % v).rjust(7) if isinstance(v, (int, float)) else "-".rjust(7)
    return "%-8s %6s %-8s %s %7.2f (%.2f-%.2f) %s" % (
        label, budget, router, " ".join(f(v) for v in values), secs["median"], secs["min"], secs["max"],
        "%7.1f" % cal if cal is not None else "      -")


def plot(res, svg):
    task = TASKS[res["task"]]
    key, dense = task["primary"], res["dense"]
    ref_y, ref_name = task["ref_line"](dense[key])
    method = METHODS[res["method"]]
    series, sets, pkg_key = {}, [], method["package"]
    for p in res["points"]:
        if p["layer_set"] not in sets:
            sets.append(p["layer_set"])
        name = "%s, %s" % (p["router"], method["variant_name"](p["layer_set"], p.get(pkg_key)))
        name = next((n for n, s in series.items() if s["key"] == (p["router"], p["layer_set"])), name)
        color, marker = ROUTER_STYLE.get(p["router"], (None, None))
        k = sets.index(p["layer_set"])
        style = {"color": color, "marker": marker, "dash": ["", "7,4", "2,3"][k % 3], "fill": [None, "white"][k % 2]}
        s = series.setdefault(name, dict({"flops": [], "wall": [], "key": (p["router"], p["layer_set"])},
                                         **{k: v for k, v in style.items() if v is not None}))
        s["flops"].append((p["flops_share"], p[key]))
        s["wall"].append((p["wall_share"], p[key]))
    panels = []
    for axis, label in (("flops", method["x_label"]), ("wall", "wall-time share")):
        if axis == "wall" and not any(x is not None for s in series.values() for x, _ in s["wall"]):
            continue  # no valid wall time (e.g. a sweep on a busy machine; see the JSON's wall_note)
        panels.append({"x_label": label, "y_label": key.replace("_", " "),
                       "series": [dict({k: v for k, v in s.items() if k in ("color", "marker", "dash", "fill")},
                                       name=n, points=s[axis], sort=False) for n, s in series.items()
                                  if any(x is not None for x, _ in s[axis])],
                       "ref_points": [{"name": "dense", "x": 1.0, "y": dense[key]}],
                       "ref_lines": [{"name": ref_name, "y": ref_y}]})
    title = task["title"] + (" \u2014 DRY RUN, fake numbers" if res.get("dry_run") else "")
    line_chart(panels, title, svg)
    print("wrote %s" % svg)


def save(res, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (required unless --plot-only)")
    ap.add_argument("--task", default="clinc150", choices=sorted(TASKS))
    ap.add_argument("--build", default="build")
    ap.add_argument("--budgets", help="budgets, comma-separated (default: the method's)")
    ap.add_argument("--budget-kind", default="capacity", choices=["capacity", "flops"],
                    help="capacity: --mod-capacity (token share); flops: --mod-flops (dense FLOPs share)")
    ap.add_argument("--layer-sets", help='";"-separated: "default" or a --mod-layers list (default "default;1,2,3")')
    ap.add_argument("--routers", help="token scorers (default learned,oracle,random)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", help="JSON results (default bench/mod/<task>_sweep.json; dry run: in the scratch dir)")
    ap.add_argument("--svg", help="SVG plot (default: the JSON's name with .svg)")
    ap.add_argument("--dry-run", action="store_true", help="run no skim binary; fake their output")
    ap.add_argument("--plot-only", metavar="JSON", help="only redraw the SVG from an earlier sweep's JSON")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args()
    if a.plot_only:
        with open(a.plot_only) as f:
            plot(json.load(f), a.svg or os.path.splitext(a.plot_only)[0] + ".svg")
        return
    if not a.model:
        ap.error("--model is required")
    task = TASKS[a.task]
    method = METHODS[task["method"]]
    budgets = [float(b) for b in (a.budgets or method["budgets"]).split(",")]
    layer_sets = [s.strip() for s in (a.layer_sets or method["layer_sets"]).split(";") if s.strip()]
    for s in layer_sets:
        if task["method"] == "acm":
            if not (s.startswith("package:") or s.split("+")[0] == "default" or s.split("+")[0].isdigit()):
                ap.error("--layer-sets: %r is not 'default', a learner count (either with +refit) or package:DIR" % s)
        elif s != "default" and not all(x.strip().isdigit() for x in s.split(",")):
            ap.error("--layer-sets: %r is neither 'default' nor a comma-separated list of layers" % s)
    routers = (a.routers or method["routers"]).split(",")
    calibrate = os.path.join(a.build, "examples/skim-calibrate/skim-calibrate")
    evaluate_bin = os.path.join(a.build, "examples/skim-eval/skim-eval")
    if not a.dry_run:
        for b in (calibrate, evaluate_bin):
            if not os.access(b, os.X_OK):
                sys.exit("sweep.py: %s not found; build skim first (--build DIR)" % b)
    global WORK
    work = WORK = tempfile.mkdtemp(prefix="skim-%s-sweep-" % task["method"])
    out = a.out or (os.path.join(work, "%s_sweep.json" % a.task) if a.dry_run
                    else os.path.join(REPO, "bench", task["method"], "%s_sweep.json" % a.task))
    svg = a.svg or os.path.splitext(out)[0] + ".svg"
    threads = ["--threads", a.threads]
    files = task["prepare"](work)
    res = {"task": a.task, "method": task["method"], "command": " ".join(shlex.quote(x) for x in sys.argv),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_note(), "dry_run": a.dry_run,
           "budget_kind": a.budget_kind, "repeats": a.repeats, "threads": int(a.threads), "dense": None, "points": []}
    print("%-8s %6s %-8s %s %s" % ("layers", "budget", "router", " ".join(
        k[:7].rjust(7) for k in task["quality"] + ["flops", "wall"]), "median s (min-max) calib s"), flush=True)

    dense_dir = link_model(a.model, os.path.join(work, "dense"))
    cmd = [evaluate_bin, "--model", dense_dir] + files["eval"] + method["off"] + threads
    r, secs = evaluate(cmd, a.repeats, task["quality"], a.dry_run and (lambda i: fake_eval(None, 1, "default", 0, i)))
    if r.get(method["package"]) is not None:
        print("sweep.py: warning: the dense run reports a %s package" % method["package"], file=sys.stderr)
    res["dense"] = dict({k: r.get(k) for k in task["quality"]}, seconds=secs, flops_share=flops_share(r, method["flops"]),
                        wall_share=1.0, transformer_flops=r["transformer_flops"],
                        transformer_dense_flops=r["transformer_dense_flops"], flops=r.get("flops"),
                        dense_flops=r.get("dense_flops"), n=r.get("n"))
    print(row("dense", "-", "-", [r.get(k) for k in task["quality"]] + [1.0, 1.0], secs, None), flush=True)
    save(res, out)

    for li, layer_set in enumerate(layer_sets):
        for bi, budget in enumerate(budgets):
            if layer_set.startswith("package:"):  # made elsewhere (e.g. distilled): no calibration
                if bi == 0:
                    model = link_model(a.model, os.path.join(work, "m%d" % li), layer_set[len("package:"):])
                    cal_out, cal_s = "package " + layer_set[len("package:"):], None
            elif bi == 0 or not method["calibrate_once"]:
                model = link_model(a.model, os.path.join(work, "m%d_%d" % (li, bi)))
                cmd = [calibrate, "--model", model] + files["calib"] + method["calibrate"](budget, layer_set, a.budget_kind)
                t0 = time.time()
                cal_out = cli(cmd + threads, "" if a.dry_run else None)
                cal_s = time.time() - t0
            for ri, router in enumerate(routers):
                timed = router not in method["untimed"]
                cmd = [evaluate_bin, "--model", model] + files["eval"] + method["router_args"](router) + threads
                if method["calibrate_once"]:
                    cmd += method["budget_args"](budget)
                fake = a.dry_run and (lambda i: fake_eval(router, budget, layer_set, 1000 * li + 10 * bi + ri + 1, i))
                r, secs = evaluate(cmd, a.repeats if timed else 1, task["quality"], fake)
                pkg = r.get(method["package"])
                if not pkg:
                    print("sweep.py: warning: skim-eval reports no %s package for %s" % (method["package"], model),
                          file=sys.stderr)
                elif pkg.get("router", pkg.get("gate")) != router:
                    print("sweep.py: warning: asked for router %s, skim-eval reports %s"
                          % (router, pkg.get("router", pkg.get("gate"))), file=sys.stderr)
                fs = flops_share(r, method["flops"])
                ws = secs["median"] / res["dense"]["seconds"]["median"] if timed else None
                res["points"].append(dict(
                    {k: r.get(k) for k in task["quality"]}, layer_set=layer_set, budget=budget, router=router,
                    flops_share=fs, wall_share=ws, seconds=secs, timed=timed, calibrate_seconds=cal_s,
                    calibrate_summary=cal_out.strip().splitlines()[-5:], transformer_flops=r["transformer_flops"],
                    transformer_dense_flops=r["transformer_dense_flops"], flops=r.get("flops"),
                    dense_flops=r.get("dense_flops")))
                res["points"][-1][method["package"]] = pkg
                label = "package" if layer_set.startswith("package:") else layer_set[:8]
                print(row(label, budget, router, [r.get(k) for k in task["quality"]] + [fs, ws], secs,
                          cal_s if ri == 0 and (bi == 0 or not method["calibrate_once"]) else None), flush=True)
                save(res, out)
    res["machine"]["loadavg_end"] = os.getloadavg()
    save(res, out)
    print("wrote %s" % out)
    plot(res, svg)
    if a.keep:
        print("scratch directory kept: %s" % work)
    else:
        shutil.rmtree(os.path.join(work, "tsv"), ignore_errors=True)
        for d in os.listdir(work):
            if os.path.isdir(os.path.join(work, d)):
                shutil.rmtree(os.path.join(work, d))
        if not os.listdir(work):
            os.rmdir(work)


if __name__ == "__main__":
    main()
