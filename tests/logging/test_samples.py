import json
import math
import re

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from tempo.config_error import ConfigError
from tempo.logging import samples
from tempo.logging.samples import (
    HIGH_COLOR,
    LOW_COLOR,
    TABLE_COLUMNS,
    SampleRow,
    SamplesConfig,
    SampleWriter,
    completion_html,
    log_to_wandb,
    pick_rows,
    read_samples,
    render_html,
    sample_rows,
    temperature_color,
)
from tempo.sampling.rollout import Rollout

GROUP = 3
PIECES = ["<pad>", "<eos>", "1", "+", "\n", "<b>", "&", '"', "x"]


def _rollout() -> Rollout:
    """6 rows = 2 prompts x 3 samples; completions of different lengths, pad = 0, EOS = 1."""
    tokens = torch.tensor(
        [
            [2, 3, 2, 1, 0],
            [4, 1, 0, 0, 0],
            [5, 6, 7, 8, 1],
            [8, 4, 2, 1, 0],
            [2, 1, 0, 0, 0],
            [3, 3, 3, 3, 3],
        ]
    )
    lengths = torch.tensor([4, 2, 5, 4, 2, 5])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).float()
    gen = torch.Generator().manual_seed(0)
    temps = 0.3 + 1.5 * torch.rand(6, 5, generator=gen)
    temps = torch.where(mask.bool(), temps, torch.full_like(temps, 7.0))  # pads: must be ignored
    zeros = torch.zeros(6, 5)
    return Rollout(
        prompt_ids=torch.ones(6, 2, dtype=torch.long),
        prompt_mask=torch.ones(6, 2, dtype=torch.long),
        tokens=tokens,
        mask=mask,
        temperatures=temps,
        logprobs=zeros,
        entropy=zeros,
        entropy_at_T=zeros,
        finished=torch.tensor([True, True, True, True, True, False]),
    )


def _columns():
    prompts = ["p0"] * GROUP + ["p1"] * GROUP
    golds = ["3"] * GROUP + ["7"] * GROUP
    texts = [f"text{i}" for i in range(6)]
    answers = ["3", None, "4", "7", "1", None]
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    correct = [r == 1.0 for r in rewards]
    return texts, prompts, golds, answers, rewards, correct


def _rows(limit=2, per_token=True, step=5):
    return sample_rows(
        _rollout(),
        *_columns(),
        step=step,
        limit=limit,
        group_size=GROUP,
        per_token=per_token,
        pieces_table=PIECES,
    )


# ---------------------------------------------------------------------------- rows
def test_pick_rows_takes_one_per_group_first():
    assert pick_rows(6, 3, 2) == [0, 3]
    assert pick_rows(6, 3, 3) == [0, 1, 3]
    assert pick_rows(6, 3, 4) == [0, 1, 3, 4]
    assert pick_rows(6, 3, 10) == list(range(6))
    assert pick_rows(6, 1, 2) == [0, 1]
    assert pick_rows(6, 3, 0) == []


def test_sample_rows_one_per_group_with_their_columns():
    rows = _rows(limit=2)
    assert [r.row for r in rows] == [0, 3]
    assert [(r.prompt, r.gold, r.completion, r.answer) for r in rows] == [
        ("p0", "3", "text0", "3"),
        ("p1", "7", "text3", "7"),
    ]
    assert [(r.reward, r.correct, r.step, r.finished) for r in rows] == [
        (1.0, True, 5, True),
        (1.0, True, 5, True),
    ]
    assert [r.row for r in _rows(limit=6)] == list(range(6))
    assert _rows(limit=6)[5].finished is False


def test_mean_temperature_is_the_masked_mean():
    rollout = _rollout()
    for r in _rows(limit=6):
        temps, mask = rollout.temperatures[r.row].double(), rollout.mask[r.row].double()
        expected = float((temps * mask).sum() / mask.sum())
        assert r.mean_temperature == pytest.approx(expected, abs=1e-12)
        assert r.mean_temperature < 7.0  # padding never counts


def test_per_token_pieces_and_temperatures_align_with_unmasked_tokens():
    rollout = _rollout()
    for r in _rows(limit=6):
        n = int(rollout.mask[r.row].sum())
        ids = rollout.tokens[r.row, :n].tolist()
        assert r.pieces == [PIECES[i] for i in ids]
        assert r.temperatures == pytest.approx(rollout.temperatures[r.row, :n].tolist())
        assert len(r.pieces) == len(r.temperatures) == n


def test_per_step_rows_have_no_token_detail():
    rows = _rows(per_token=False)
    assert all(r.pieces is None and r.temperatures is None and not r.per_token for r in rows)


def test_sample_rows_checks_its_inputs():
    texts, prompts, golds, answers, rewards, correct = _columns()
    with pytest.raises(ValueError, match="golds has 5 entries"):
        sample_rows(
            _rollout(), texts, prompts, golds[:5], answers, rewards, correct, step=0, limit=2
        )
    with pytest.raises(ValueError, match="pieces_table"):
        sample_rows(_rollout(), *_columns(), step=0, limit=2, group_size=GROUP, per_token=True)
    tensor_rewards = sample_rows(
        _rollout(),
        texts,
        prompts,
        golds,
        answers,
        torch.tensor(rewards),
        correct,
        step=0,
        limit=1,
    )
    assert tensor_rewards[0].reward == 1.0


# ---------------------------------------------------------------------------- colours
def _hex(rgb):
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _channels(color):
    return [int(color[k : k + 2], 16) for k in (1, 3, 5)]


def test_colour_scale_ends_and_middle():
    t_min, t_max = 0.5, 1.5
    assert temperature_color(t_min, t_min, t_max) == LOW_COLOR
    assert temperature_color(1.0, t_min, t_max) == "#ffffff"
    assert temperature_color(t_max, t_min, t_max) == HIGH_COLOR
    assert LOW_COLOR == _hex((49, 130, 206))  # blue
    assert HIGH_COLOR == _hex((229, 62, 62))  # red
    # 20 % of the way from white to red, 40 % of the way from white to blue
    to_red = _hex(round(255 + (c - 255) * 0.2) for c in _channels(HIGH_COLOR))
    to_blue = _hex(round(255 + (c - 255) * 0.4) for c in _channels(LOW_COLOR))
    assert temperature_color(1.1, t_min, t_max) == to_red
    assert temperature_color(0.8, t_min, t_max) == to_blue
    # clamped outside the range; non-finite is grey
    assert temperature_color(0.0, t_min, t_max) == LOW_COLOR
    assert temperature_color(9.0, t_min, t_max) == HIGH_COLOR
    assert temperature_color(math.nan, t_min, t_max) == "#cccccc"


# ---------------------------------------------------------------------------- HTML
SPAN = re.compile(r'<span style="background:(#[0-9a-f]{6})" title="T=([0-9.]+)">(.*?)</span>', re.S)


def _completions(page):
    return re.findall(r'<div class="completion">(.*?)</div>', page, re.S)


def test_html_colours_every_token_by_its_temperature():
    rows = _rows(limit=6)
    page = render_html(rows, 0.5, 1.5, title="run")
    blocks = _completions(page)
    assert len(blocks) == len(rows)
    for row, block in zip(rows, blocks, strict=True):
        spans = SPAN.findall(block)
        assert len(spans) == len(row.pieces)
        for (color, title, _), t in zip(spans, row.temperatures, strict=True):
            assert color == temperature_color(t, 0.5, 1.5)
            assert title == f"{t:.2f}"
    assert "white-space: pre-wrap" in page
    assert '<span style="background:' in page and 'title="T=' in page
    row1 = _completions(page)[1]  # row 1 is ["\n", "<eos>"]: the newline stays a newline
    assert SPAN.findall(row1)[0][2] == "\n"


def test_html_per_step_rows_are_one_colour():
    rows = _rows(limit=2, per_token=False)
    page = render_html(rows, 0.0, 2.0)
    for row, block in zip(rows, _completions(page), strict=True):
        spans = SPAN.findall(block)
        assert len(spans) == 1
        assert spans[0][0] == temperature_color(row.mean_temperature, 0.0, 2.0)
        assert spans[0][2] == row.completion


def test_html_escapes_all_text_and_is_self_contained():
    nasty = "<script>alert(\"x\")</script> & 'q'"
    row = SampleRow(
        step=3,
        prompt=nasty,
        completion=nasty,
        gold="<g>&",
        answer='"a"',
        reward=0.0,
        correct=False,
        mean_temperature=1.0,
        pieces=["<script>", "&", '"', "'"],
        temperatures=[0.5, 1.0, 1.2, 2.0],
    )
    page = render_html([row], title="<title> & co")
    lowered = page.lower()
    assert "<script" not in lowered
    for external in ("src=", "<link", "url(", "http", "@import"):
        assert external not in lowered
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in page
    assert "&lt;g&gt;&amp;" in page and "&quot;a&quot;" in page
    assert "&lt;title&gt; &amp; co" in page
    assert [s[2] for s in SPAN.findall(page)] == ["&lt;script&gt;", "&amp;", "&quot;", "&#x27;"]


def test_html_shows_markers_gold_answer_and_legend():
    page = render_html(_rows(limit=6, per_token=True), 0.5, 1.5)
    assert page.count('class="sample correct"') == 2
    assert page.count('class="sample wrong"') == 4
    assert "<code>3</code>" in page and "<em>none</em>" in page
    legend = re.search(r'<div class="legend">(.*?)</div>', page, re.S).group(1)
    assert LOW_COLOR in legend and "#ffffff" in legend and HIGH_COLOR in legend
    assert ">0.50<" in legend and ">1.00<" in legend and ">1.50<" in legend
    assert "truncated" in page  # row 5 hit the length cap


def test_html_rejects_a_range_without_one_inside():
    with pytest.raises(ValueError, match="t_min"):
        render_html([], 1.2, 2.0)
    with pytest.raises(ValueError, match="t_min"):
        render_html([], 0.5, 0.5)


# ---------------------------------------------------------------------------- files
def test_writer_saves_jsonl_and_html_atomically(tmp_path):
    writer = SampleWriter(tmp_path, every=10, limit=3, per_token=True, t_range=(0.5, 1.5))
    rows = _rows(limit=6)
    page = writer.write(rows, step=20)
    folder = tmp_path / "samples"
    assert sorted(p.name for p in folder.iterdir()) == ["step000020.html", "step000020.jsonl"]
    assert (folder / "step000020.html").read_text(encoding="utf-8") == page
    assert "step 20" in page
    records = [json.loads(line) for line in (folder / "step000020.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == [0, 1, 2]  # the first `limit` rows given
    for record, row in zip(records, rows, strict=False):
        assert record["temperatures"] == [round(t, 4) for t in row.temperatures]
        assert record["pieces"] == row.pieces
        assert record["mean_temperature"] == pytest.approx(row.mean_temperature)
        assert record["prompt"] == row.prompt and record["answer"] == row.answer
    back = read_samples(folder / "step000020.jsonl")
    assert [r.pieces for r in back] == [r.pieces for r in rows[:3]]
    assert writer.paths(20) == (folder / "step000020.jsonl", folder / "step000020.html")


def test_writer_without_html_and_rewrite(tmp_path):
    writer = SampleWriter.from_config(tmp_path, SamplesConfig(every=5, limit=2, html=False))
    assert writer.write(_rows(per_token=False), step=0) is None
    writer.write(_rows(per_token=False, step=7), step=0)  # a resumed run writing step 0 again
    folder = tmp_path / "samples"
    assert [p.name for p in folder.iterdir()] == ["step000000.jsonl"]
    records = [json.loads(line) for line in (folder / "step000000.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [7, 7]
    assert records[0]["pieces"] is None and records[0]["temperatures"] is None


def test_failed_write_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    writer = SampleWriter(tmp_path, every=1, limit=2, html=False)
    writer.write(_rows(), step=1)
    before = (tmp_path / "samples" / "step000001.jsonl").read_text()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(samples.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.write(_rows(limit=1), step=1)
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step000001.jsonl"]
    assert (tmp_path / "samples" / "step000001.jsonl").read_text() == before


def test_due_schedule():
    writer = SampleWriter(".", every=50)
    assert [s for s in range(0, 201) if writer.due(s)] == [0, 50, 100, 150, 200]
    assert not any(SampleWriter(".", every=0).due(s) for s in range(0, 101))
    assert [s for s in range(4) if SampleWriter(".", every=1).due(s)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": -1}, "every=-1"),
        ({"every": True}, "every=True"),
        ({"every": 2.5}, "every=2.5"),
        ({"limit": 0}, "limit=0"),
        ({"html": "yes"}, "html='yes'"),
    ],
)
def test_samples_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SamplesConfig(**kwargs)
    with pytest.raises(ConfigError):
        SampleWriter(".", **kwargs)


def test_samples_config_defaults():
    assert SamplesConfig() == SamplesConfig(every=50, limit=8, html=True)


# ---------------------------------------------------------------------------- W&B
class FakeWandbLogger(WandbLogger):
    """A WandbLogger that records what it is asked to log (no W&B run)."""

    def __init__(self, fail=False):  # skips WandbLogger's own set-up on purpose
        self.logged, self.fail = [], fail

    def log_metrics(self, metrics, step=None):
        if self.fail:
            raise RuntimeError("wandb is down")
        self.logged.append((metrics, step))


class OtherLogger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step=None):
        self.logged.append(metrics)


def test_log_to_wandb_logs_table_and_html_to_wandb_loggers_only():
    import wandb

    rows = _rows(limit=2)
    page = render_html(rows)
    fake, other = FakeWandbLogger(), OtherLogger()
    log_to_wandb([other, fake], rows, page, step=5)
    assert other.logged == []
    [(payload, step)] = fake.logged
    assert step == 5
    assert sorted(payload) == ["samples/table_step000005", "samples/tokens_by_T"]
    table, html = payload["samples/table_step000005"], payload["samples/tokens_by_T"]
    assert isinstance(table, wandb.Table) and table.columns == TABLE_COLUMNS
    assert table.data[0][:7] == [5, "p0", "text0", "3", "3", 1.0, True]
    assert table.data[0][7] == pytest.approx(rows[0].mean_temperature)
    assert isinstance(html, wandb.Html) and html.html == page
    fake.logged.clear()
    log_to_wandb([fake], rows, None, step=6)  # no page: table only, under its own step's key
    assert list(fake.logged[0][0]) == ["samples/table_step000006"]
    log_to_wandb([fake], [], page, step=7)  # nothing to log
    assert len(fake.logged) == 1


def test_wandb_table_carries_the_per_token_temperatures():
    import wandb

    rows = _rows(limit=2)
    fake = FakeWandbLogger()
    log_to_wandb([fake], rows, None, step=5)
    table = fake.logged[0][0]["samples/table_step000005"]
    pairs_col, html_col = TABLE_COLUMNS.index("token_T"), TABLE_COLUMNS.index("tokens_by_T")
    rollout = _rollout()
    for row, data in zip(rows, table.data, strict=True):
        pairs = json.loads(data[pairs_col])
        n = int(rollout.mask[row.row].sum())
        assert [p for p, _ in pairs] == [PIECES[i] for i in rollout.tokens[row.row, :n].tolist()]
        assert [t for _, t in pairs] == pytest.approx(
            rollout.temperatures[row.row, :n].tolist(), abs=1e-4
        )
        cell = data[html_col]
        assert isinstance(cell, wandb.Html)
        spans = re.findall(
            r'<span style="background:(#[0-9a-f]{6})" title="T=([0-9.]+)">', cell.html
        )
        assert [c for c, _ in spans] == [temperature_color(t, 0.0, 2.0) for _, t in pairs]
        assert [float(t) for _, t in spans] == pytest.approx([t for _, t in pairs], abs=0.006)
    # The writer's colour range reaches the cells; per-step rows have no pairs, one colour.
    flat = _rows(limit=1, per_token=False)
    log_to_wandb([fake], flat, None, step=6, t_range=(0.5, 1.5))
    (data,) = fake.logged[1][0]["samples/table_step000006"].data
    assert data[pairs_col] is None
    color = temperature_color(flat[0].mean_temperature, 0.5, 1.5)
    assert data[html_col].html.count("<span") == 1 and color in data[html_col].html
    assert color != temperature_color(flat[0].mean_temperature, 0.0, 2.0)


def test_completion_html_escapes_tokens_and_matches_the_page():
    rows = _rows(limit=6)
    for row in rows:
        fragment = completion_html(row)
        assert fragment.startswith("<div style=") and fragment.count("<span") == len(row.pieces)
    risky = next(r for r in rows if "<b>" in (r.pieces or []))
    fragment = completion_html(risky)
    assert "&lt;b&gt;" in fragment and "&amp;" in fragment and "<b>" not in fragment
    inner = fragment[fragment.index(">") + 1 : -len("</div>")]
    assert inner in render_html([risky])  # the same spans as on the HTML page


def test_log_to_wandb_warns_once_and_never_raises(monkeypatch):
    monkeypatch.setattr(samples, "_warned", False)
    rows = _rows(limit=1)
    with pytest.warns(RuntimeWarning, match="wandb is down") as caught:
        log_to_wandb([FakeWandbLogger(fail=True)], rows, None, step=0)
        log_to_wandb([FakeWandbLogger(fail=True)], rows, None, step=1)
    assert len(caught) == 1


def test_log_to_wandb_with_a_disabled_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setattr(samples, "_warned", False)
    logger = WandbLogger(save_dir=str(tmp_path), project="tempo-test", mode="disabled")
    rows = _rows(limit=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        log_to_wandb([logger], rows, render_html(rows), step=0)
    logger.experiment.finish()
