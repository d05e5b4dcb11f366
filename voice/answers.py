"""``VOICE_RESPONSE``: one sentence answering a recognised command, with live figures.

Questions are answered with the figures asked for; actions are restated as a question with a
quote, for the client to confirm by sending the matching message. Nothing is executed here.
"""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from environments.models import Environment, Position
from rewards.selectors import reward_view
from trading import curve
from trading.curve import LAMPORTS_PER_SOL, RAW_PER_TOKEN, CurveError
from trading.quotes import quote
from trading.selectors import volume_24h
from voice.speech.intents import Command

NO_ENVIRONMENT = "Join an environment first, then ask again."


def sol(lamports: int) -> str:
    """Lamports as SOL for speaking: up to 4 decimals, trailing zeros dropped."""
    return _short(Decimal(lamports) / LAMPORTS_PER_SOL, 4) + " SOL"


def tokens(raw: int) -> str:
    return _short(Decimal(raw) / RAW_PER_TOKEN, 2)


def spoken_price(price: Decimal) -> str:
    """A price rounded to 4 significant digits, as one would say it ("0.00000002796")."""
    if not price:
        return "0"
    exponent = price.adjusted() - 3
    return curve.format_price(price.quantize(Decimal(1).scaleb(exponent)).normalize())


def _short(value: Decimal, places: int) -> str:
    if value and abs(value) < Decimal(1) / 10**places:
        return f"{value.normalize():f}"
    text = f"{value.quantize(Decimal(1) / 10**places):,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def voice_answer(*, wallet: str, environment_id: str | None, command: Command) -> str:
    """The assistant's answer to ``command`` for ``wallet`` in its session's environment."""
    intent, parameters = command.intent, command.parameters
    if intent in ("GET_REWARDS", "CLAIM_REWARDS"):
        return _rewards(wallet, claim=intent == "CLAIM_REWARDS")
    if intent == "LAUNCH_TOKEN":
        return f"Launch a new token called {parameters['tokenName']}? Confirm to create it."
    if intent == "JOIN_ENVIRONMENT":
        name = str(parameters["environmentName"])
        found = Environment.objects.filter(name__iexact=name, is_open=True).first()
        if found is None:
            return f"I found no open environment called {name}."
        return f"Join {found.name}? Confirm to enter it."
    if intent == "CHAT":
        return f'Send "{parameters["message"]}" to the chat? Confirm to post it.'
    if intent not in ("EXECUTE_TRADE", "MARKET_ANALYSIS"):
        return 'Sorry, I did not catch a command. Try "buy two sol" or "what is the price".'
    environment = Environment.objects.filter(pk=environment_id).first() if environment_id else None
    if environment is None:
        return NO_ENVIRONMENT
    if intent == "MARKET_ANALYSIS":
        return _market(environment, str(parameters["metric"]))
    return _quote(environment, wallet, parameters)


def _market(environment: Environment, metric: str) -> str:
    market = environment.market  # its curve, or its pool once graduated
    if metric == "volume":
        volume = volume_24h(environment.id, now=timezone.now())
        return f"{environment.name} traded {sol(volume)} in the last 24 hours."
    if metric == "marketCap":
        return f"{environment.name}'s market cap is {sol(market.market_cap)}."
    return f"{environment.name} is at {spoken_price(market.spot_price)} SOL per token."


def _quote(environment: Environment, wallet: str, parameters: dict[str, str | bool]) -> str:
    """The action restated with what it would get, from the quote the trade itself would run
    (the curve or the pool, the environment's limits)."""
    if not environment.accepts_trades:
        return f"{environment.name} is not taking trades right now."
    position = Position.objects.filter(environment=environment, wallet=wallet).first()
    is_buy = bool(parameters["isBuy"])
    if is_buy:
        amount = int(str(parameters["amount"]))
        if position is not None and amount > position.sol_balance:
            return f"You have only {sol(position.sol_balance)} to spend."
    else:
        held = position.token_balance if position else 0
        if "fraction" in parameters:
            amount = int(Decimal(held) * Decimal(str(parameters["fraction"])))
            if amount <= 0:
                return f"You hold no {environment.name} tokens to sell."
        else:
            amount = int(str(parameters["amount"]))
            if amount > held:
                return f"You hold only {tokens(held)} tokens of {environment.name}."
    try:
        quoted = quote(environment.market, amount=amount, is_buy=is_buy)
    except CurveError:
        return "That amount is too small to trade."
    if quoted.refusal is not None:
        return f"{environment.name} would refuse that: {quoted.refusal.message}."
    fill = quoted.fill
    if is_buy:
        return (
            f"Buy about {tokens(fill.token_amount)} tokens of {environment.name} "
            f"for {sol(-fill.sol_delta)}? Confirm to trade."
        )
    return (
        f"Sell {tokens(amount)} tokens of {environment.name} "
        f"for about {sol(fill.sol_delta)}? Confirm to trade."
    )


def _rewards(wallet: str, *, claim: bool) -> str:
    view = reward_view(wallet)
    unclaimed = int(view.unclaimedRewards)
    if claim:
        if not unclaimed:
            return "You have no unclaimed rewards yet."
        return f"Claim {sol(unclaimed)} of rewards? Confirm to claim."
    tier = view.tier or "no tier yet"
    return f"You are {tier} with {sol(unclaimed)} unclaimed."
