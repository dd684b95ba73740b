"""Reports: screening.json in the issue's shape, screening.csv one row per patient and trial, report.html
escaped, self-contained, with a funnel per trial and a section per candidate."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser

import pytest
from test_facts import AS_OF
from test_screen import CMM_EM, candidate

from fhir_adapter.cli import main
from fhir_adapter.criteria import Criterion
from fhir_adapter.eligibility import Trial, index_resources, screen, trials
from fhir_adapter.eligibility.load import order_key
from fhir_adapter.eligibility.run import screen_files, screen_index
from fhir_adapter.report.writers import CSV_COLUMNS, csv_cell, verdict_row

EVIL = '<script>alert("x")</script> & <b>'


def hostile_trial() -> Trial:
    criteria = [Criterion.from_dict(c.to_dict()) for c in CMM_EM.criteria]
    criteria.append(Criterion.from_dict({"linkId": "exc-99", "kind": "exclusion", "text": f"Text with {EVIL}",
                                         "rule": {"fact": "edss", "above": 9}, "note": f"Note with {EVIL}"}))
    return Trial("NCT02035514", f"CMM-EM {EVIL}", tuple(criteria))


def run(tmp_path, charts, trial=None, **options):
    index = index_resources([r for c in charts for r in c.resources])
    return screen_index(index, [trial or CMM_EM], tmp_path, AS_OF, **options)


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def test_json_and_csv(tmp_path):
    charts = [candidate("a"), candidate("b", edss=7.0), candidate("c", mri=False)]
    result = run(tmp_path, charts)
    data = json.loads((tmp_path / "screening.json").read_text())
    assert [(v["patient"], v["verdict"]) for v in data] == [("Patient/c", "needs-review"), ("Patient/b", "ineligible"),
                                                            ("Patient/a", "eligible")]   # fixed hash order
    assert all(set(v) == {"patient", "trial", "verdict", "criteria"} for v in data)
    rows = list(csv.DictReader((tmp_path / "screening.csv").open()))
    assert [r["patient"] for r in rows] == [v["patient"] for v in data]
    b = next(r for r in rows if r["patient"] == "Patient/b")
    assert b["ineligible_because"] == "inc-4" and b["missing"] == "" and b["manual_review"] == "inc-6; exc-8"
    c = next(r for r in rows if r["patient"] == "Patient/c")
    assert "inc-5.3: (unknown: no MRI with a Gd-enhancing" in c["missing"]
    assert result.screening.funnels["NCT02035514"].verdicts == {"eligible": 1, "needs-review": 1, "ineligible": 1}


@pytest.mark.parametrize("cell", ["plain", "", "a,b", 'say "no"', '"', ",", "line\nbreak", "cr\rlf\r\n",
                                  'all, "of\n" them', "; | : %s {}"])
def test_csv_cells_are_what_the_csv_module_writes_on_one_line(cell):
    written = io.StringIO()
    csv.writer(written, lineterminator="\n").writerow(["x", cell.replace("\r", " ").replace("\n", " ")])
    assert "x," + csv_cell(cell) + "\n" == written.getvalue()


def test_screening_csv_is_verdict_row_written_by_the_csv_module(tmp_path):
    """The rows written from cached pieces per distinct outcome are the rows `verdict_row` describes."""
    evil = hostile_trial()
    charts = [candidate("a"), candidate("b", edss=7.0), candidate("c", mri=False), candidate("d", mri=False),
              candidate("e", edss=9.5), candidate("f", age=17)]
    charts[2].resources[0]["id"] = 'c,"quoted"'
    run(tmp_path, charts, evil)
    index = index_resources([r for c in charts for r in c.resources])
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    verdicts = sorted(screen(index.patients.values(), [evil], AS_OF), key=lambda v: order_key(v.patient[8:]))
    writer.writerows(verdict_row(v) for v in verdicts)
    assert {v.verdict for v in verdicts} == {"eligible", "ineligible", "needs-review"}
    assert (tmp_path / "screening.csv").read_text() == expected.getvalue()


def test_html_escapes_all_text_and_needs_nothing_from_outside(tmp_path):
    chart = candidate("a")
    chart.resources[0]["id"] = "a"
    run(tmp_path, [chart], hostile_trial())
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    # the curator's note on how a rule reads its line is shown with the line in the funnel
    assert "Reading: Note with &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    page = Page()
    page.feed(html)
    assert all(link.startswith("#") for link in page.links), page.links          # no external assets or links
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    text = " ".join(" ".join(page.text).split())
    assert "Funnel: what each criterion does to the 1 patients" in text
    assert "Patient/a eligible" in text and "latest EDSS 4 on 2025-05-12; wanted EDSS 3 to 6.5" in text


def test_html_funnel_counts_and_candidate_limit(tmp_path):
    charts = [candidate(f"e{n}") for n in range(3)] + [candidate(f"r{n}", mri=False) for n in range(2)] + \
        [candidate("x", age=60)]
    run(tmp_path, charts, html_candidates=2)
    html = (tmp_path / "report.html").read_text()
    row = re.search(r"<code>inc-2</code>.*?</tr>", html, re.S).group(0)
    assert re.findall(r'<td class="n">(\d+)</td>', row) == ["5", "1", "0"]      # keeps 5, loses 1 (age 60)
    assert html.count("<details") == 4                       # 2 eligible + 2 needing review shown
    assert "Showing 2 of 3 patients who are eligible" in html
    assert "ineligible" in html and "Patient/x" not in html   # ineligible patients get no section


def test_cli_input_out_and_usage_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "all.ndjson").write_text("\n".join(json.dumps(r) for r in candidate().resources) + "\n")
    monkeypatch.setattr(trials, "load_trials", lambda only=(): [CMM_EM])
    assert main(["screen", "--input", str(tmp_path / "in"), "--as-of", "2025-06-01", "--out",
                 str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "NCT02035514 CMM-EM: 1 eligible, 0 need review, 0 ineligible" in out
    assert f"wrote {tmp_path / 'out' / 'report.html'}" in out
    assert "no FHIR resources" not in err
    (tmp_path / "empty").mkdir()                            # an extract that came out empty: said, not an error
    assert main(["screen", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "none")]) == 0
    assert f"note: no FHIR resources found in {tmp_path / 'empty'}: no patient screened" in capsys.readouterr().err
    assert main(["screen", "--out", str(tmp_path / "x")]) == 2
    assert "give either --server URL or --input PATH" in capsys.readouterr().err
    assert main(["screen", "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "nowhere: no such file or directory" in capsys.readouterr().err
    assert main(["screen", "--input", str(tmp_path / "in"), "--write-back", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        main(["screen", "--input", str(tmp_path / "in"), "--as-of", "June", "--out", str(tmp_path / "x")])


def test_a_part_is_appended_once_when_the_kernel_copy_stops_midway(tmp_path, monkeypatch):
    """copy_file_range copying a first piece and then failing: the rest follows, nothing twice."""
    import errno
    import os

    from fhir_adapter.report.regions import append as _append

    calls = []

    def first_piece_then_fail(source, target, count, *args):
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return os.write(target, os.read(source, min(count, 1000)))   # as the kernel would: both offsets move

    monkeypatch.setattr(os, "copy_file_range", first_piece_then_fail, raising=False)
    part = tmp_path / "part"
    part.write_bytes(bytes(range(256)) * 40)
    with (tmp_path / "whole").open("wb") as target:
        target.write(b"head")
        _append(target, part)
    assert (tmp_path / "whole").read_bytes() == b"head" + part.read_bytes() and len(calls) == 2


@pytest.mark.skipif(not hasattr(__import__("os"), "copy_file_range"), reason="no copy_file_range on this system")
def test_parts_are_joined_inside_the_kernel(tmp_path, monkeypatch):
    """The parts of a run on two workers reach screening.json through copy_file_range, not through Python
    (a file opened in append mode made the kernel refuse and every byte went through this process)."""
    from fhir_adapter.report import regions

    def through_python(*args, **kwargs):
        raise AssertionError("a part was copied through this process")

    monkeypatch.setattr(regions.shutil, "copyfileobj", through_python)
    (tmp_path / "in").mkdir()
    cohort = [candidate(f"p{n}") for n in range(12)]
    (tmp_path / "in" / "all.ndjson").write_text(
        "".join(json.dumps(r) + "\n" for patient in cohort for r in patient.resources))
    run = screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    verdicts = json.loads((tmp_path / "out" / "screening.json").read_text())
    assert run.screening.patients == 12 and len(verdicts) == 12
    assert sorted(v["patient"] for v in verdicts) == sorted(f"Patient/{p.pid}" for p in cohort)
    rows = (tmp_path / "out" / "screening.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("patient,trial,verdict")
