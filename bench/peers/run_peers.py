#!/usr/bin/python3
"""Driver for skim's encoder benchmark against its peers.

Runs, one after another (never concurrently, the machine has 2 cores):
  1. bert_peer.py  - PyTorch (Debian torch + OpenBLAS); also exports ONNX files
                     and the exact inputs / reference outputs into --scratch;
  2. ort_peer.mjs  - ONNX Runtime (onnxruntime-node) on those files and inputs;
  3. skim_bench    - skim's Google Benchmark binary, if --skim-bench exists;
then prints a table with per-peer median / min / p10-p90 (ms) and the ratio
skim / peer (below 1 = skim faster), plus ORT-vs-PyTorch output errors, and
writes everything as JSON to --out.

Cases and the skim benchmarks they are compared with (override: --skim-name):
  layer/B/S  one BERT-base layer, batch B, sequence S   <-> BM_BertBaseLayer/B/S/0 (f32)
  model/B    the --model over all --texts, in chunks of B
             sequences (given order, each chunk padded
             to its longest), one pass = one sample     <-> BM_Model/B

  /usr/bin/python3 bench/peers/run_peers.py --skim-bench build/bench/skim_bench \\
      --model DIR --texts FILE [--threads 2] [--repeats 30] [--out report.json]
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOKENIZER_PY = os.path.join(REPO, "bench", "fixtures", "bert_tokenizer.py")
PEERS = ("pytorch", "onnxruntime")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--warmup", type=int, default=5, help="peer warm-up runs per case (default 5)")
    p.add_argument("--repeats", type=int, default=30, help="peer timed runs per case, >= 20 (default 30)")
    p.add_argument("--seq", type=int, default=128, help="layer sequence length (default 128)")
    p.add_argument("--layer-batches", default="1,8", help="layer batch sizes; empty = no layer cases (default 1,8)")
    p.add_argument("--model", default=os.environ.get("SKIM_BENCH_MODEL"),
                   help="Hugging Face BERT dir (default: $SKIM_BENCH_MODEL); no model = layer cases only")
    p.add_argument("--texts", default=os.environ.get("SKIM_BENCH_TEXTS"),
                   help="one utterance per line (default: $SKIM_BENCH_TEXTS)")
    p.add_argument("--ids", help="JSON list of input-id lists, instead of --texts")
    p.add_argument("--max-len", type=int, default=0,
                   help="truncate [CLS] pieces [SEP] to this many ids (default: max_position_embeddings)")
    p.add_argument("--model-batches", default="1,0",
                   help="whole-model chunk sizes, 0 = all texts in one batch (default 1,0, as skim_bench's BM_Model)")
    p.add_argument("--scratch", default="/tmp/skim-peers", help="scratch dir for ONNX files etc.")
    p.add_argument("--out", help="JSON report (default: SCRATCH/report.json)")
    p.add_argument("--skim-bench", help="path to skim's Google Benchmark binary (BUILD/bench/skim_bench)")
    p.add_argument("--skim-repetitions", type=int, default=20, help="--benchmark_repetitions (default 20)")
    p.add_argument("--skim-filter", help="override the --benchmark_filter regex")
    p.add_argument("--skim-name", action="append", default=[], metavar="CASE=BENCH",
                   help="compare CASE with skim benchmark BENCH, e.g. model/8=BM_Model/8 (repeatable)")
    p.add_argument("--skim-arg", action="append", default=[], help="extra argument for skim_bench (repeatable)")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch (it still exports ONNX for ORT)")
    p.add_argument("--no-ort", action="store_true", help="do not run ONNX Runtime")
    p.add_argument("--unset-openblas-coretype", action="store_true",
                   help="drop OPENBLAS_CORETYPE from the PyTorch peer's environment only "
                        "(to measure OpenBLAS at its own best kernel choice)")
    p.add_argument("--python", default="/usr/bin/python3", help="Python with torch (default /usr/bin/python3)")
    p.add_argument("--node", default="node")
    a = p.parse_args(argv)
    a.layer_batches_l = [int(x) for x in a.layer_batches.split(",") if x.strip()]
    a.model_batches_l = [int(x) for x in a.model_batches.split(",") if x.strip()]
    return a


def log(msg):
    print(f"[run_peers] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# tokenization

def load_vocab_list(model_dir):
    vt = os.path.join(model_dir, "vocab.txt")
    if os.path.exists(vt):
        with open(vt, encoding="utf-8") as f:
            return [ln.rstrip("\n") for ln in f], vt
    tj = os.path.join(model_dir, "tokenizer.json")
    if os.path.exists(tj):
        with open(tj, encoding="utf-8") as f:
            m = json.load(f)["model"]
        if m.get("type") not in (None, "WordPiece"):
            raise SystemExit(f"run_peers: {tj}: model type {m.get('type')} is not WordPiece")
        inv = sorted(m["vocab"].items(), key=lambda kv: kv[1])
        if [i for _, i in inv] != list(range(len(inv))):
            raise SystemExit(f"run_peers: {tj}: vocab ids are not 0..N-1")
        return [t for t, _ in inv], tj
    raise SystemExit(f"run_peers: {model_dir} has neither vocab.txt nor tokenizer.json")


def lower_case_flag(model_dir):
    tc = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.exists(tc):
        with open(tc) as f:
            v = json.load(f).get("do_lower_case")
        if v is not None:
            return bool(v)
    return True


class FallbackTokenizer:
    """Minimal stand-in: lower-case, strip accents, split on whitespace and
    punctuation, greedy longest-match WordPiece. Not the reference tokenizer."""

    def __init__(self, vocab, lower=True):
        self.tok2id = {t: i for i, t in enumerate(vocab)}
        self.lower = lower
        self.cls, self.sep, self.unk = (self.tok2id[t] for t in ("[CLS]", "[SEP]", "[UNK]"))

    def _words(self, text):
        if self.lower:
            text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        out = []
        for w in text.split():
            out += [x for x in re.split(r"([^\w\s]|_)", w) if x]
        return out

    def encode(self, text, max_len=None):
        ids = []
        for w in self._words(text):
            start, pieces = 0, []
            while start < len(w):
                end = len(w)
                while end > start:
                    sub = ("##" if start else "") + w[start:end]
                    if sub in self.tok2id:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.unk]
                    break
                pieces.append(self.tok2id[sub])
                start = end
            ids += pieces if len(w) <= 100 else [self.unk]
        if max_len is not None and len(ids) > max_len - 2:
            ids = ids[:max_len - 2]
        return [self.cls] + ids + [self.sep]


def tokenize(model_dir, texts_file, max_len):
    vocab, vocab_src = load_vocab_list(model_dir)
    lower = lower_case_flag(model_dir)
    with open(texts_file, encoding="utf-8") as f:
        # as skim_bench: every non-empty line (std::getline) is one text
        texts = [ln[:-1] if ln.endswith("\n") else ln for ln in f]
    texts = [t for t in texts if t]
    info = {"texts": os.path.abspath(texts_file), "vocab": vocab_src, "lower": lower, "max_len": max_len}
    tok = None
    if os.path.exists(TOKENIZER_PY):
        try:
            spec = importlib.util.spec_from_file_location("skim_bert_tokenizer", TOKENIZER_PY)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            tok = mod.BertTokenizer(vocab, lower=lower)
            ids = [tok.encode(t, max_len=max_len) for t in texts]
            info["tokenizer"] = os.path.relpath(TOKENIZER_PY, REPO)
        except Exception as e:  # API not as expected: say so, use the fallback
            log(f"bench/fixtures/bert_tokenizer.py unusable ({type(e).__name__}: {e}); using the fallback")
            info["tokenizer_error"] = f"{type(e).__name__}: {e}"
            tok = None
    if tok is None:
        tok = FallbackTokenizer(vocab, lower)
        ids = [tok.encode(t, max_len=max_len) for t in texts]
        info["tokenizer"] = "FALLBACK whitespace+punctuation+wordpiece (run_peers.py), not the reference tokenizer"
        log("WARNING: " + info["tokenizer"])
    lens = [len(s) for s in ids]
    info.update(n=len(ids), tokens=sum(lens), min_len=min(lens), max_len_seen=max(lens),
                mean_len=round(sum(lens) / len(lens), 2))
    return ids, info


# ---------------------------------------------------------------------------
# skim (Google Benchmark JSON)

_GB_SUFFIX = re.compile(r"^(real_time|manual_time|process_time|iterations:\d+|repeats:\d+|threads:\d+|"
                        r"min_time:[^/]*|min_warmup_time:[^/]*)$")
_UNIT = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def gb_base_name(name):
    parts = name.split("/")
    while len(parts) > 1 and _GB_SUFFIX.match(parts[-1]):
        parts.pop()
    return "/".join(parts)


def percentile(xs, p):
    s = sorted(xs)
    x = (len(s) - 1) * p / 100.0
    lo, hi = int(x), min(int(x) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def parse_gb(doc):
    """{base name: {median_ms (median aggregate), min/p10/p90 over repetitions}}."""
    runs, medians = {}, {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            runs.setdefault(gb_base_name(b.get("run_name", b["name"])), {"error": b.get("error_message")})
            continue
        base = gb_base_name(b.get("run_name", b["name"]))
        ms = float(b["real_time"]) * _UNIT[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[base] = ms
        else:
            runs.setdefault(base, {"samples": []}).setdefault("samples", []).append(ms)
    out = {}
    for base in set(runs) | set(medians):
        r = runs.get(base, {})
        if "error" in r and not r.get("samples"):
            out[base] = {"error": r["error"]}
            continue
        xs = r.get("samples", [])
        st = {"median_ms": medians.get(base, statistics.median(xs) if xs else None),
              "median_source": "median aggregate" if base in medians else "median of repetitions"}
        if xs:
            st.update(min_ms=min(xs), p10_ms=percentile(xs, 10), p90_ms=percentile(xs, 90), repeats=len(xs))
        out[base] = st
    return out


def run_skim(a, mapping, env_extra):
    res = {"binary": a.skim_bench, "status": None, "benchmarks": {}}
    if not a.skim_bench or not os.path.isfile(a.skim_bench) or not os.access(a.skim_bench, os.X_OK):
        res["status"] = ("skipped: no --skim-bench given" if not a.skim_bench else
                         f"skipped: {a.skim_bench} does not exist or is not executable (build it: "
                         "cmake --build BUILD --target skim_bench); peers are reported alone")
        log(res["status"])
        return res
    names = sorted(set(mapping.values()))
    filt = a.skim_filter or "^(" + "|".join(re.escape(n) for n in names) + ")(/|$)"
    out_json = os.path.join(a.scratch, "skim_bench.json")
    cmd = [a.skim_bench, "--benchmark_format=json", f"--benchmark_repetitions={a.skim_repetitions}",
           f"--benchmark_filter={filt}", f"--benchmark_out={out_json}", "--benchmark_out_format=json"] + a.skim_arg
    env = dict(os.environ)
    env.update(env_extra)
    res["command"] = cmd
    res["env"] = env_extra
    log("skim: " + " ".join(cmd))
    if os.path.exists(out_json):
        os.remove(out_json)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    res["returncode"] = p.returncode
    doc = None
    try:
        with open(out_json) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            pass
    if doc is None:
        res["status"] = f"failed: exit {p.returncode}, no JSON output"
        log("skim " + res["status"])
        return res
    res["context"] = doc.get("context", {})
    res["benchmarks"] = parse_gb(doc)
    missing = [n for n in names if n not in res["benchmarks"]]
    errors = {n: b["error"] for n, b in res["benchmarks"].items() if "error" in b}
    res["status"] = "ok" if p.returncode == 0 and not missing and not errors else \
        f"exit {p.returncode}; missing: {', '.join(missing) or 'none'}; " \
        f"errors: {'; '.join(f'{n}: {e}' for n, e in errors.items()) or 'none'}"
    if missing:
        log(f"skim: no result for {', '.join(missing)} (found: {', '.join(sorted(res['benchmarks'])) or 'none'})")
    return res


# ---------------------------------------------------------------------------

def run_json(cmd, env=None, what=""):
    log(f"{what}: " + " ".join(cmd))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        log(f"{what} failed with exit {p.returncode}")
        return None, p.returncode
    try:
        return json.loads(p.stdout), 0
    except ValueError:
        log(f"{what}: output is not JSON")
        return None, -1


def machine_info():
    info = {"platform": platform.platform(), "nproc": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    info["cpu"] = ln.split(":", 1)[1].strip()
                    break
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def fmt_stat(st):
    if not st or st.get("median_ms") is None:
        return "-"
    s = f"{st['median_ms']:.3f}"
    if st.get("p10_ms") is not None:
        s += f" [{st['p10_ms']:.2f}-{st['p90_ms']:.2f}]"
    return s


def main(a):
    os.makedirs(a.scratch, exist_ok=True)
    out_path = a.out or os.path.join(a.scratch, "report.json")
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine_info(), "threads": a.threads, "warmup": a.warmup, "repeats": a.repeats,
              "skim_repetitions": a.skim_repetitions, "cases": {}, "checks": {}, "notes": []}
    if report["machine"].get("loadavg_at_start", (0,))[0] > 0.5:
        msg = f"load average {report['machine']['loadavg_at_start'][0]:.2f} at start: timings are noisy"
        report["notes"].append(msg)
        log("WARNING: " + msg)

    # ---- inputs for the whole model -----------------------------------
    ids_path = None
    if a.model:
        if a.ids:
            ids_path = os.path.abspath(a.ids)
            report["inputs"] = {"ids": ids_path}
        elif a.texts:
            with open(os.path.join(a.model, "config.json")) as f:
                maxpos = int(json.load(f).get("max_position_embeddings", 512))
            max_len = a.max_len or maxpos
            ids, info = tokenize(a.model, a.texts, max_len)
            ids_path = os.path.join(a.scratch, "input_ids.json")
            with open(ids_path, "w") as f:
                json.dump(ids, f)
            info["ids"] = ids_path
            report["inputs"] = info
            log(f"tokenized {info['n']} texts with {info['tokenizer']}: {info['tokens']} ids, "
                f"lengths {info['min_len']}..{info['max_len_seen']}")
        else:
            log("--model given without --texts / --ids: whole-model cases skipped")
            report["notes"].append("model given without texts: whole-model cases skipped")
        report["model"] = os.path.abspath(a.model)

    cases = [f"layer/{b}/{a.seq}" for b in a.layer_batches_l]
    if ids_path:
        cases += [f"model/{b}" for b in a.model_batches_l]
    # skim's layer benchmark takes a third argument: 0 = f32 weights (as the peers), 1 = bf16.
    mapping = {c: ("BM_BertBaseLayer/" + c[len("layer/"):] + "/0" if c.startswith("layer/")
                   else "BM_Model/" + c[len("model/"):])
               for c in cases}
    for kv in a.skim_name:
        c, _, n = kv.partition("=")
        if c not in mapping:
            raise SystemExit(f"run_peers: --skim-name {kv}: no case {c} (cases: {', '.join(cases)})")
        mapping[c] = n
    report["skim_names"] = mapping

    # ---- PyTorch (+ ONNX export) ----------------------------------------
    peers = {}
    torch_cmd = [a.python, os.path.join(HERE, "bert_peer.py"), "--threads", str(a.threads), "--warmup", str(a.warmup),
                 "--repeats", str(a.repeats), "--seq", str(a.seq), "--layer-batches", a.layer_batches,
                 "--scratch", a.scratch, "--json", os.path.join(a.scratch, "pytorch.json")]
    if ids_path:
        torch_cmd += ["--model", a.model, "--ids", ids_path, "--model-batches", a.model_batches]
    if a.no_torch:
        torch_cmd += ["--no-time"]
    if a.no_torch and a.no_ort:
        torch_cmd = None
    env = dict(os.environ)
    if a.unset_openblas_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
        report["notes"].append("OPENBLAS_CORETYPE unset for the PyTorch peer")
    if torch_cmd:
        doc, rc = run_json(torch_cmd, env, "pytorch")
        report["pytorch_command"] = torch_cmd
        if doc is None:
            report["notes"].append(f"pytorch peer failed (exit {rc})")
        else:
            peers["pytorch"] = doc
            report["checks"].update(doc.get("checks", {}))

    # ---- ONNX Runtime ---------------------------------------------------
    if not a.no_ort and "pytorch" in peers:
        if shutil.which(a.node) is None:
            report["notes"].append(f"{a.node} not found: ONNX Runtime skipped")
            log(report["notes"][-1])
        else:
            ort_cmd = [a.node, os.path.join(HERE, "ort_peer.mjs"), "--scratch", a.scratch, "--threads", str(a.threads),
                       "--warmup", str(a.warmup), "--repeats", str(a.repeats),
                       "--json", os.path.join(a.scratch, "onnxruntime.json")]
            doc, rc = run_json(ort_cmd, None, "onnxruntime")
            report["onnxruntime_command"] = ort_cmd
            if doc is None:
                report["notes"].append(f"onnxruntime peer failed (exit {rc}); "
                                       f"did you run `npm install --ignore-scripts` in {HERE}?")
            else:
                peers["onnxruntime"] = doc
                report["checks"].update(doc.get("checks", {}))

    # ---- skim -------------------------------------------------------------
    env_extra = {"SKIM_BENCH_THREADS": str(a.threads)}
    if "OMP_NUM_THREADS" not in os.environ:
        env_extra["OMP_NUM_THREADS"] = str(a.threads)
    if a.model:
        env_extra["SKIM_BENCH_MODEL"] = os.path.abspath(a.model)
    if a.texts:
        env_extra["SKIM_BENCH_TEXTS"] = os.path.abspath(a.texts)
    if ids_path:
        env_extra["SKIM_BENCH_IDS"] = ids_path
    skim = run_skim(a, mapping, env_extra)
    report["skim"] = skim

    # ---- combine ------------------------------------------------------------
    for c in cases:
        row = {"skim_benchmark": mapping[c], "skim": skim["benchmarks"].get(mapping[c])}
        for peer in PEERS:
            st = peers.get(peer, {}).get("cases", {}).get(c)
            if peer == "pytorch" and a.no_torch:
                st = None
            row[peer] = st
            sk = row["skim"]
            if sk and sk.get("median_ms") and st and st.get("median_ms"):
                row[f"skim_over_{peer}"] = sk["median_ms"] / st["median_ms"]
            else:
                row[f"skim_over_{peer}"] = None
        report["cases"][c] = row
    report["peers"] = {k: {kk: vv for kk, vv in v.items() if kk != "cases"} for k, v in peers.items()}

    # ---- print ----------------------------------------------------------------
    w = max([len(c) for c in cases] + [8])
    cw = max([22] + [len(fmt_stat(report["cases"][c][k])) for c in cases for k in ("skim",) + PEERS])
    head = f"{'case':<{w}}  {'skim ms':>{cw}}  {'pytorch ms':>{cw}}  {'onnxruntime ms':>{cw}}  {'skim/pt':>8}  {'skim/ort':>8}"
    lines = ["", f"threads {a.threads}; median [p10-p90] in ms; ratio = skim median / peer median (< 1: skim faster)",
             head, "-" * len(head)]
    for c in cases:
        r = report["cases"][c]
        rat = lambda x: f"{x:8.3f}" if x is not None else f"{'-':>8}"  # noqa: E731
        lines.append(f"{c:<{w}}  {fmt_stat(r['skim']):>{cw}}  {fmt_stat(r['pytorch']):>{cw}}  "
                     f"{fmt_stat(r['onnxruntime']):>{cw}}  {rat(r['skim_over_pytorch'])}  {rat(r['skim_over_onnxruntime'])}")
    if skim["status"] != "ok":
        lines.append(f"skim: {skim['status']}")
    if report["checks"]:
        lines.append("")
        lines.append("output checks (max abs error; max rel = max abs / max |reference|):")
        for k, v in report["checks"].items():
            lines.append(f"  {k}: abs {v['max_abs_err']:.3g}, rel {v['max_rel_err']:.3g}")
    pt = report["peers"].get("pytorch")
    if pt:
        ob = pt.get("openblas", {})
        lines.append(f"pytorch {pt.get('torch_version')}, OpenBLAS: {ob.get('config')} "
                     f"(core {ob.get('corename')}, {ob.get('num_threads')} threads; "
                     f"OPENBLAS_CORETYPE={pt.get('env', {}).get('OPENBLAS_CORETYPE')})")
    ort = report["peers"].get("onnxruntime")
    if ort:
        lines.append(f"onnxruntime-node {ort.get('onnxruntime_node')} (opset {ort.get('opset')})")
    if report.get("inputs"):
        i = report["inputs"]
        if "n" in i:
            lines.append(f"model inputs: {i['n']} texts, {i['tokens']} ids, lengths {i['min_len']}..{i['max_len_seen']}, "
                         f"tokenizer {i['tokenizer']}")
    for n in report["notes"]:
        lines.append("note: " + n)
    print("\n".join(lines))
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    log(f"wrote {out_path}")
    return 0 if peers or skim["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
