import math

import pytest

from stream.metrics import FIGURES, rates

pytestmark = pytest.mark.unit


def test_rates_from_figures():
    assert rates.conversion_rate(3, 60) == 0.05
    assert rates.bounce_rate(15, 60) == 0.25
    assert rates.avg_session_duration(600.0, 4) == 150.0
    assert rates.avg_time_on_page(90.0, 6) == 15.0
    assert rates.cart_abandonment_rate(2, 8) == 0.25
    assert rates.average_order_value(125.0, 5) == 25.0
    assert rates.new_vs_returning_ratio(30, 20) == 1.5
    assert rates.customer_lifetime_value(900.0, 3) == 300.0
    assert rates.average_rating(17.0, 4) == 4.25
    # 5 promoters, 2 passives, 3 detractors out of 10 answers: 50 % - 30 % = 20.
    assert rates.net_promoter_score(5, 3, 10) == pytest.approx(20.0)
    assert rates.net_promoter_score(0, 4, 4) == -100.0


@pytest.mark.parametrize(
    "rate",
    [
        rates.conversion_rate,
        rates.bounce_rate,
        rates.avg_session_duration,
        rates.avg_time_on_page,
        rates.cart_abandonment_rate,
        rates.average_order_value,
        rates.new_vs_returning_ratio,
        rates.customer_lifetime_value,
        rates.average_rating,
    ],
)
def test_zero_denominators_give_zero(rate):
    assert rate(5, 0) == 0.0
    assert rate(0, 0) == 0.0
    assert rate(5, -1) == 0.0


def test_nps_without_answers_is_zero():
    assert rates.net_promoter_score(0, 0, 0) == 0.0
    assert rates.net_promoter_score(2, 1, 0) == 0.0


def test_derive_from_summed_rows():
    totals = dict.fromkeys(FIGURES, 0)
    out = rates.derive(totals)
    assert out and all(v == 0.0 and not math.isnan(v) for v in out.values())
    assert rates.derive({}) == out  # missing figures count as 0
    totals.update(sessions=10, orders=2, bounces=4, revenue=50.0, pageviews=5, engaged_seconds=60.0)
    out = rates.derive(totals)
    assert out["conversion_rate"] == 0.2 and out["bounce_rate"] == 0.4
    assert out["average_order_value"] == 25.0 and out["avg_time_on_page"] == 12.0
