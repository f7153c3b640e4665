"""Benchmark: an ensemble's predict time on new texts against one member's, as a server holds
them (models loaded once, every request new texts).

Members of a keyphrase ensemble that read the same frozen encoder layers share one encoder
pass per request (nnlab.models.contextual); the reference "members one after another" is the
sum of each member's own predict time on the same requests, which is what the ensemble cost
before that sharing.

    python benchmarks/predict_ensemble.py --texts ../shared/data/keyphrase/inspec/valid.txt \\
        --ensembles /tmp/eg/ens-0 /tmp/eg/ens-1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from provenance import write_result
from rich.console import Console
from rich.table import Table

from nnlab import ensemble
from nnlab.data.conll import read_conll
from nnlab.host import reference_speeds
from nnlab.tasks.loading import load_model, open_run

BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def requests(path: str, count: int, size: int) -> list[list[str]]:
    """`count` requests of `size` texts each, every text a different document of the file."""
    data = read_conll(path)
    texts = [" ".join(BRACKETS.get(t, t) for t in tokens) for tokens in data.tokens]
    if len(texts) < (count + 1) * size:
        raise SystemExit(f"{path}: {len(texts)} documents, {(count + 1) * size} needed")
    return [texts[i * size : (i + 1) * size] for i in range(count + 1)]


def seconds_per_request(predict: Callable[[list[str]], object], batches: list[list[str]]) -> float:
    predict(batches[-1])  # warm-up on texts the timed requests do not hold
    start = time.perf_counter()
    for texts in batches[:-1]:
        predict(texts)
    return (time.perf_counter() - start) / (len(batches) - 1)


def member_seconds(path: str, batches: list[list[str]]) -> float:
    """One run's predict time per request, its model loaded once."""
    run, _cfg, task = open_run(path, "cpu")
    model = load_model(run, task)
    options = task.predict_options.from_flags(task.name, {})
    return seconds_per_request(lambda t: task.predict(model, task.read_inputs(t, options), options),
                               batches)


def ensemble_seconds(combined: ensemble.Ensemble, batches: list[list[str]]) -> float:
    task = combined.task
    options = task.predict_options.from_flags(task.name, {})
    return seconds_per_request(lambda t: combined.predict(task.read_inputs(t, options), options),
                               batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", required=True, help="a CoNLL file whose documents are the texts")
    parser.add_argument("--ensembles", nargs="+", required=True)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--size", type=int, default=16, help="texts per request")
    parser.add_argument("--json", default="benchmarks/results/predict_ensemble.json")
    args = parser.parse_args()
    host = reference_speeds()
    batches = requests(args.texts, args.requests, args.size)
    rows, single_seconds = [], {}
    for path in args.ensembles:
        combined = ensemble.load(path, "cpu")
        members = []
        for m in combined.members:
            key = str(m.run.path)
            if key not in single_seconds:
                single_seconds[key] = member_seconds(key, batches)
            members.append(single_seconds[key])
        together = ensemble_seconds(combined, batches)
        rows.append({"ensemble": path, "rule": combined.rule, "members": len(members),
                     "seconds_per_request": round(together, 4),
                     "member_seconds_per_request": [round(s, 4) for s in members],
                     "vs_first_member": round(together / members[0], 2),
                     "members_one_after_another": round(sum(members) / members[0], 2)})

    table = Table(title=f"ensemble predict, {args.requests} requests of {args.size} new texts; "
                        f"{host['cpu']}, fp32 matmul {host['matmul_fp32_gflops']} GFLOP/s")
    for col in ("ensemble", "rule", "members", "s per request", "vs one member",
                "members one after another"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["ensemble"], r["rule"], str(r["members"]), f"{r['seconds_per_request']:.3f}",
                      f"{r['vs_first_member']:.2f}x", f"{r['members_one_after_another']:.2f}x")
    Console(width=150).print(table)
    write_result(args.json, host, args=vars(args), host=host, rows=rows)


if __name__ == "__main__":
    main()
