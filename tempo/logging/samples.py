"""Sample completions for reading: JSONL and temperature-coloured HTML in the run directory,
and the same as a W&B table and HTML panel.

A training loop uses it in three calls (on global rank 0):

    writer = SampleWriter.from_config(run_dir, SamplesConfig(), per_token=controller.per_token)
    if writer.due(step):
        rows = sample_rows(rollout, texts, prompts, golds, answers, rewards, correct,
                           step=step, limit=writer.limit, group_size=G,
                           per_token=writer.per_token, pieces_table=token_pieces(tokenizer))
        page = writer.write(rows, step)      # samples/step000050.jsonl (+ .html)
        log_to_wandb(trainer.loggers, rows, page, step)

The HTML colours every completion token by the temperature it was sampled at on a fixed
diverging scale: blue at `t_min`, white at T = 1, red at `t_max`. Per-step methods (one T per
completion) give the same page with each completion in one colour. The page is self-contained:
inline CSS, no scripts, no external files.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tempo.config_error import ConfigError
from tempo.sampling.rollout import Rollout

#: The ends of the colour scale (t_min and t_max); T = 1 is white. Black text stays readable
#: on both ends (contrast about 5:1).
LOW_COLOR = "#3182ce"
HIGH_COLOR = "#e53e3e"
MID_COLOR = "#ffffff"
#: Default colour range: symmetric around T = 1.
DEFAULT_T_RANGE = (0.0, 2.0)
#: The W&B sample table's columns: ``token_T`` is the JSON list of ``[token text, T]`` pairs of
#: the completion's tokens (None for per-step methods, which have one T per completion), and
#: ``tokens_by_T`` a `wandb.Html` cell with the completion coloured by T as on the HTML page.
TABLE_COLUMNS = [
    "step",
    "prompt",
    "completion",
    "gold",
    "answer",
    "reward",
    "correct",
    "mean_T",
    "token_T",
    "tokens_by_T",
]
#: The W&B key of one step's sample table (one table per saved step, so each stays browsable).
TABLE_KEY = "samples/table_step{step:06d}"
PAGE_KEY = "samples/tokens_by_T"
TEMPERATURE_DECIMALS = 4


# ---------------------------------------------------------------------------- configuration
@dataclass
class SamplesConfig:
    """How often sample completions are saved, how many, and whether as HTML too."""

    every: int = 50  # RL steps between saved samples, plus step 0 (0 = never)
    limit: int = 8  # completions per save (one per prompt group first)
    html: bool = True  # also render the temperature-coloured HTML page

    def __post_init__(self) -> None:
        _check_int("every", self.every, 0, "an integer >= 0 (0 = off)")
        _check_int("limit", self.limit, 1, "an integer >= 1")
        if not isinstance(self.html, bool):
            raise ConfigError("html", self.html, "true or false")


def _check_int(key: str, value: Any, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, allowed)


# ---------------------------------------------------------------------------- rows
@dataclass
class SampleRow:
    """One sampled completion as shown to a reader."""

    step: int
    prompt: str
    completion: str
    gold: str
    answer: str | None  # the extracted answer (None = none found)
    reward: float
    correct: bool
    mean_temperature: float  # mean T over the completion's tokens (EOS included)
    pieces: list[str] | None = None  # per-token text (per-token methods only)
    temperatures: list[float] | None = None  # T of each of those tokens
    row: int | None = None  # index in the rollout batch
    finished: bool | None = None  # ended with EOS (False = truncated at the length cap)

    @property
    def per_token(self) -> bool:
        return self.pieces is not None and self.temperatures is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-token temperatures rounded, non-finite numbers as None."""
        record = asdict(self)
        record["reward"] = _finite(self.reward)
        record["mean_temperature"] = _finite(self.mean_temperature)
        if self.temperatures is not None:
            record["temperatures"] = [
                _finite(round(float(t), TEMPERATURE_DECIMALS)) for t in self.temperatures
            ]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SampleRow:
        record = dict(record)
        for key in ("reward", "mean_temperature"):
            if record.get(key) is None:
                record[key] = math.nan
        if record.get("temperatures") is not None:
            record["temperatures"] = [math.nan if t is None else t for t in record["temperatures"]]
        return cls(**record)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def pick_rows(batch_size: int, group_size: int, limit: int) -> list[int]:
    """The first `limit` rows, one per prompt group before a second one of any group.

    Rows are grouped as [p0 x G, p1 x G, ...]; the choice is 0, G, 2G, ..., then 1, G+1, ...;
    returned in batch order (so the samples of one prompt sit together).
    """
    group_size = max(1, int(group_size))
    order = sorted(range(batch_size), key=lambda i: (i % group_size, i // group_size))
    return sorted(order[: max(0, int(limit))])


def sample_rows(
    rollout: Rollout,
    texts: Sequence[str],
    prompts: Sequence[str],
    golds: Sequence[str],
    answers: Sequence[str | None],
    rewards: Sequence[float] | torch.Tensor,
    correct: Sequence[bool],
    *,
    step: int,
    limit: int,
    group_size: int = 1,
    per_token: bool = False,
    pieces_table: Sequence[str] | None = None,
) -> list[SampleRow]:
    """Rows for up to `limit` completions of a rollout (chosen by `pick_rows`).

    `texts`, `prompts`, `golds`, `answers`, `rewards`, `correct` are per batch row (prompts
    and golds repeated G times, as the rollout was sampled). With `per_token`, each row carries
    the text piece and T of every generated token (mask = 1, EOS included); `pieces_table` is
    the tokenizer's text per id (`tempo.metrics.temperature_profile.token_pieces`).
    """
    batch = int(rollout.tokens.shape[0])
    if hasattr(rewards, "tolist"):
        rewards = rewards.tolist()
    columns = {
        "texts": texts,
        "prompts": prompts,
        "golds": golds,
        "answers": answers,
        "rewards": rewards,
        "correct": correct,
    }
    for name, values in columns.items():
        if len(values) != batch:
            raise ValueError(f"{name} has {len(values)} entries for a batch of {batch} rows")
    if per_token and pieces_table is None:
        raise ValueError("per_token rows need the tokenizer's pieces_table")
    chosen = pick_rows(batch, group_size, limit)
    if not chosen:
        return []
    index = torch.tensor(chosen, device=rollout.tokens.device)
    tokens = rollout.tokens[index].detach().cpu()
    mask = rollout.mask[index].detach().cpu().bool()
    temps = rollout.temperatures[index].detach().cpu().double()
    finished = rollout.finished[index].detach().cpu().tolist()
    rows = []
    for k, i in enumerate(chosen):
        valid = mask[k]
        row_temps = temps[k][valid]
        mean_t = float(row_temps.mean()) if row_temps.numel() else math.nan
        pieces = temperatures = None
        if per_token:
            table = pieces_table or ()
            pieces = [table[t] if 0 <= t < len(table) else "" for t in tokens[k][valid].tolist()]
            temperatures = row_temps.tolist()
        rows.append(
            SampleRow(
                step=int(step),
                prompt=str(prompts[i]),
                completion=str(texts[i]),
                gold=str(golds[i]),
                answer=None if answers[i] is None else str(answers[i]),
                reward=float(rewards[i]),
                correct=bool(correct[i]),
                mean_temperature=mean_t,
                pieces=pieces,
                temperatures=temperatures,
                row=i,
                finished=bool(finished[k]),
            )
        )
    return rows


# ---------------------------------------------------------------------------- colours
def _check_range(t_min: float, t_max: float) -> None:
    if not (
        math.isfinite(t_min) and math.isfinite(t_max) and 0 <= t_min <= 1 <= t_max and t_min < t_max
    ):
        raise ValueError(
            f"temperature colour range ({t_min}, {t_max}): need 0 <= t_min <= 1 <= t_max, "
            "t_min < t_max"
        )


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _mix(a: str, b: str, frac: float) -> str:
    """The colour `frac` of the way from `a` to `b` (frac in [0, 1])."""
    frac = min(1.0, max(0.0, frac))
    channels = (round(x + (y - x) * frac) for x, y in zip(_rgb(a), _rgb(b), strict=True))
    return "#" + "".join(f"{c:02x}" for c in channels)


def temperature_color(t: float, t_min: float, t_max: float) -> str:
    """Background hex colour of temperature `t`: LOW_COLOR at t_min, white at 1, HIGH_COLOR at
    t_max, linear on each side, clamped outside; non-finite T is grey."""
    t = float(t)
    if not math.isfinite(t):
        return "#cccccc"
    if t <= 1.0:
        frac = (1.0 - t) / (1.0 - t_min) if t_min < 1.0 else 0.0
        return _mix(MID_COLOR, LOW_COLOR, frac)
    frac = (t - 1.0) / (t_max - 1.0) if t_max > 1.0 else 0.0
    return _mix(MID_COLOR, HIGH_COLOR, frac)


# ---------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #111; background: #fafafa; }
h1 { font-size: 1.2em; }
.legend { margin: 0.5em 0 1.5em; font-size: 0.9em; }
.legend .sw { display: inline-block; min-width: 3.2em; padding: 0.15em 0.3em;
  text-align: center; border: 1px solid #ccc; font-family: monospace; }
.sample { background: #fff; border: 1px solid #ddd; border-left: 6px solid #999;
  margin: 0 0 1.2em; padding: 0.6em 0.8em; }
.sample.correct { border-left-color: #2f855a; }
.sample.wrong { border-left-color: #c53030; }
.meta { font-size: 0.85em; color: #444; margin-bottom: 0.4em; }
.mark.correct { color: #2f855a; font-weight: bold; }
.mark.wrong { color: #c53030; font-weight: bold; }
.label { font-size: 0.75em; text-transform: uppercase; color: #777; margin-top: 0.4em; }
.prompt, .completion { font-family: ui-monospace, monospace; white-space: pre-wrap;
  word-break: break-word; line-height: 1.5; }
.completion span { border-radius: 2px; }
code { background: #f0f0f0; padding: 0 0.2em; white-space: pre-wrap; }
"""


def _esc(text: Any) -> str:
    return html_lib.escape(str(text), quote=True)


def _token_span(piece: str, t: float, t_min: float, t_max: float) -> str:
    color = temperature_color(t, t_min, t_max)
    return f'<span style="background:{color}" title="T={float(t):.2f}">{_esc(piece)}</span>'


def _legend(t_min: float, t_max: float, stops: int = 4) -> str:
    lows = [t_min + (1.0 - t_min) * k / stops for k in range(stops)] if t_min < 1 else []
    highs = [1.0 + (t_max - 1.0) * k / stops for k in range(1, stops + 1)] if t_max > 1 else []
    swatches = "".join(
        f'<span class="sw" style="background:{temperature_color(t, t_min, t_max)}">{t:.2f}</span>'
        for t in [*lows, 1.0, *highs]
    )
    return (
        '<div class="legend">Token background = the temperature it was sampled at '
        f"(hover a token for its T): {swatches}</div>"
    )


def _completion_body(row: SampleRow, t_min: float, t_max: float) -> str:
    """The completion's tokens as coloured spans; one span for per-step rows (one T)."""
    if row.per_token:
        return "".join(
            _token_span(p, t, t_min, t_max)
            for p, t in zip(row.pieces, row.temperatures, strict=True)
        )
    return _token_span(row.completion, row.mean_temperature, t_min, t_max)


def _sample_html(row: SampleRow, t_min: float, t_max: float) -> str:
    status = "correct" if row.correct else "wrong"
    mark = "&#10003; correct" if row.correct else "&#10007; wrong"
    answer = "<em>none</em>" if row.answer is None else f"<code>{_esc(row.answer)}</code>"
    meta = [
        f"step {row.step}",
        *([f"row {row.row}"] if row.row is not None else []),
        f'<span class="mark {status}">{mark}</span>',
        f"reward {row.reward:.3g}",
        f"mean T {row.mean_temperature:.3f}",
        f"gold <code>{_esc(row.gold)}</code>",
        f"answer {answer}",
        *(["truncated"] if row.finished is False else []),
    ]
    body = _completion_body(row, t_min, t_max)
    return (
        f'<div class="sample {status}">\n'
        f'<div class="meta">{" &middot; ".join(meta)}</div>\n'
        f'<div class="label">prompt</div><div class="prompt">{_esc(row.prompt)}</div>\n'
        f'<div class="label">completion</div><div class="completion">{body}</div>\n'
        "</div>\n"
    )


def render_html(
    rows: Sequence[SampleRow],
    t_min: float = DEFAULT_T_RANGE[0],
    t_max: float = DEFAULT_T_RANGE[1],
    title: str = "tempo samples",
) -> str:
    """A self-contained HTML page of `rows` with tokens coloured by temperature."""
    _check_range(t_min, t_max)
    samples = "".join(_sample_html(row, t_min, t_max) for row in rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n{_legend(t_min, t_max)}\n{samples}</body></html>\n"
    )


# ---------------------------------------------------------------------------- files
def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_samples(path: str | os.PathLike) -> list[SampleRow]:
    """The rows of a `samples/step*.jsonl` file."""
    text = Path(path).read_text(encoding="utf-8")
    return [SampleRow.from_dict(json.loads(line)) for line in text.splitlines() if line]


class SampleWriter:
    """Saves sample rows as `<run_dir>/samples/step<NNNNNN>.jsonl` (and `.html`) on schedule.

    `due(step)` is true at step 0 and every `every` steps (never when `every` is 0). Files are
    replaced atomically, so a resumed run that writes a step again leaves one whole file.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        every: int = 50,
        limit: int = 8,
        per_token: bool = False,
        t_range: tuple[float, float] = DEFAULT_T_RANGE,
        html: bool = True,
        title: str = "tempo samples",
    ) -> None:
        SamplesConfig(every=every, limit=limit, html=html)  # the same checks as the config
        t_min, t_max = (float(t) for t in t_range)
        _check_range(t_min, t_max)
        self.dir = Path(run_dir) / "samples"
        self.every, self.limit, self.per_token, self.html = every, limit, bool(per_token), html
        self.t_range = (t_min, t_max)
        self.title = title

    @classmethod
    def from_config(
        cls,
        run_dir: str | os.PathLike,
        config: SamplesConfig,
        per_token: bool = False,
        t_range: tuple[float, float] = DEFAULT_T_RANGE,
        title: str = "tempo samples",
    ) -> SampleWriter:
        return cls(run_dir, config.every, config.limit, per_token, t_range, config.html, title)

    def due(self, step: int) -> bool:
        return self.every > 0 and int(step) % self.every == 0

    def paths(self, step: int) -> tuple[Path, Path]:
        """(jsonl, html) paths of a step's files."""
        stem = f"step{int(step):06d}"
        return self.dir / f"{stem}.jsonl", self.dir / f"{stem}.html"

    def write(self, rows: Sequence[SampleRow], step: int) -> str | None:
        """Save the first `limit` rows; returns the HTML page (None when `html` is off)."""
        rows = list(rows)[: self.limit]
        jsonl_path, html_path = self.paths(step)
        lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows)
        _atomic_write_text(jsonl_path, lines)
        if not self.html:
            return None
        page = render_html(rows, *self.t_range, title=f"{self.title} - step {int(step)}")
        _atomic_write_text(html_path, page)
        return page


# ---------------------------------------------------------------------------- W&B
_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def token_pairs(row: SampleRow) -> str | None:
    """The row's ``[token text, T]`` pairs as JSON (T rounded as in the JSONL file, non-finite
    as null); None when the row has no per-token detail."""
    if not row.per_token:
        return None
    pairs = [
        [piece, _finite(round(float(t), TEMPERATURE_DECIMALS))]
        for piece, t in zip(row.pieces, row.temperatures, strict=True)
    ]
    return json.dumps(pairs, ensure_ascii=False)


def completion_html(
    row: SampleRow, t_min: float = DEFAULT_T_RANGE[0], t_max: float = DEFAULT_T_RANGE[1]
) -> str:
    """The completion alone as an HTML fragment with inline styles (no page CSS needed): each
    token on the background of its T (hover: its value); per-step rows in one colour."""
    _check_range(t_min, t_max)
    body = _completion_body(row, t_min, t_max)
    style = "font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-word"
    return f'<div style="{style}">{body}</div>'


def table_data(
    rows: Sequence[SampleRow],
    html_cell: Callable[[str], Any] | None = None,
    t_range: tuple[float, float] = DEFAULT_T_RANGE,
) -> list[list[Any]]:
    """The W&B table's rows, in TABLE_COLUMNS order; ``html_cell`` turns a fragment of
    `completion_html` (coloured on ``t_range``) into the ``tokens_by_T`` cell (default: the
    fragment's text)."""
    wrap = html_cell or (lambda fragment: fragment)
    return [
        [
            r.step,
            r.prompt,
            r.completion,
            r.gold,
            r.answer,
            float(r.reward),
            bool(r.correct),
            float(r.mean_temperature),
            token_pairs(r),
            wrap(completion_html(r, *t_range)),
        ]
        for r in rows
    ]


def log_to_wandb(
    loggers: Iterable[Any],
    rows: Sequence[SampleRow],
    html: str | None,
    step: int,
    t_range: tuple[float, float] = DEFAULT_T_RANGE,
) -> None:
    """Log `rows` as a `wandb.Table` under ``samples/table_step<NNNNNN>`` (one key per saved
    step, so every step's table stays browsable; the per-token temperatures are in its
    ``token_T`` and ``tokens_by_T`` columns) and the page as `wandb.Html`
    (``samples/tokens_by_T``, a media panel with a step slider) to every Lightning
    WandbLogger in `loggers`, at ``step``; other loggers are skipped. Never raises: a failure
    (e.g. W&B unavailable) is warned about once. ``t_range``: the colour scale of the
    ``tokens_by_T`` cells (the writer's, so they match its page)."""
    if not rows:
        return
    try:
        from lightning.pytorch.loggers import WandbLogger

        targets = [lg for lg in loggers if isinstance(lg, WandbLogger)]
        if not targets:
            return
        import wandb

        def html_cell(fragment: str) -> Any:
            return wandb.Html(fragment, inject=False, data_is_not_path=True)

        for logger in targets:
            table = wandb.Table(columns=TABLE_COLUMNS, data=table_data(rows, html_cell, t_range))
            payload: dict[str, Any] = {TABLE_KEY.format(step=int(step)): table}
            if html is not None:
                payload[PAGE_KEY] = wandb.Html(html, inject=False, data_is_not_path=True)
            logger.log_metrics(payload, step=int(step))
    except Exception as err:  # sample logging must never stop training
        _warn_once(f"tempo: could not log sample completions to W&B: {type(err).__name__}: {err}")
