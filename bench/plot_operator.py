"""The operator-at-scale plots for the README, from bench/results/operator-*-n<N>.json.

    make bench-plot     (python -m bench.plot_operator; matplotlib in a venv of its own)

The newest result of each N is plotted: the time until all children exist for the operator and
for the raw client, and the operator's RSS (peak, and when all agents are Ready), against N.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def newest_per_n(results: Path) -> list[dict[str, Any]]:
    by_n: dict[int, dict[str, Any]] = {}
    for path in sorted(results.glob("operator-*-n*.json")):  # dated names: newest last
        result = json.loads(path.read_text())
        if "operator_before_restart" in result:  # runs of the current bench (peak RSS, both CPUs)
            by_n[result["settings"]["agents"]] = result
    return [by_n[n] for n in sorted(by_n)]


def main(out: Path = RESULTS / "operator-scale.png") -> None:
    runs = newest_per_n(RESULTS)
    if not runs:
        sys.exit(f"no results in {RESULTS}: run `make bench-operator` first")
    n = [r["settings"]["agents"] for r in runs]
    fig, (times, memory) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    times.plot(n, [r["create"]["all_children_s"] for r in runs], "o-", label="operator")
    with_raw = [r for r in runs if "raw_client_s" in r]  # a run may measure the operator only
    times.plot(
        [r["settings"]["agents"] for r in with_raw],
        [r["raw_client_s"] for r in with_raw],
        "s--",
        label="raw client (the limit)",
    )
    times.set(xscale="log", yscale="log", xlabel="AIAgents", ylabel="seconds")
    times.set_title("until all 4 × N children exist")
    times.legend()

    # The higher peak of the two operator processes (a run cut short has no "operator_end").
    def peak(r: dict[str, Any]) -> float:
        phases = [r.get("operator_before_restart"), r.get("operator_end")]
        phases.append((r.get("restart") or {}).get("operator"))
        return max(p["peak_rss_mib"] for p in phases if p)

    rss = [peak(r) for r in runs]
    memory.plot(n, rss, "o-", color="tab:green", label="operator peak RSS (the restart's)")
    ready = [r["create"]["operator"]["rss_mib"] for r in runs]
    memory.plot(n, ready, "s--", color="tab:olive", label="operator RSS, all agents Ready")
    memory.axhline(150, color="grey", linestyle=":", label="target at 1000: 150 MiB")
    memory.set(xscale="log", xlabel="AIAgents", ylabel="MiB", ylim=(0, max(rss) * 1.2))
    memory.set_title("operator memory")
    memory.legend()
    for axes in (times, memory):
        axes.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"aiagent-operator at scale, local control plane, {runs[0]['machine']['cores']} cores"
    )
    fig.tight_layout()
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
