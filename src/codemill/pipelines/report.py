"""report.html: one self-contained page (plots inlined as PNG data, no scripts, no external files)
on what a run did: the corpus (languages, licences), what filters and dedup removed, tokens per
mixture component, the training curves, and the eval curves with their signal quality."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from codemill.pipelines.reports import CurationStats, DedupReport, TokenizeReport

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; } th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
.muted { color: #777; font-size: 0.85em; } code { background: #f5f5f5; padding: 0 3px; }
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 10, height: float = 3.2, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height), squeeze=False)


def _bars(axis, counts: dict, title: str, top: int = 15, color: str = "#4c72b0") -> None:
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    axis.barh([str(k) for k, _ in items][::-1], [v for _, v in items][::-1], color=color)
    axis.set_title(title, fontsize=10)
    axis.tick_params(labelsize=8)


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f'<td class="n">{value:,.4g}</td>'
        if isinstance(value, int) and not isinstance(value, bool):
            return f'<td class="n">{value:,}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    return "<table>" + head + "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows) + "</table>"


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _corpus(curated: Path) -> str:
    stats = CurationStats.read(curated)
    dedup = DedupReport.read(curated)
    totals = stats.totals
    parts = [
        "<h2>Corpus</h2>",
        _table(
            [
                ("repositories", stats.sources or 0),
                ("files read", totals.files),
                ("MB read", totals.bytes / 1e6),
                ("files kept", totals.kept_files),
                ("MB kept", totals.kept_bytes / 1e6),
                ("PII replacements", stats.pii_redactions_total),
            ]
        ),
    ]
    fig, axes = _figure(columns=2, height=3.8)
    _bars(axes[0, 0], stats.kept_by_language, "kept files by language")
    _bars(axes[0, 1], stats.kept_by_license_type, "kept files by licence type", color="#55a868")
    parts.append(_png(fig))
    removals = dict(stats.drop_reasons)
    if dedup and not any("duplicate" in reason for reason in removals):  # a separate dedup stage's removals
        removals["exact_duplicate"] = dedup.totals.removed_exact
        removals["near_duplicate"] = dedup.totals.removed_near
    parts.append("<h2>What filters and dedup removed</h2>")
    fig, axes = _figure(height=3.4)
    _bars(axes[0, 0], removals, "files removed, by reason", top=20, color="#c44e52")
    parts.append(_png(fig))
    parts.append(_table(sorted(removals.items(), key=lambda kv: -kv[1]), ("reason", "files")))
    return "".join(parts)


def _tokens(tokenized: Path) -> str:
    report = TokenizeReport.read(tokenized)
    components = report.tokens_by_component
    totals = report.totals
    fig, axes = _figure(height=2.6)
    _bars(axes[0, 0], components, "tokens per mixture component", color="#8172b2")
    return (
        "<h2>Tokens</h2>"
        + _png(fig)
        + _table(
            [
                ("documents", totals.documents),
                ("tokens", totals.tokens),
                ("files in", totals.files_in),
                ("FIM files", totals.fim_files),
                ("contaminated files removed", totals.contaminated_files),
                ("contaminated, by benchmark", json.dumps(report.contaminated_by_benchmark)),
                ("token dtype", report.dtype),
            ]
        )
    )


def _training(trained: Path) -> str:
    path = trained / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return "<h2>Training</h2><p>No training metrics.</p>"
    fig, axes = _figure(columns=2)
    steps = [r["step"] for r in rows]
    axes[0, 0].plot(steps, [r["loss"] for r in rows], color="#4c72b0")
    axes[0, 0].set_title("training loss", fontsize=10)
    axes[0, 1].plot(steps, [r["lr"] for r in rows], color="#dd8452")
    axes[0, 1].set_title("learning rate", fontsize=10)
    for axis in axes[0]:
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=8)
    last = rows[-1]
    return (
        "<h2>Training</h2>"
        + _png(fig)
        + _table(
            [
                ("steps", last["step"]),
                ("first loss", rows[0]["loss"]),
                ("last loss", last["loss"]),
                ("tokens/s (last)", float(last.get("tokens_per_s", 0.0))),
                ("MFU (last)", float(last.get("mfu", 0.0))),
                ("skipped steps", last.get("skipped_total", 0)),
            ]
        )
    )


def _evaluation(evaluated: Path) -> str:
    signal = _read(evaluated / "signal" / "signal.json") or {}
    parts = ["<h2>Evaluation</h2>"]
    if signal:
        names = list(signal)
        columns = min(3, len(names))
        rows_needed = -(-len(names) // columns)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(rows_needed, columns, figsize=(10, 2.6 * rows_needed), squeeze=False)
        for index, axis in enumerate(axes.flat):
            if index >= len(names):
                axis.axis("off")
                continue
            entry = signal[names[index]]
            axis.plot(entry["steps"], entry["scores"], marker="o", markersize=3)
            snr = "-" if entry["snr"] is None else f"{entry['snr']:.1f}"
            axis.set_title(f"{names[index]}\nSQ {entry['sq']:.2f}  SNR {snr}", fontsize=9)
            axis.tick_params(labelsize=7)
        parts.append(
            "<p>Every checkpoint through the likelihood metrics (higher is better; -bpb is minus bits "
            "per byte). SQ: E2LM signal quality (monotone and smooth); SNR: spread over noise.</p>"
        )
        parts.append(_png(fig))
        parts.append(
            _table(
                [
                    (name, e["scores"][0], e["scores"][-1], e["sq"], "-" if e["snr"] is None else e["snr"])
                    for name, e in signal.items()
                ],
                ("metric", "first checkpoint", "last checkpoint", "SQ", "SNR"),
            )
        )
    rows = []
    for metrics_file in sorted((evaluated / "passk").glob("*/metrics.json")):
        data = _read(metrics_file) or {}
        task = metrics_file.parent.name
        metrics = data.get(task, {})
        for name, value in metrics.items():
            if name.startswith("pass@"):
                rows.append((task, name, value, metrics.get("problems", 0), json.dumps(metrics.get("statuses", {}))))
    if rows:
        parts.append("<p>Sandboxed pass@k of the last checkpoint:</p>")
        parts.append(_table(rows, ("task", "metric", "value", "problems", "verdicts")))
    return "".join(parts)


def write_report(path: Path, stage_dirs: dict[str, Path], config: dict) -> Path:
    """Write report.html from the stage outputs (any missing part is left out with a note)."""
    sections = [("curate", _corpus), ("tokenize", _tokens), ("train", _training), ("eval", _evaluation)]
    body = []
    for name, render in sections:
        directory = stage_dirs.get(name)
        body.append(
            render(directory) if directory is not None and directory.exists() else f"<h2>{name}</h2><p>Not run.</p>"
        )
    stages = _table([(name, str(directory)) for name, directory in stage_dirs.items()], ("stage", "output"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>codemill run report</title><style>{_STYLE}</style></head>
<body>
<h1>codemill run report</h1>
<p class="muted">Everything below is read from the stage outputs listed at the end; the page needs no network.</p>
{"".join(body)}
<h2>Where everything is</h2>
{stages}
<h2>Effective config</h2>
<pre>{html.escape(json.dumps(config, indent=1))}</pre>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
