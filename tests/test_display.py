"""initlab.report.display: the console's views of runs and reports."""


def test_progress_shows_losses_readably():
    from initlab.report.display import _fmt_loss

    assert _fmt_loss(2.302585) == "2.3026" and _fmt_loss(3.4e35) == "3.4e+35" and _fmt_loss(float("inf")) == "inf"
    assert _fmt_loss(1.5e-5) == "1.5e-05" and _fmt_loss(None) == "–"
