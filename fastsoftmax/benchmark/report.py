"""What a bench run found, as text, JSON and a plot.

* :class:`Report` holds the environment, the settings, the memory ceiling, the first calls and
  one dict per timed row (the JSON keys); ``print(report)`` shows the header and one table per
  kernel x dtype x shape.
* GB/s counts the input read once and the output written once; "ceiling" is that rate over the
  memory copy ceiling (over the read-only ceiling for logsumexp, which writes one value a row);
  "vs <reference>" and "vs <peer>" are the time of the reference backend and of the compared
  peer, in the same mode (or allocating), over the row's time.
* :func:`format_table` is the quick comparison of ``fastsoftmax info``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastsoftmax import _registry
from fastsoftmax.benchmark import peers
from fastsoftmax.benchmark.implementations import IMPLEMENTATION_ORDER, REFERENCE, kernel_rank
from fastsoftmax.benchmark.machine import environment_lines, environment_report

SPEEDUP = f"speedup_vs_{REFERENCE}"
"""The key of a row's speed-up over the reference backend."""

SPEEDUP_PEER = f"speedup_vs_{peers.COMPARED}"
"""The key of a row's speed-up over the compared peer."""


def speedup(rows: list[dict], row: dict, reference: str = REFERENCE) -> float | None:
    """How many times faster ``row`` ran than ``reference`` in the same mode (or allocating).

    Examples
    --------
    >>> from fastsoftmax.benchmark.report import speedup
    >>> rows = [{"implementation": "numpy", "mode": "alloc", "median_s": 2.0},
    ...         {"implementation": "cython", "mode": "out", "median_s": 0.5}]
    >>> speedup(rows, rows[1], "numpy"), speedup(rows, rows[1], "torch")
    (4.0, None)
    """
    by_mode = {r["mode"]: r for r in rows if r["implementation"] == reference}
    found = by_mode.get(row["mode"]) or by_mode.get("alloc") or by_mode.get("out")
    return found["median_s"] / row["median_s"] if found else None


def format_seconds(seconds: float) -> str:
    """Seconds with a unit, 7 characters wide and the unit.

    Examples
    --------
    >>> from fastsoftmax.benchmark.report import format_seconds
    >>> format_seconds(0.00125), format_seconds(3e-8)
    ('   1.25 ms', '     30 ns')
    """
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:7.2f} {unit}"
    return f"{seconds / 1e-9:7.0f} ns"


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


_COLUMNS = (
    ("implementation", 14, "<"),
    ("mode", 5, "<"),
    ("median", 10, ">"),
    ("IQR", 6, ">"),
    ("GB/s", 6, ">"),
    ("ceiling", 7, ">"),
    (f"vs {REFERENCE}", 8, ">"),
    (f"vs {peers.COMPARED}", 8, ">"),
    ("calls/sample", 12, ">"),
)


def _table_line(values: Sequence[str]) -> str:
    return "  " + " ".join(
        f"{value:{align}{width}}" for value, (_, width, align) in zip(values, _COLUMNS, strict=True)
    )


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def case_block(rows: list[dict]) -> str:
    """The table of one kernel x dtype x shape: a title line, then a row per implementation and
    mode."""
    first = rows[0]
    moved = first["bytes_moved"]
    traffic = f"moves {format_bytes(moved)} per call" if moved else "one epoch of fit"
    sets = "one input set" if first["copies"] == 1 else f"{first['copies']} input sets rotated"
    lines = [
        f"{first['kernel']} | {first['dtype']} | {shape_text(first['shape'])}   "
        f"({traffic}; {sets})",
        _table_line([name for name, _, _ in _COLUMNS]),
    ]
    for row in rows:
        lines.append(
            _table_line(
                [
                    row["implementation"],
                    row["mode"],
                    format_seconds(row["median_s"]),
                    f"{100 * row['spread_s'] / row['median_s']:.1f}%",
                    f"{row['gbps']:.1f}" if row["gbps"] is not None else "-",
                    f"{row['ceiling_pct']:.0f}%" if row["ceiling_pct"] is not None else "-",
                    _ratio(row[SPEEDUP]),
                    _ratio(row.get(SPEEDUP_PEER)),
                    str(row["calls_per_sample"]),
                ]
            )
        )
    return "\n".join(lines)


def _in_place() -> str:
    """The benched kernels without an allocating mode: they update their inputs in place."""
    return ", ".join(p for p, kernel in _registry.BENCHED.items() if "alloc" not in kernel.modes)


@dataclass
class Report:
    """What :func:`bench` measured; ``print(report)`` shows it, :meth:`to_dict` is the JSON."""

    environment: dict
    settings: dict
    ceiling: dict
    first_calls: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def header(self) -> str:
        ceiling = self.ceiling
        settings = self.settings
        in_place = _in_place()
        notes = [
            f"memory ceiling: np.copyto of {ceiling['mib']} MiB float32 (read + write) "
            f"{ceiling['gbps']:.1f} GB/s (1 thread {ceiling['gbps_1_thread']:.1f}, "
            f"{ceiling['threads']} threads {ceiling['gbps_n_threads']:.1f}); in-place updates "
            f"({in_place}) write back lines they have just read and can pass it",
            f'read-only ceiling (logsumexp\'s "ceiling" column): np.max of the same array '
            f"{ceiling['read_gbps']:.1f} GB/s (1 thread {ceiling['read_gbps_1_thread']:.1f}, "
            f"{ceiling['threads']} threads {ceiling['read_gbps_n_threads']:.1f})",
            f"timing: {settings['rounds']} interleaved rounds, samples >= "
            f"{settings['min_time'] * 1e3:g} ms; median, IQR in % of the median; GB/s = input "
            f"read once + output written once; vs {REFERENCE} / vs {peers.COMPARED} = time of "
            f"the reference ({REFERENCE}) / of {peers.COMPARED} in the same mode (or allocating) "
            "over this row's time",
            "modes: alloc = the call allocates its result; out = into preallocated arrays "
            f"(out=, grad_out=, in place for {in_place})",
        ]
        lines = [environment_report(), *environment_lines(self.environment, settings["n_threads"])]
        for note in notes:
            lines += textwrap.wrap(note, 100, subsequent_indent="  ")
        return "\n".join(lines)

    def first_call_text(self) -> str:
        by_implementation: dict[str, list[str]] = {}
        for entry in self.first_calls:
            if entry["seconds"] >= 0.01:
                by_implementation.setdefault(entry["implementation"], []).append(
                    f"{entry['kernel']}/{entry['dtype']} {entry['seconds']:.2f} s"
                )
        lines = [
            "first call on a tiny input (Numba compilation, lazy imports), excluded from every "
            "timing; calls under 10 ms not listed:"
        ]
        for name, items in by_implementation.items():
            lines += textwrap.wrap(
                ", ".join(items), 100, initial_indent=f"  {name:<8} ", subsequent_indent=" " * 11
            )
        if not by_implementation:
            lines.append("  none")
        return "\n".join(lines)

    def table(self) -> str:
        """One block per kernel x dtype x shape."""
        groups: dict[tuple, list[dict]] = {}
        for row in self.results:
            key = (row["kernel"], row["dtype"], tuple(row["shape"]))
            groups.setdefault(key, []).append(row)
        return "\n\n".join(case_block(rows) for rows in groups.values())

    def __str__(self) -> str:
        parts = [self.header(), self.first_call_text(), self.table()]
        if self.notes:
            parts.append("\n".join(self.notes))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return f"<Report: {len(self.results)} timings; print(report) shows them>"

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "settings": self.settings,
            "ceiling": self.ceiling,
            "first_calls": self.first_calls,
            "results": self.results,
            "notes": self.notes,
        }

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def plot(self, path: str | os.PathLike) -> None:
        """Bar charts of GB/s per implementation and shape, one panel per kernel and dtype.

        Bars show the preallocated mode where an implementation has it, otherwise the
        allocating one (hatched); the dashed line is the memory ceiling. Needs matplotlib.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("--plot needs matplotlib: pip install matplotlib") from exc
        chosen: dict[tuple, dict] = {}
        for row in self.results:
            if row["gbps"] is None:
                continue
            key = (row["kernel"], row["dtype"], tuple(row["shape"]), row["implementation"])
            if key not in chosen or row["mode"] == "out":
                chosen[key] = row
        panels = sorted({(k[0], k[1]) for k in chosen}, key=lambda p: (kernel_rank(p[0]), p[1]))
        if not panels:
            raise ValueError("nothing to plot: no result has a GB/s figure")
        implementations = [
            n for n in IMPLEMENTATION_ORDER if any(k[3] == n for k in chosen)
        ] + sorted({k[3] for k in chosen} - set(IMPLEMENTATION_ORDER))
        colours = dict(zip(implementations, plt.get_cmap("tab10").colors, strict=False))
        dtypes = sorted({p[1] for p in panels})
        kernels = sorted({p[0] for p in panels}, key=kernel_rank)
        # Tall enough for every bar's label: about 0.13 inch per bar in the fullest panel.
        most_shapes = max(len({k[2] for k in chosen if k[:2] == panel}) for panel in panels)
        panel_inches = 1.0 + 0.13 * most_shapes * len(implementations)
        figure, axes = plt.subplots(
            len(kernels),
            len(dtypes),
            figsize=(6.5 * len(dtypes), 0.6 + panel_inches * len(kernels)),
            squeeze=False,
        )
        height = 0.8 / len(implementations)
        for (kernel, dtype), ax in zip(itertools.product(kernels, dtypes), axes.flat, strict=True):
            shapes = sorted({k[2] for k in chosen if k[:2] == (kernel, dtype)}, key=math.prod)
            for i, name in enumerate(implementations):
                for j, shape in enumerate(shapes):
                    row = chosen.get((kernel, dtype, shape, name))
                    if row is None:
                        continue
                    bar = ax.barh(
                        j + (i - (len(implementations) - 1) / 2) * height,
                        row["gbps"],
                        height,
                        color=colours[name],
                        hatch="//" if row["mode"] == "alloc" else None,
                        edgecolor="white" if row["mode"] == "alloc" else None,
                    )
                    ax.bar_label(bar, fmt="%.1f", fontsize=6.5, padding=2)
            ax.axvline(self.ceiling["gbps"], color="black", linestyle="--", linewidth=1)
            ax.set_yticks(range(len(shapes)), [shape_text(s) for s in shapes])
            ax.set_title(f"{kernel}, {dtype}", fontsize=10)
            ax.set_xlabel("GB/s (dashed line: memory copy ceiling)")
            ax.set_xlim(0, 1.12 * max(self.ceiling["gbps"], *(r["gbps"] for r in chosen.values())))
            ax.invert_yaxis()
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[name]) for name in implementations]
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="grey", edgecolor="white", hatch="//"))
        figure.legend(
            handles,
            [*implementations, "allocating (no out=)"],
            loc="lower center",
            ncol=min(len(handles), 4),
            frameon=False,
        )
        threads = self.settings["n_threads"] or "all"
        figure.suptitle(
            f"GB/s per implementation (out= where offered) - {self.environment['cpu']['model']}"
            f", threads: {threads}",
            fontsize=10,
        )
        legend_inches = 0.3 * math.ceil(len(handles) / 4)
        inches = figure.get_figheight()
        figure.tight_layout(rect=(0, legend_inches / inches, 1, 1 - 0.3 / inches))
        figure.savefig(path, dpi=110)
        plt.close(figure)


def format_table(rows: list[dict]) -> str:
    """The table of :func:`compare` as ``fastsoftmax info`` prints it."""
    lines = [
        f"{'kernel':<22} {'shape':<13} {'dtype':<8} {'backend':<7} "
        f"{'median':>10} {'spread':>10} {'vs ' + REFERENCE:>9}"
    ]
    for r in rows:
        ratio = f"{r[SPEEDUP]:.1f}x" if r[SPEEDUP] else "-"
        lines.append(
            f"{r['kernel']:<22} {shape_text(r['shape']):<13} {r['dtype']:<8} {r['backend']:<7} "
            f"{r['median_s'] * 1e3:>8.2f}ms {r['spread_s'] * 1e3:>8.2f}ms {ratio:>9}"
        )
    return "\n".join(lines)
