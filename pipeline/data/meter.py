"""Chicago's taxi meter on a drawn route: the fare model and every noise it adds.

The route's distance and duration are what a booking cannot know: they are drawn around the
straight-line distance between the two centroids and the hour's traffic. The same function
draws the trips that are written and the Monte Carlo draws of the floor (synth.py), so the
floor is exactly the noise of the data.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Meter:
    """Chicago's taxi rates of 2012-2018 (City of Chicago, BACP), in dollars."""

    flag_pull: float = 3.25
    per_mile: float = 2.25
    # $0.20 per 36 seconds.
    per_minute: float = 0.20 * 60 / 36
    # Each additional passenger.
    extra_passenger: float = 1.00
    # The meter shows multiples of 5 cents.
    step: float = 0.05

    def scaled(self, factor: float) -> Meter:
        """These rates times `factor` (a fare increase)."""
        return dataclasses.replace(
            self,
            flag_pull=self.flag_pull * factor,
            per_mile=self.per_mile * factor,
            per_minute=self.per_minute * factor,
            extra_passenger=self.extra_passenger * factor,
        )


@dataclasses.dataclass(frozen=True)
class Noise:
    """What the booking-time fields do not say about a trip (fitted by eye to the sample)."""

    # Straight-line miles of a trip whose pickup or dropoff point is unknown: lognormal.
    unknown_median_miles: float = 1.5
    unknown_sigma: float = 0.9
    # Streets are not straight lines: route = hypot(distance, local) * detour (lognormal).
    local_miles: float = 0.3
    detour_median: float = 1.0
    detour_sigma: float = 0.18
    # The trip's speed around the hour's median speed (lognormal), and the wait at the start.
    # Longer trips are faster (arterials, expressways): speed times (miles / typical) ** k,
    # at least `slowest` times the hour's speed.
    speed_sigma: float = 0.3
    typical_miles: float = 1.5
    distance_exponent: float = 0.3
    slowest: float = 0.7
    wait_minutes: float = 0.5
    # The meter charges distance while the cab moves and time only while it crawls: the
    # share of the driving time charged, at the hour's median speed (more in slower traffic).
    crawl_share: float = 0.25
    crawl_mph: float = 12.0
    # Additional passengers: P(1), P(2).
    extra_passengers: tuple[float, float] = (0.15, 0.05)
    # Outliers as in the real data: a zero fare; a meter left running (fare times 2-5); a
    # keying error (a fare of $250-900).
    zero_fare: float = 0.0018
    meter_running: float = 0.003
    keying_error: float = 0.0004


def draw_trips(
    rng: np.random.Generator,
    miles: np.ndarray,
    mph: np.ndarray,
    meter: Meter,
    noise: Noise,
    draws: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws route miles, minutes and the fare of each trip.

    Args:
      rng: the random stream.
      miles: (n,) straight-line miles between the centroids; NaN where unknown.
      mph: (n,) the median speed of the trip's start hour.
      meter: the rates.
      noise: the noise model.
      draws: None for one trip per row, shape (n,); else that many draws per row, (n, draws).

    Returns:
      Route miles, minutes, fare; each of shape (n,) or (n, draws).
    """
    shape = miles.shape if draws is None else (miles.shape[0], draws)
    known = miles if draws is None else miles[:, None]
    speed = mph if draws is None else mph[:, None]
    unknown = noise.unknown_median_miles * np.exp(noise.unknown_sigma * rng.standard_normal(shape))
    straight = np.where(np.isnan(known), unknown, known)
    detour = noise.detour_median * np.exp(noise.detour_sigma * rng.standard_normal(shape))
    route = np.hypot(straight, noise.local_miles) * detour
    longer = np.maximum(noise.slowest, (route / noise.typical_miles) ** noise.distance_exponent)
    trip_mph = speed * longer * np.exp(noise.speed_sigma * rng.standard_normal(shape))
    driving = route / trip_mph * 60.0
    waiting = rng.exponential(noise.wait_minutes, shape)
    minutes = driving + waiting
    charged = waiting + driving * np.minimum(1.0, noise.crawl_share * noise.crawl_mph / trip_mph)
    u = rng.random(shape)
    p1, p2 = noise.extra_passengers
    passengers = (u < p1 + p2).astype(np.float64) + (u < p2)
    fare = (
        meter.flag_pull
        + meter.per_mile * route
        + meter.per_minute * charged
        + meter.extra_passenger * passengers
    )
    v = rng.random(shape)
    scale = rng.random(shape)
    zero = v < noise.zero_fare
    running = (v >= noise.zero_fare) & (v < noise.zero_fare + noise.meter_running)
    keyed = (v >= noise.zero_fare + noise.meter_running) & (
        v < noise.zero_fare + noise.meter_running + noise.keying_error
    )
    fare = np.where(running, fare * (2.0 + 3.0 * scale), fare)
    fare = np.where(keyed, 250.0 + 650.0 * scale, fare)
    fare = np.where(zero, 0.0, fare)
    fare = np.round(fare / meter.step) * meter.step
    return route, minutes, fare
