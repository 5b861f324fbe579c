#!/usr/bin/env python3
"""Where a replayed decode step spends its GPU time, from Chrome traces of qwha-serve-bench --trace.

  scripts/trace-summary.py DIR/trace-base.json DIR/trace-8qwha.json [--layer-kernels N]

For each trace: the kernels (and memory copies and sets) of every CUDA-graph replay, grouped by
the replay's correlation id; the last replays of the most common kernel count are the decode steps
summarized. Per step: its span (first kernel start to last kernel end), the time kernels run,
the gaps between them, and the time and count per category and per kernel name. The last section
sets the second trace against the first. Standard library only.
"""
import json
import sys
from collections import Counter, defaultdict

STEPS = 6  # decode steps summarized per trace (the last ones)

CATEGORIES = [  # first match wins
    ("adapter product", ("SpectrumApply",)),
    ("RMSNorm+FWHT", ("RmsNormFwht",)),
    ("FWHT", ("Fwht",)),
    ("RMSNorm", ("RmsNorm",)),
    ("GEMM", ("gemm", "gemv", "cutlass", "xmma", "nvjet", "cublas", "splitK", "Kernel2")),
    ("softmax", ("softmax", "Softmax")),
    ("copy/cat", ("copy", "Copy", "CatArray", "cat_")),
    ("index", ("index", "Index", "gather", "scatter", "embedding")),
    ("reduce", ("reduce", "Reduce")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "Elementwise")),
    ("memcpy/memset", ("Memcpy", "Memset", "memcpy", "memset")),
]


def category(name):
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other"


def short(name, width=70):
    name = name.replace("void ", "")
    return name if len(name) <= width else name[: width - 3] + "..."


def load_steps(path):
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    graph_launches = set()
    gpu = defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat", "")
        corr = (e.get("args") or {}).get("correlation")
        if cat == "cuda_runtime" and e.get("name", "").startswith("cudaGraphLaunch"):
            graph_launches.add(corr)
        elif cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu[corr].append((float(e["ts"]), float(e["dur"]), e.get("name", "?")))
    steps = [sorted(gpu[c]) for c in graph_launches if c in gpu]
    if not steps:
        sys.exit(f"{path}: no CUDA-graph replays with GPU events (was CUPTI loaded?)")
    common = Counter(len(s) for s in steps).most_common(1)[0][0]
    steps = sorted((s for s in steps if len(s) == common), key=lambda s: s[0][0])
    return steps[-STEPS:]


def summarize(path):
    steps = load_steps(path)
    n = len(steps)
    span = busy = 0.0
    by_cat = defaultdict(float)
    count_cat = Counter()
    by_name = defaultdict(float)
    count_name = Counter()
    for s in steps:
        span += s[-1][0] + s[-1][1] - s[0][0]
        end = s[0][0]
        for ts, dur, name in s:
            busy += max(0.0, ts + dur - max(ts, end))
            end = max(end, ts + dur)
            by_cat[category(name)] += dur
            count_cat[category(name)] += 1
            by_name[name] += dur
            count_name[name] += 1
    result = {
        "steps": n,
        "kernels": len(steps[0]),
        "span": span / n,
        "busy": busy / n,
        "cat": {k: v / n for k, v in by_cat.items()},
        "cat_count": {k: v / n for k, v in count_cat.items()},
        "name": {k: v / n for k, v in by_name.items()},
        "name_count": {k: v / n for k, v in count_name.items()},
        "last": steps[-1],
    }
    return result


def report(path, r, layer_kernels):
    print(f"== {path}: {r['steps']} decode steps of {r['kernels']} GPU events")
    print(
        f"   step span {r['span'] / 1e3:.3f} ms, kernels running {r['busy'] / 1e3:.3f} ms, "
        f"gaps {(r['span'] - r['busy']) / 1e3:.3f} ms"
    )
    print(f"   {'category':<18} {'us/step':>10} {'count':>7} {'us each':>9}")
    for cat, us in sorted(r["cat"].items(), key=lambda kv: -kv[1]):
        c = r["cat_count"][cat]
        print(f"   {cat:<18} {us:10.1f} {c:7.0f} {us / c:9.2f}")
    print(f"   top kernels: {'us/step':>10} {'count':>7} {'us each':>9}")
    for name, us in sorted(r["name"].items(), key=lambda kv: -kv[1])[:25]:
        c = r["name_count"][name]
        print(f"   {us:10.1f} {c:7.0f} {us / c:9.2f}  {short(name)}")
    if layer_kernels > 0:
        print(f"   the last step's kernels {layer_kernels} to {2 * layer_kernels} (gap before, duration us):")
        s = r["last"]
        for i in range(layer_kernels, min(len(s), 2 * layer_kernels)):
            ts, dur, name = s[i]
            gap = ts - (s[i - 1][0] + s[i - 1][1])
            print(f"   {gap:6.2f} {dur:7.2f}  {short(name)}")


def main(argv):
    layer_kernels = 0
    if "--layer-kernels" in argv:
        i = argv.index("--layer-kernels")
        layer_kernels = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    if len(argv) < 2:
        sys.exit(__doc__)
    results = []
    for path in argv[1:]:
        r = summarize(path)
        report(path, r, layer_kernels)
        results.append(r)
    if len(results) == 2:
        a, b = results
        print(f"== second against first (us per step; step span {b['span'] / a['span']:.3f}x)")
        print(f"   span {b['span'] - a['span']:+.1f}, kernels running {b['busy'] - a['busy']:+.1f}, "
              f"gaps {(b['span'] - b['busy']) - (a['span'] - a['busy']):+.1f}")
        for cat in sorted(set(a["cat"]) | set(b["cat"]), key=lambda c: -(b["cat"].get(c, 0) - a["cat"].get(c, 0))):
            d = b["cat"].get(cat, 0) - a["cat"].get(cat, 0)
            dc = b["cat_count"].get(cat, 0) - a["cat_count"].get(cat, 0)
            print(f"   {cat:<18} {d:+10.1f} us {dc:+7.0f} kernels")


if __name__ == "__main__":
    main(sys.argv)
