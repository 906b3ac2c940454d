"""The mean-field phase diagram of ``initlab theory --plot``: χ₁ and ξ_c against σ_w²."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from initlab.report.plot.base import OKABE_ITO


def phase_figure(table: dict) -> Figure:
    """χ₁ and ξ_c against σ_w² for one activation and σ_b², the critical point marked."""
    rows = table["rows"]
    s = [r["sigma_w2"] for r in rows]
    fig, (ax_chi, ax_xi) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ax_chi.plot(s, [r["chi1"] for r in rows], marker="o", color=OKABE_ITO[0], label="χ₁")
    ax_chi.axhline(1.0, color="0.4", linestyle=":", label="χ₁ = 1")
    ax_xi.plot(s, [r["xi_c"] for r in rows], marker="o", color=OKABE_ITO[1], label="ξ_c")
    ax_xi.set_yscale("log")
    crit = table["critical_sigma_w2"]
    for ax in (ax_chi, ax_xi):
        if math.isfinite(crit):
            ax.axvline(crit, color=OKABE_ITO[3], linestyle="--", label=f"critical σ_w² = {crit:.3g}")
        ax.set_xlabel("σ_w²")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    ax_chi.set(ylabel="χ₁ (gradient growth per layer)", title="χ₁: below 1 ordered, above 1 chaotic")
    ax_xi.set(ylabel="ξ_c (layers, log scale)", title="depth scale ξ_c (trainable to ≈ 6ξ_c)")
    fig.suptitle(f"mean-field phase diagram: {table['activation']}, σ_b² = {table['sigma_b2']:g}")
    return fig
