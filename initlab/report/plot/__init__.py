"""Figures (matplotlib, headless): per-layer variance across depth, training curves, a heatmap of
a metric over two swept keys, per-layer distributions and the input–output Jacobian's spectrum.

The per-layer picture is the classic one of Glorot & Bengio 2010 (Fig. 3–7) and He et al. 2015:
activation variance and back-propagated gradient variance against depth, log scale, one line per
configuration, at initialization and later steps. Distributions, not just moments: the per-layer
histograms of histograms.csv drawn at one step (Glorot & Bengio 2010, Figs. 6–7) or over the whole
of training (fastai's "colorful dimension"), and the squared singular values of jacobian.csv against
dynamical isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017). Each figure kind is an
entry of the FIGURES registry. Lines use the Okabe–Ito palette and images cividis, both readable
with colour-vision deficiencies.

One module per figure family, re-exported here: ``base`` (palette, legends, steps, options,
``save``), ``profile``, ``curves``, ``heatmap``, ``histograms`` (and the ``QUANTITIES`` registry),
``spectrum``, ``underflow``, ``widths`` (coordinate check, learning-rate transfer), ``phase``
(``initlab theory --plot``) and ``kinds`` (the ``FIGURES`` registry, ``make_plots``).
"""

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window; before any module of the package loads pyplot

from initlab.report.plot.base import (
    FIGURE_SUFFIXES,
    MAX_LAYERS,
    OKABE_ITO,
    NothingToDraw,  # noqa: E402
    PlotOptions,
    check_figure_path,
    legend,
    palette,
    save,
)
from initlab.report.plot.curves import curves_figure  # noqa: E402
from initlab.report.plot.heatmap import grid_keys, heatmap_figure  # noqa: E402
from initlab.report.plot.histograms import (
    QUANTITIES,
    Histograms,
    Quantity,
    colorful_figure,  # noqa: E402
    histograms_figure,
    read_histograms,
)
from initlab.report.plot.kinds import DEFAULT_KINDS, FIGURES, KINDS, PER_QUANTITY, FigureKind, make_plots  # noqa: E402
from initlab.report.plot.phase import phase_figure  # noqa: E402
from initlab.report.plot.profile import profile_figure  # noqa: E402
from initlab.report.plot.spectrum import read_jacobian, spectrum_figure  # noqa: E402
from initlab.report.plot.underflow import underflow_figure  # noqa: E402
from initlab.report.plot.widths import coordcheck_figure, transfer_figure  # noqa: E402

__all__ = [
    "DEFAULT_KINDS",
    "FIGURES",
    "FIGURE_SUFFIXES",
    "FigureKind",
    "Histograms",
    "KINDS",
    "MAX_LAYERS",
    "NothingToDraw",
    "OKABE_ITO",
    "PER_QUANTITY",
    "PlotOptions",
    "QUANTITIES",
    "Quantity",
    "check_figure_path",
    "colorful_figure",
    "coordcheck_figure",
    "curves_figure",
    "grid_keys",
    "heatmap_figure",
    "histograms_figure",
    "legend",
    "make_plots",
    "palette",
    "phase_figure",
    "profile_figure",
    "read_histograms",
    "read_jacobian",
    "save",
    "spectrum_figure",
    "transfer_figure",
    "underflow_figure",
]
