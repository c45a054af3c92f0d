"""Gao et al.'s fits (ru_rlhf.frontier): exact points of a known curve give back its α, β and peak, worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ru_rlhf.frontier import fit_gao, gao_gain


def test_best_of_n_form_recovers_alpha_beta_and_the_peak():
    # gain(d) = d (0.5 − 0.25 d): 0, 0.1875, 0.25, 0.1875, 0 at d = 0, 0.5, 1, 1.5, 2; peak at d* = 0.5 / 0.5 = 1
    d = [0.0, 0.5, 1.0, 1.5, 2.0]
    gain = [0.0, 0.1875, 0.25, 0.1875, 0.0]
    fit = fit_gao(d, gain, "bon")
    assert fit["alpha"] == pytest.approx(0.5) and fit["beta"] == pytest.approx(0.25)
    assert fit["peak_d"] == pytest.approx(1.0) and fit["peak_kl"] == pytest.approx(1.0)
    assert fit["peak_gain"] == pytest.approx(0.25) and fit["peak_in_range"] is True
    assert fit["r2"] == pytest.approx(1.0) and fit["n_points"] == 4  # d = 0 adds nothing and is left out
    assert fit["d_max"] == 2.0 and fit["no_peak"] is None


def test_rl_form_recovers_alpha_beta_and_the_peak():
    # gain(d) = d (0.3 − 0.2 log d): at d = 1 it is 0.3; at d = 2, 2 (0.3 − 0.2 · 0.693147) = 0.322741;
    # peak at d* = exp(0.3 / 0.2 − 1) = exp(0.5) = 1.648721, where the gain is d* · β = 0.329744
    d = [0.5, 1.0, 2.0, 3.0]
    gain = [0.5 * (0.3 + 0.2 * math.log(2)), 0.3, 0.322741, 3 * (0.3 - 0.2 * math.log(3))]
    fit = fit_gao(d, gain, "rl")
    assert fit["alpha"] == pytest.approx(0.3, abs=1e-6) and fit["beta"] == pytest.approx(0.2, abs=1e-6)
    assert fit["peak_d"] == pytest.approx(1.648721, abs=1e-5)
    assert fit["peak_kl"] == pytest.approx(math.e, abs=1e-4)  # exp(0.5)² = e
    assert fit["peak_gain"] == pytest.approx(0.329744, abs=1e-6) and fit["peak_in_range"] is True
    assert fit["r2"] == pytest.approx(1.0)


def test_a_peak_beyond_the_measured_points_is_reported_as_out_of_range():
    d = np.array([0.25, 0.5, 0.75])  # gain d (1 − 0.1 d) peaks at d* = 5, far past 0.75
    fit = fit_gao(d, d * (1 - 0.1 * d), "bon")
    assert fit["peak_d"] == pytest.approx(5.0) and fit["peak_kl"] == pytest.approx(25.0)
    assert fit["peak_in_range"] is False


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_beta_at_most_zero_has_no_peak(form):
    d = np.array([0.5, 1.0, 2.0, 4.0])
    alpha, beta = 0.2, -0.1  # a gain that only ever rises
    gain = gao_gain(d, alpha, beta, form)
    fit = fit_gao(d, gain, form)
    assert fit["alpha"] == pytest.approx(alpha) and fit["beta"] == pytest.approx(beta)
    assert fit["peak_d"] is None and fit["peak_kl"] is None and fit["peak_gain"] is None
    assert fit["peak_in_range"] is None and "beta <= 0" in fit["no_peak"]


def test_best_of_n_falling_from_the_start_has_no_peak():
    d = np.array([0.5, 1.0, 2.0])
    fit = fit_gao(d, d * (-0.1 - 0.2 * d), "bon")
    assert fit["alpha"] == pytest.approx(-0.1) and fit["beta"] == pytest.approx(0.2)
    assert fit["peak_kl"] is None and "alpha <= 0" in fit["no_peak"]


def test_too_few_points_fit_nothing():
    fit = fit_gao([0.0, 1.0], [0.0, 0.3], "rl")
    assert fit["alpha"] is None and fit["beta"] is None and fit["n_points"] == 1 and fit["peak_kl"] is None
    assert fit_gao([], [], "bon")["n_points"] == 0
    with pytest.raises(ValueError, match="unknown form"):
        fit_gao([1.0, 2.0], [0.1, 0.2], "linear")


def test_the_fitted_gain_is_zero_at_the_origin():
    assert gao_gain([0.0, 1.0], 0.3, 0.2, "rl").tolist() == [0.0, 0.3]
    assert gao_gain([0.0, 2.0], 0.5, 0.25, "bon").tolist() == [0.0, 0.0]
