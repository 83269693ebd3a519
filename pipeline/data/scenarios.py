"""Named scenarios: a known change to the synthetic city, for drift and robustness tests."""

from __future__ import annotations

import dataclasses

from taxifare_modules import features as f

NONE = "none"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A change to the learned city; the defaults change nothing."""

    description: str
    # The fields whose distribution the change moves (what a drift check should flag).
    touches: tuple[str, ...] = ()
    # Every meter rate times this.
    fare_factor: float = 1.0
    # Demand by hour and the hour's traffic move this many hours later.
    hour_shift: int = 0
    # A company that takes this share of the trips from the others.
    new_company: tuple[str, float] | None = None
    # Payment types written under another name.
    payment_renames: tuple[tuple[str, str], ...] = ()


SCENARIOS: dict[str, Scenario] = {
    NONE: Scenario("the city as the sample shows it"),
    "fare-inflation": Scenario(
        "every meter rate 25% higher (flag pull, per mile, per minute, extras)",
        touches=(f.LABEL_KEY,),
        fare_factor=1.25,
    ),
    "rush-hour-moved": Scenario(
        "demand and traffic by hour move 3 hours later (the rush hours with them)",
        touches=(f.HOUR_KEY,),
        hour_shift=3,
    ),
    "new-company": Scenario(
        "a new company, Lakefront Mobility LLC, takes 25% of the trips",
        touches=(f.COMPANY_KEY,),
        new_company=("Lakefront Mobility LLC", 0.25),
    ),
    "renamed-payment-type": Scenario(
        "the payment type 'Credit Card' is written 'Card'",
        touches=(f.PAYMENT_TYPE_KEY,),
        payment_renames=(("Credit Card", "Card"),),
    ),
}
