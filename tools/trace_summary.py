"""Where a profiled step's time goes: the device (or CPU) operations of a ``jax.profiler``
trace, summed by name, largest first.

  python -m lgla_jax.benchmark --config=... --synthetic --steps=10 --profile=PROF
  python tools/trace_summary.py PROF [--top=30] [--json]

Reads the newest ``perfetto_trace.json.gz`` under PROF (standard library only). Complete
events (``ph`` "X") are grouped by their thread's process (a GPU stream, a CPU thread pool)
and by name; the output gives, per process, the busy time, the number of events and the
top names with their share, so a step's time can be split into convolutions, fusions,
copies and idle gaps.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import sys


def load(folder: str) -> list[dict]:
  """The trace events of the newest Perfetto trace under ``folder``."""
  traces = sorted(pathlib.Path(folder).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
  if not traces:
    raise SystemExit(f"no perfetto_trace.json.gz under {folder}")
  with gzip.open(traces[-1]) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def summarise(events: list[dict], top: int = 30) -> dict:
  """``{process: {"busy_us", "events", "span_us", "top": [(name, us, count, share)]}}``."""
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  by_process = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
  spans = {}
  for e in events:
    if e.get("ph") != "X" or "dur" not in e:
      continue
    process = names.get(e["pid"], str(e["pid"]))
    entry = by_process[process][e.get("name", "?")]
    entry[0] += float(e["dur"])
    entry[1] += 1
    lo, hi = spans.get(process, (float("inf"), 0.0))
    spans[process] = (min(lo, float(e["ts"])), max(hi, float(e["ts"]) + float(e["dur"])))
  out = {}
  for process, table in by_process.items():
    busy = sum(v[0] for v in table.values())
    rows = sorted(table.items(), key=lambda kv: -kv[1][0])[:top]
    out[process] = {"busy_us": round(busy, 1), "events": sum(v[1] for v in table.values()),
                    "span_us": round(spans[process][1] - spans[process][0], 1),
                    "top": [(n, round(us, 1), c, round(us / busy, 4) if busy else 0.0)
                            for n, (us, c) in rows]}
  return out


def main(argv=None) -> int:
  """Print the summary of the trace under the given folder."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder")
  parser.add_argument("--top", type=int, default=30)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  out = summarise(load(args.folder), args.top)
  if args.json:
    print(json.dumps(out))
    return 0
  for process, s in sorted(out.items(), key=lambda kv: -kv[1]["busy_us"]):
    print(f"{process}: busy {s['busy_us'] / 1e3:.1f} ms in {s['events']} events over "
          f"{s['span_us'] / 1e3:.1f} ms")
    for name, us, count, share in s["top"]:
      print(f"  {100 * share:5.1f}%  {us / 1e3:9.2f} ms  x{count:<6d} {name[:110]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
