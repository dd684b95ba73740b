"""One file written in regions by several processes, joined in place by cutting the gaps out."""

from __future__ import annotations

import errno
import json
import os

import pytest
from test_facts import AS_OF
from test_screen import CMM_EM, candidate

from fhir_adapter.eligibility import index_resources, screen
from fhir_adapter.eligibility.run import screen_files, screen_index
from fhir_adapter.report import html as html_module
from fhir_adapter.report import regions as regions_module
from fhir_adapter.report.regions import Regions
from fhir_adapter.report.writers import Part
from fhir_adapter.sources import InputError

# (parts' contents, in part order): a middle part empty, the first, the last, all; one ending on a block
CASES = [
    [b"[\nA" * 3, b",\nBBBB" * 9, b"", b",\nDD" * 40],
    [b"", b",\nB", b",\nC" * 17],
    [b"[\nA", b",\nB" * 70, b"", b""],
    [b"", b"", b"", b""],
    [b"A" * 16, b"B" * 5, b"C" * 3],
]


def write_parts(regions: Regions, contents: list[bytes]) -> list[int]:
    ends = []
    for part, content in enumerate(contents):
        with regions.open(part) as stream:
            stream.write(content)
            ends.append(stream.tell())
    return ends


def check_joined(regions: Regions, contents: list[bytes], size: int) -> None:
    data = regions.path.read_bytes()
    assert len(data) == size
    position = 0
    for part, content in enumerate(contents):       # each part in order, then only spaces up to the next
        assert data[position:position + len(content)] == content, part
        position += len(content)
        if any(contents[part + 1:]):
            while position % regions.block:
                assert data[position:position + 1] == b" "
                position += 1
    assert position == size


def emulated_collapse(fd: int, offset: int, length: int) -> None:
    """What the kernel does, with its refusals: whole blocks only, not reaching the end of the file."""
    size = os.fstat(fd).st_size
    if offset % 16 or length % 16 or offset + length >= size:
        raise OSError(errno.EINVAL, "Invalid argument")
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, data[:offset] + data[offset + length:], 0)


@pytest.mark.parametrize("contents", CASES)
def test_join_cuts_the_gaps_and_pads_to_blocks(tmp_path, monkeypatch, contents):
    """The join's arithmetic on a file system emulated with 16-byte blocks (any machine)."""
    monkeypatch.setattr(regions_module, "collapse", emulated_collapse)
    regions = Regions(tmp_path / "out.json", len(contents), stride=256, block=16)
    (tmp_path / "out.json").write_bytes(b"an earlier run's file, longer than this one: " * 4)
    ends = write_parts(regions, contents)
    size = regions.join(ends)
    os.truncate(regions.path, size)                 # what the caller does after its last bytes
    check_joined(regions, contents, size)


def real_regions(path, parts: int) -> Regions:
    regions = Regions.plan(path, parts)
    if not regions.stride:
        pytest.skip("this file system cannot cut ranges out of files (the writers copy parts instead)")
    return regions


@pytest.mark.parametrize("contents", CASES)
def test_join_in_place_on_this_file_system(tmp_path, contents):
    regions = real_regions(tmp_path / "out.json", len(contents))
    assert not (tmp_path / "out.json.probe").exists() and regions.path.read_bytes() == b""
    assert regions.stride >= 1 << 40                # room for a part of a terabyte
    ends = write_parts(regions, contents)
    assert os.stat(regions.path).st_blocks * 512 < 1 << 20      # the terabytes between are holes
    size = regions.join(ends)
    check_joined(regions, contents, size)


def test_plan_falls_back_to_part_files_where_cutting_fails(tmp_path, monkeypatch):
    def refused(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(regions_module, "collapse", refused)
    regions = Regions.plan(tmp_path / "out.json", 2)
    assert regions.stride == 0 and sorted(tmp_path.iterdir()) == [regions.path]


def cohort_dir(tmp_path):
    (tmp_path / "in").mkdir()
    charts = [candidate(f"p{n}", age=20 + n, edss=2.5 + 0.5 * (n % 10), mri=n % 3 != 0) for n in range(30)]
    (tmp_path / "in" / "all.ndjson").write_text(
        "".join(json.dumps(r) + "\n" for chart in charts for r in chart.resources))
    return tmp_path / "in"


def test_screening_json_is_the_same_whichever_way_parts_are_joined(tmp_path, monkeypatch):
    source = cohort_dir(tmp_path)
    screen_files([source], [CMM_EM], tmp_path / "one", AS_OF, workers=1)
    screen_files([source], [CMM_EM], tmp_path / "in-place", AS_OF, workers=3)
    monkeypatch.setattr(regions_module, "_FALLOCATE", None)
    screen_files([source], [CMM_EM], tmp_path / "copied", AS_OF, workers=3)
    one = (tmp_path / "one" / "screening.json").read_bytes()
    assert (tmp_path / "copied" / "screening.json").read_bytes() == one       # part files: the very bytes
    assert json.loads((tmp_path / "in-place" / "screening.json").read_bytes()) == json.loads(one)
    assert sorted(p.name for p in (tmp_path / "copied").iterdir()) == ["report.html", "screening.csv",
                                                                       "screening.json"]


@pytest.mark.parametrize("layout", ["in place", "part files"])
def test_patients_only_in_a_later_part_give_the_one_worker_bytes(tmp_path, monkeypatch, layout):
    """Parts 0 and 1 of 3 empty: the leading ",\n" of part 2 is left out where parts are files of their own
    (the very bytes of one worker), blanked where they are joined in place (the same JSON)."""
    from fhir_adapter.eligibility.load import partition

    pid = next(f"p{n}" for n in range(100) if partition(f"p{n}", 3) == 2)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "all.ndjson").write_text("".join(json.dumps(r) + "\n" for r in candidate(pid).resources))
    screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "one", AS_OF, workers=1)
    if layout == "part files":
        monkeypatch.setattr(regions_module, "_FALLOCATE", None)
    screen_files([tmp_path / "in"], [CMM_EM], tmp_path / "three", AS_OF, workers=3)
    one, three = ((tmp_path / d / "screening.json").read_bytes() for d in ("one", "three"))
    assert one.startswith(b'[\n{"patient": "Patient/' + pid.encode())
    if layout == "part files":
        assert three == one
    else:
        assert json.loads(three) == json.loads(one)


def test_a_part_may_not_outgrow_its_region(tmp_path):
    verdicts = list(screen(index_resources(candidate("p1").resources).patients.values(), [CMM_EM], AS_OF))
    regions = Regions(tmp_path / "screening.json", 2, stride=4096, block=16)
    writer = Part(0, [CMM_EM], regions=regions)
    with pytest.raises(OSError, match="part 0 outgrew its region"):
        writer.add_all(verdicts * 10)


PREVIOUS = {"screening.json": "[]\n", "screening.csv": "patient\n", "report.html": "<p>before</p>\n",
            "problems.csv": "where,problem\nold.ndjson:3,an EDSS of 11\n"}
MADE = sorted(set(PREVIOUS) - {"problems.csv"})          # by a run whose input is all usable


def previous_run(out):
    out.mkdir()
    for name, text in PREVIOUS.items():
        (out / name).write_text(text)


def assert_previous_run_kept(out):
    assert sorted(p.name for p in out.iterdir()) == sorted(PREVIOUS)        # no working files, no parts
    assert {name: (out / name).read_text() for name in PREVIOUS} == PREVIOUS


def test_a_run_failing_on_its_input_keeps_the_previous_reports(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Patient.ndjson").write_text('{"resourceType": \n')
    previous_run(tmp_path / "out")
    with pytest.raises(InputError):
        screen_files([tmp_path / "bad"], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert_previous_run_kept(tmp_path / "out")


@pytest.mark.parametrize("layout", ["as planned", "part files"])
@pytest.mark.parametrize("failing", ["close", "finish"])
def test_a_run_failing_while_writing_keeps_the_previous_reports_and_leaves_nothing(tmp_path, monkeypatch,
                                                                                 layout, failing):
    """Both parts write their verdicts, then one step fails: no sparse file of terabytes, no half reports."""
    source = cohort_dir(tmp_path)
    previous_run(tmp_path / "out")
    if layout == "part files":
        monkeypatch.setattr(regions_module, "_FALLOCATE", None)

    def closed_then_broken(self):
        self._flush()
        raise RuntimeError("disk on fire")

    def half_written(path, *args):
        path.write_text("<p>half")
        raise RuntimeError("disk on fire")

    if failing == "close":
        monkeypatch.setattr(Part, "close", closed_then_broken)
    else:                                                   # after the join, while writing report.html
        monkeypatch.setattr(html_module, "write_html", half_written)
    with pytest.raises(RuntimeError, match="disk on fire"):
        screen_files([source], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert_previous_run_kept(tmp_path / "out")


def test_a_run_removes_what_a_killed_run_left(tmp_path):
    source = cohort_dir(tmp_path)
    previous_run(tmp_path / "out")
    left = [".screening.json.partial", ".screening.json.partial-3", ".screening.csv.partial-2",
            ".report.html.partial", ".screening.json.partial.probe"]
    for name in left:
        (tmp_path / "out" / name).write_text("from a run killed half way")
    screen_files([source], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == MADE
    assert len(json.loads((tmp_path / "out" / "screening.json").read_text())) == 30


def test_a_second_run_into_the_same_directory_stops_and_leaves_the_first_alone(tmp_path, capsys):
    """While one run writes into `out` (its lock held, a working file made), another run there stops with a clear
    message before touching anything; a lock file a killed run left (no lock held) stops nobody."""
    from fhir_adapter.cli import main
    from fhir_adapter.outdir import LOCK, OutputInUse
    from fhir_adapter.report.writers import replacing

    source = cohort_dir(tmp_path)
    previous_run(tmp_path / "out")
    with replacing(tmp_path / "out"):
        (tmp_path / "out" / ".screening.json.partial").write_text("the first run's verdicts")
        with pytest.raises(OutputInUse, match="another run is writing screening reports there"):
            screen_files([source], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
        assert main(["screen", "--input", str(source), "--as-of", "2025-06-01", "--out", str(tmp_path / "out")]) == 2
        assert "another run is writing screening reports" in capsys.readouterr().err
        assert (tmp_path / "out" / ".screening.json.partial").read_text() == "the first run's verdicts"
        (tmp_path / "out" / ".screening.json.partial").unlink()
    assert_previous_run_kept(tmp_path / "out")                              # the lock file gone too
    (tmp_path / "out" / LOCK).write_text("")                                # left by a killed run
    screen_files([source], [CMM_EM], tmp_path / "out", AS_OF, workers=2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == MADE


def test_screening_in_one_process_replaces_the_reports_only_when_done(tmp_path, monkeypatch):
    index = index_resources(candidate("p1").resources)
    previous_run(tmp_path / "out")
    monkeypatch.setattr(html_module, "write_html", lambda *args: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.raises(RuntimeError):
        screen_index(index, [CMM_EM], tmp_path / "out", AS_OF)
    assert_previous_run_kept(tmp_path / "out")
    monkeypatch.undo()
    screen_index(index, [CMM_EM], tmp_path / "out", AS_OF)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == MADE
    assert json.loads((tmp_path / "out" / "screening.json").read_text())[0]["patient"] == "Patient/p1"
