#!/usr/bin/env bash
# skim-calibrate and skim-eval as a user drives them: calibrate a copy of the
# CLINC150 model on the 20-intent test subset, evaluate it, and bad input.
#   skim_calibrate.sh CALIBRATE_BINARY EVAL_BINARY MODEL_DIR DATA_DIR
set -uo pipefail
calibrate=$1 eval=$2 model=$3 data=$4
passed=0 failed=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/model"
for f in config.json model.safetensors vocab.txt; do ln -s "$(realpath "$model/$f")" "$tmp/model/$f"; done
train=$data/propose/clinc150_subset_train.tsv heldout=$data/propose/clinc150_subset_heldout.tsv

"$calibrate" --model "$tmp/model" --train "$train" --calib "$heldout" --epsilon 0.1 --threads 2 >"$tmp/out" 2>"$tmp/err"
check "calibrate exit 0" test $? -eq 0
check "calibrate summary" grep -qE '^(certified|not certified):' "$tmp/out"
check "calibrate says what it wrote" grep -q "skim.json" "$tmp/out"
check "calibrate shows progress" grep -q "running the transformer" "$tmp/err"
check "skim.json written" test -s "$tmp/model/skim.json"
check "skim.safetensors written" test -s "$tmp/model/skim.safetensors"

"$eval" --model "$tmp/model" --data "$heldout" --threads 2 >"$tmp/eval.json" 2>"$tmp/err"
check "eval exit 0" test $? -eq 0
for field in n accuracy transformer_accuracy transformer_calls call_rate accepted accepted_disagreements flops \
             dense_flops seconds transformer_only_seconds; do
  check "eval has $field" grep -q "\"$field\":" "$tmp/eval.json"
done
check "eval n 500" grep -q '"n": 500' "$tmp/eval.json"
"$eval" --model "$tmp/model" --data "$heldout" --no-router >"$tmp/dense.json" 2>"$tmp/err"
check "eval no-router call rate 1" grep -q '"call_rate": 1.0' "$tmp/dense.json"

# Mixture-of-Depths: routers alone (no --train), then evaluated with and without.
mkdir "$tmp/mod"
for f in config.json model.safetensors vocab.txt; do ln -s "$(realpath "$model/$f")" "$tmp/mod/$f"; done
"$calibrate" --model "$tmp/mod" --calib "$heldout" --mod-capacity 0.5 --mod-layers 1,2,3 --threads 2 >"$tmp/out" 2>"$tmp/err"
check "mod calibrate exit 0" test $? -eq 0
check "mod calibrate summary" grep -qE '^mod: [0-9]+ routed blocks' "$tmp/out"
"$eval" --model "$tmp/mod" --data "$heldout" --no-router --threads 2 >"$tmp/mod.json" 2>"$tmp/err"
check "mod eval exit 0" test $? -eq 0
check "mod eval names the router" grep -q '"router": "learned"' "$tmp/mod.json"
check "mod eval has transformer_dense_flops" grep -q '"transformer_dense_flops":' "$tmp/mod.json"
python3 - "$tmp/mod.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["transformer_flops"] < j["transformer_dense_flops"], "MoD executed no fewer FLOPs"
PY
check "mod eval executes fewer FLOPs" test $? -eq 0
"$eval" --model "$tmp/mod" --data "$heldout" --no-router --mod off >"$tmp/off.json" 2>"$tmp/err"
check "mod off eval" grep -q '"mod": null' "$tmp/off.json"
"$eval" --model "$tmp/mod" --data "$heldout" --no-router --mod-capacity 1.5 >"$tmp/out" 2>"$tmp/err"
check "bad mod capacity exit 2" test $? -eq 2
check "bad mod capacity named" grep -q 'outside (0, 1\]' "$tmp/err"
"$calibrate" --model "$tmp/mod" --calib "$heldout" >"$tmp/out" 2>"$tmp/err"
check "no train, no mod exit 2" test $? -eq 2
check "no train, no mod explained" grep -q -- '--train is required' "$tmp/err"

# ACM gates, with the MoD routers, in one command; the eval reports FFN FLOPs.
mkdir "$tmp/acm"
for f in config.json model.safetensors vocab.txt; do ln -s "$(realpath "$model/$f")" "$tmp/acm/$f"; done
"$calibrate" --model "$tmp/acm" --calib "$heldout" --mod-capacity 0.5 --mod-layers 1,2,3 --acm-budget 0.5 --threads 2 \
  >"$tmp/out" 2>"$tmp/err"
check "acm calibrate exit 0" test $? -eq 0
check "acm calibrate summary" grep -qE '^acm: 4 adaptive FFNs of 4 learners' "$tmp/out"
"$eval" --model "$tmp/acm" --data "$heldout" --no-router --threads 2 >"$tmp/acm.json" 2>"$tmp/err"
check "acm eval exit 0" test $? -eq 0
python3 - "$tmp/acm.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["acm"]["gate"] == "learned" and j["acm"]["learners"] == 4, j["acm"]
assert j["mod"] is not None, "the MoD routers are gone"
assert j["transformer_ffn_flops"] < 0.8 * j["transformer_dense_ffn_flops"], "ACM executed no fewer FFN FLOPs"
PY
check "acm eval executes fewer FFN FLOPs" test $? -eq 0
"$eval" --model "$tmp/acm" --data "$heldout" --no-router --acm off >"$tmp/off.json" 2>"$tmp/err"
check "acm off eval" grep -q '"acm": null' "$tmp/off.json"
"$eval" --model "$tmp/acm" --data "$heldout" --no-router --acm-budget 0 >"$tmp/out" 2>"$tmp/err"
check "bad acm budget exit 2" test $? -eq 2
check "bad acm budget named" grep -q 'outside (0, 1\]' "$tmp/err"
"$calibrate" --model "$tmp/acm" --calib "$heldout" --acm-budget 1.2 >"$tmp/out" 2>"$tmp/err"
check "bad calibrate acm budget exit 2" test $? -eq 2
check "bad calibrate acm budget named" grep -q 'ACM budget 1.2.* is outside (0, 1\]' "$tmp/err"

# Decoders: perplexity of a text file, with the native MoD model's routing and without.
story="$data/models/stories260K/expected_greedy_from_bos_256.txt"
"$eval" --model "$data/models/stories-mod-native" --perplexity "$story" --threads 2 >"$tmp/ppl.json" 2>"$tmp/err"
check "perplexity eval exit 0" test $? -eq 0
"$eval" --model "$data/models/stories-mod-native" --perplexity "$story" --mod off >"$tmp/ppl_off.json" 2>"$tmp/err"
python3 - "$tmp/ppl.json" "$tmp/ppl_off.json" <<'PY'
import json, math, sys
on, off = (json.load(open(f)) for f in sys.argv[1:3])
assert on["documents"] == 1 and on["tokens"] > 100, on
assert 1 < on["perplexity"] < 100, on["perplexity"]
assert [b["layer"] for b in on["mod"]["layers"]] == [1, 3, 5], on["mod"]
assert on["transformer_flops"] < 0.8 * on["transformer_dense_flops"], "native MoD executed no fewer FLOPs"
assert off["transformer_flops"] >= off["transformer_dense_flops"], "--mod off still skipped blocks"
PY
check "perplexity eval reports routed and dense costs" test $? -eq 0
# Decoders: ACM gates fitted on plain text, written beside the GGUF file, used by skim-eval.
cp "$data/models/stories260K/stories260K.gguf" "$tmp/"
"$calibrate" --model "$tmp/stories260K.gguf" --text "$data/tinystories/valid_first100.txt" --acm-budget 0.6 \
    --threads 2 >"$tmp/out" 2>"$tmp/err"
check "calibrate --text exit 0" test $? -eq 0
check "calibrate --text summary" grep -q '^acm: 5 adaptive FFNs of 4 learners' "$tmp/out"
check "calibrate --text package beside the file" test -s "$tmp/stories260K.gguf.skim.json"
"$eval" --model "$tmp/stories260K.gguf" --perplexity "$story" --threads 2 >"$tmp/ppl_acm.json" 2>"$tmp/err"
check "perplexity with ACM exit 0" test $? -eq 0
"$eval" --model "$tmp/stories260K.gguf" --perplexity "$story" --acm off >"$tmp/ppl_dense.json" 2>"$tmp/err"
python3 - "$tmp/ppl_acm.json" "$tmp/ppl_dense.json" <<'PY'
import json, sys
acm, dense = (json.load(open(f)) for f in sys.argv[1:3])
assert acm["acm"]["layers"] == [0, 1, 2, 3, 4] and acm["acm"]["budget"] == 0.6, acm["acm"]
assert dense["acm"] is None and dense["transformer_ffn_flops"] == dense["transformer_dense_ffn_flops"], dense
assert acm["transformer_ffn_flops"] < 0.8 * acm["transformer_dense_ffn_flops"], "ACM executed no fewer FFN FLOPs"
assert acm["perplexity"] > dense["perplexity"], (acm["perplexity"], dense["perplexity"])
PY
check "perplexity with ACM reports FFN FLOPs against dense" test $? -eq 0
# A model file named relative to the working directory; MoD routers with
# capacity allocated across blocks.
mkdir "$tmp/here" && cp "$data/models/stories260K/stories260K.gguf" "$tmp/here/"
(cd "$tmp/here" && "$(realpath "$calibrate")" --model stories260K.gguf --text "$(realpath "$data")/tinystories/valid_first100.txt" \
  --mod-capacity 0.75 --threads 2 >"$tmp/out" 2>"$tmp/err")
check "calibrate --text, model in the working directory, exit 0" test $? -eq 0
check "calibrate --text, model in the working directory, package beside it" test -s "$tmp/here/stories260K.gguf.skim.json"
check "calibrate --text MoD summary" grep -qE '^mod: [0-9]+ routed blocks' "$tmp/out"
"$calibrate" --model "$tmp/stories260K.gguf" --text "$data/tinystories/valid_first100.txt" >"$tmp/out" 2>"$tmp/err"
check "calibrate --text without a target exit 2" test $? -eq 2
check "calibrate --text without a target named" grep -q -- '--text needs --mod-capacity or --acm-budget' "$tmp/err"
"$calibrate" --model "$tmp/model" --text "$data/tinystories/valid_first100.txt" --acm-budget 0.5 >"$tmp/out" 2>"$tmp/err"
check "calibrate --text on an encoder exit 2" test $? -eq 2
check "calibrate --text on an encoder named" grep -q 'is an encoder' "$tmp/err"

"$eval" --model "$model" --perplexity "$story" >"$tmp/out" 2>"$tmp/err"
check "perplexity on an encoder exit 2" test $? -eq 2
check "perplexity on an encoder named" grep -q 'needs a decoder' "$tmp/err"

# Bad input: one line on stderr, exit code 2, naming what is wrong.
printf 'turn on the lights\n' >"$tmp/nolabel.tsv"
"$calibrate" --model "$tmp/model" --train "$tmp/nolabel.tsv" --calib "$heldout" >"$tmp/out" 2>"$tmp/err"
check "missing label exit 2" test $? -eq 2
check "missing label named" grep -q "nolabel.tsv:1: no label column" "$tmp/err"
printf 'turn on the lights\tlights_on_please\n' >"$tmp/unknown.tsv"
"$calibrate" --model "$tmp/model" --train "$train" --calib "$tmp/unknown.tsv" >"$tmp/out" 2>"$tmp/err"
check "unknown label exit 2" test $? -eq 2
check "unknown label named" grep -q 'lights_on_please' "$tmp/err"
"$calibrate" --model "$tmp/model" --train "$train" --calib "$heldout" --epsilon 1.5 >"$tmp/out" 2>"$tmp/err"
check "bad epsilon exit 2" test $? -eq 2
check "bad epsilon one line" test "$(wc -l <"$tmp/err")" -eq 1
"$eval" --model "$tmp/model" --data "$tmp/unknown.tsv" >"$tmp/out" 2>"$tmp/err"
check "eval unknown label exit 2" test $? -eq 2

echo "$passed passed, $failed failed"
test "$failed" -eq 0
