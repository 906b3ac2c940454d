"""initlab.errors: one-line messages (an OSError naming its file, a huge value cut short) and a SIGTERM
noted while the raise of its handler was swallowed."""

import signal

import pytest
from typer.testing import CliRunner

from initlab.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_file_where_the_output_folder_belongs_is_one_line(tmp_path, small_yaml, command):
    (tmp_path / "afile").write_text("")
    result = runner.invoke(app, [command, str(small_yaml), "--out", str(tmp_path / "afile" / "sub"), "-q"])
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert "Not a directory (a file is in the way where a folder belongs)" in result.output
    assert str(tmp_path / "afile") in result.output and len(result.output.strip().splitlines()) == 1


def test_an_error_echoing_a_huge_value_stays_short(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(f"seed: '{'7' * 500_000}'\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "seed: '777" in result.output and "characters cut" in result.output
    assert len(result.output) < 1200


def test_a_sigterm_whose_raise_was_swallowed_still_ends_training():
    from initlab.errors import Terminated, note_interrupt
    from initlab.runfolder.storage import RunRecorder

    note_interrupt(signal.SIGTERM)  # the handler's raise landed in a gc callback and was ignored
    with pytest.raises(Terminated):
        RunRecorder().progress(10, 20, {})  # the next look-in on the host ends the run
    RunRecorder().progress(11, 20, {})  # once
