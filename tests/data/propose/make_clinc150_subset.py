#!/usr/bin/env python3
"""Cut the CLINC150 subset the n-gram classifier tests train on.

20 intents (confusable groups on purpose: balance / bill_balance / pay_bill /
transfer, alarm / timer / reminder, time / weather, book_flight / book_hotel /
flight_status, recipe / calories / cook_time) with all their `train`
utterances plus `oos_train` as label `oos`, and the same intents' `val`
utterances plus `oos_val` as the held-out file. One `text<TAB>label` per line,
in the source order; tabs and newlines in utterances become spaces.

Usage: make_clinc150_subset.py [--json /work/shared/data/clinc150/data_full.json] [--out DIR]
"""

import argparse
import json
import os

INTENTS = [
    "alarm", "balance", "bill_balance", "book_flight", "book_hotel", "calories", "cook_time",
    "definition", "flight_status", "freeze_account", "pay_bill", "recipe", "reminder",
    "report_lost_card", "smart_home", "time", "timer", "transfer", "translate", "weather",
]


def clean(text):
    return " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


def write(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for text, label in rows:
            f.write(clean(text) + "\t" + label + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="/work/shared/data/clinc150/data_full.json")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    with open(args.json, encoding="utf-8") as f:
        data = json.load(f)
    keep = set(INTENTS)
    write(os.path.join(args.out, "clinc150_subset_train.tsv"),
          [r for r in data["train"] if r[1] in keep] + data["oos_train"])
    write(os.path.join(args.out, "clinc150_subset_heldout.tsv"),
          [r for r in data["val"] if r[1] in keep] + data["oos_val"])


if __name__ == "__main__":
    main()
