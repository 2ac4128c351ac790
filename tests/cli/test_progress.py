"""Long work shows progress on stderr also when it is not a terminal."""

from mmindex.cli.app import progress_reporter


def test_piped_progress_prints_a_line_per_stage_and_its_end(capsys, monkeypatch):
    monkeypatch.setattr(progress_reporter, "LINE_SECONDS", 3600.0)
    with progress_reporter(enabled=True) as report:
        for step in range(1, 101):
            report("captions", step, 100, loss=1.0 / step)
        report("scanning", 0, 0)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["captions loss 1: 1/100", "captions loss 0.01: 100/100", "scanning: 0"]


def test_json_output_keeps_stderr_quiet(capsys):
    with progress_reporter(enabled=False) as report:
        report("encoding images", 5, 10)
    assert capsys.readouterr().err == ""
