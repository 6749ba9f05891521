"""The sweep file's regimes: how each regime's preference pairs are drawn (docs/design.md §5)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from annotated_types import Gt, Lt
from pydantic import AllowInfNan, BeforeValidator, Field, model_validator

from didray.config.fields import (
    NAME_PATTERN,
    SCALE_RANGE,
    Int,
    Positive,
    Scale,
    Strict,
    count,
    refuse_bool,
)


class OffPolicy(Strict):
    """Pairs as given: two responses from a fixed off-policy distribution, ordered by reward."""

    kind: Literal["offpolicy"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")


class Tilted(Strict):
    """A target pi_star = pi_ref * exp(score / tau), given by `tau` or by the data DID entropy
    H(q_{pi_star/pi_ref}) it should have (docs/design.md §5.4: the world solves for tau)."""

    tau: Scale | None = Field(
        None, description=f"temperature of pi_star, {SCALE_RANGE}; give tau, did_entropy or "
        "did_entropy_fraction")
    did_entropy: Positive | None = Field(
        None, description="the data DID entropy H(q_{pi_star/pi_ref}) to reach, in nats; the "
        "world solves for tau (toy: exactly; hf: on an SNIS estimate)")
    did_entropy_fraction: Annotated[float, AllowInfNan(False), Gt(0), Lt(1),
                                    BeforeValidator(refuse_bool)] | None = Field(
        None, description="the same as a fraction of log N, in (0, 1) (toy only)")
    beta_data: Scale = Field(
        0.1, description=f"power-law exponent that builds the data, {SCALE_RANGE}")
    candidates: Int = count(
        32, 1024, "pi_ref candidates per pair for importance resampling of the tilted side")

    def tilt_fields(self) -> list[str]:
        return [f for f in ("tau", "did_entropy", "did_entropy_fraction")
                if getattr(self, f) is not None]

    def needs_tilt(self) -> bool:
        return True

    @model_validator(mode="after")
    def one_tilt(self) -> Tilted:
        given = self.tilt_fields()
        if self.needs_tilt() and len(given) != 1:
            raise ValueError("give exactly one of tau, did_entropy, did_entropy_fraction"
                             + (f" (got {', '.join(given)})" if given else ""))
        if not self.needs_tilt() and given:
            raise ValueError(f"{given[0]} applies only with chosen: tilted (the chosen "
                             "response given by the world is not tilted)")
        return self


class PolicyGradientPairs(Tilted):
    """The paper's on-policy-rejected case (pi_l = pi_ref, docs/design.md §5.2): rejected ~
    pi_ref; chosen from a named source that is never the evaluation's judge. `tilted`:
    pi_w = pi_ref * exp(beta_data * score / tau), Bradley-Terry labels as for powerlaw;
    `given`: the world's given chosen (toy: the better of two uniform draws; hf: the
    dataset's chosen, else its reference), no labels drawn."""

    kind: Literal["pg"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")
    chosen: Literal["given", "tilted"] = Field(
        "given", description="where the chosen response comes from")

    def needs_tilt(self) -> bool:
        return self.chosen == "tilted"


class PowerLaw(Tilted):
    """docs/design.md §1.2-1.4: y_w ~ pi_ref, y_l ~ pi_l ∝ pi_ref^(1+b) pi_star^(-b), BT labels.

    pi_star = pi_ref * exp(score / tau): tau sets the DID entropy (small tau, low entropy).
    """

    kind: Literal["powerlaw"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")


Regime = Annotated[OffPolicy | PolicyGradientPairs | PowerLaw, Field(discriminator="kind")]
# The tags of the regime union; pydantic puts the matched one in an error's location.
REGIME_KINDS = tuple(get_args(m.model_fields["kind"].annotation)[0]
                     for m in (OffPolicy, PolicyGradientPairs, PowerLaw))
