"""Resource caps: connections per wallet and per address, holdings per wallet, inbound bytes."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from funpump.asgi import application
from kernel import caps
from kernel.breaker import Breaker
from tests.conftest import HOST, ORIGIN, Wallet, open_socket
from tests.e2e import conftest as e2e

daphne_server = e2e.daphne_server  # the real-server fixture

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    answer: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return answer


async def attempt(wallet: Wallet | None = None, ip: str | None = None) -> WebsocketCommunicator:
    headers = wallet.headers() if wallet else [ORIGIN, HOST]
    socket = WebsocketCommunicator(application, "/ws", headers=headers)
    if ip is not None:
        socket.scope["client"] = [ip, 40000]
    connected, _ = await socket.connect()
    assert connected
    return socket


async def refused(socket: WebsocketCommunicator) -> dict[str, Any]:
    """The close a refused connection gets right after its handshake."""
    closed: dict[str, Any] = await socket.receive_output(timeout=5)
    assert closed["type"] == "websocket.close", closed
    return closed


async def heartbeat(socket: WebsocketCommunicator) -> None:
    assert (await ask(socket, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"


def random_ip() -> str:
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


# --- connections --------------------------------------------------------------------------------


async def test_a_wallet_over_its_connection_cap_is_closed_with_4429(settings, alice, bob):
    settings.FUNPUMP_MAX_CONNECTIONS_PER_WALLET = 2
    first, second = await attempt(alice), await attempt(alice)
    third = await attempt(alice)
    await third.send_to(text_data='{"type": "HEARTBEAT"}')  # before it sees the close
    closed = await refused(third)
    assert closed["code"] == 4429
    assert closed["reason"] == "too many connections from this wallet"
    assert await third.receive_nothing(timeout=0.2)  # the frame was not handled
    await heartbeat(first)  # the ones inside the cap are untouched
    assert (await ask(await attempt(bob), {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    await first.disconnect()
    again = await attempt(alice)  # a slot is free once a connection closes
    await heartbeat(again)
    for socket in (second, again):
        await socket.disconnect()


async def test_an_address_over_its_connection_cap_is_closed_with_4429(settings, alice):
    settings.FUNPUMP_MAX_CONNECTIONS_PER_IP = 2
    ip = random_ip()
    anonymous = await attempt(ip=ip)
    signed_in = await attempt(alice, ip=ip)  # anonymous and signed-in count alike
    closed = await refused(await attempt(ip=ip))
    assert (closed["code"], closed["reason"]) == (4429, "too many connections from this address")
    elsewhere = await attempt(ip=random_ip())
    await heartbeat(elsewhere)
    await anonymous.disconnect()
    await heartbeat(await attempt(ip=ip))
    await signed_in.disconnect()
    await elsewhere.disconnect()


async def test_behind_a_proxy_the_forwarded_address_is_capped(settings):
    settings.NUM_PROXIES = 1
    settings.FUNPUMP_MAX_CONNECTIONS_PER_IP = 1
    proxy, client, other = random_ip(), random_ip(), random_ip()

    async def through_proxy(forwarded_for: str) -> WebsocketCommunicator:
        headers = [ORIGIN, HOST, (b"x-forwarded-for", forwarded_for.encode())]
        socket = WebsocketCommunicator(application, "/ws", headers=headers)
        socket.scope["client"] = [proxy, 40000]
        assert (await socket.connect())[0]
        return socket

    first = await through_proxy(f"1.1.1.1, {client}")
    await heartbeat(await through_proxy(other))  # another client behind the same proxy
    closed = await refused(await through_proxy(f"2.2.2.2, {client}"))  # a forged left part
    assert closed["code"] == 4429
    await first.disconnect()


async def test_loopback_addresses_are_not_capped(settings, alice):
    settings.FUNPUMP_MAX_CONNECTIONS_PER_IP = 1
    sockets = [await attempt(ip=ip) for ip in ("127.0.0.1", "127.0.0.1", "::1", "::1")]
    for socket in sockets:
        await heartbeat(socket)
        await socket.disconnect()


async def test_a_zero_cap_means_no_cap(settings, alice):
    settings.FUNPUMP_MAX_CONNECTIONS_PER_WALLET = 0
    sockets = [await attempt(alice) for _ in range(3)]
    for socket in sockets:
        await heartbeat(socket)
        await socket.disconnect()


@pytest.fixture
def shared_prefix(redis_url: str) -> str:
    return f"{django_settings.FUNPUMP_REDIS_PREFIX}-caps-{secrets.token_hex(4)}"


async def test_slots_are_counted_across_processes_in_redis(redis_url, shared_prefix):
    one = caps.ConnectionSlots(redis_url, shared_prefix, Breaker("test"))
    two = caps.ConnectionSlots(redis_url, shared_prefix, Breaker("test"))
    owners = [("wallet:w", 2), ("ip:1.2.3.4", 10)]
    assert await one.take("p1.1", owners) is None
    assert await two.take("p2.1", owners) is None
    assert await two.take("p2.2", owners) == "wallet:w"  # the other process holds one
    assert await two.take("p2.2", [("ip:1.2.3.4", 10)]) is None  # a refusal took nothing
    await one.give_back("p1.1", ["wallet:w", "ip:1.2.3.4"])
    assert await two.take("p2.3", owners) is None


async def test_a_crashed_process_does_not_hold_its_slots(redis_url, shared_prefix, monkeypatch):
    monkeypatch.setattr(caps, "SLOT_TTL", 1)
    crashed = caps.ConnectionSlots(redis_url, shared_prefix, Breaker("test"))
    alive = caps.ConnectionSlots(redis_url, shared_prefix, Breaker("test"))
    assert await crashed.take("dead.1", [("wallet:w", 1)]) is None
    assert await alive.take("live.1", [("wallet:w", 1)]) == "wallet:w"
    await asyncio.sleep(1.2)  # no refresh came from the crashed process
    assert await alive.take("live.1", [("wallet:w", 1)]) is None
    monkeypatch.setattr(caps, "SLOT_TTL", 60)
    await alive.refresh()  # a live process keeps extending its own slots
    await asyncio.sleep(1.2)
    assert await crashed.take("dead.2", [("wallet:w", 1)]) == "wallet:w"


async def test_without_redis_each_process_counts_its_own(unused_tcp_port):
    breaker = Breaker("test")
    down = caps.ConnectionSlots(f"redis://127.0.0.1:{unused_tcp_port}/0", "x", breaker)
    assert await down.take("c1", [("wallet:w", 1)]) is None
    assert breaker.down
    assert await down.take("c2", [("wallet:w", 1)]) == "wallet:w"
    await down.give_back("c1", ["wallet:w"])
    assert await down.take("c2", [("wallet:w", 1)]) is None


# --- holdings per wallet ----------------------------------------------------------------------


def join(environment_id: str, wallet: Wallet) -> dict[str, Any]:
    return {
        "type": "JOIN_ENVIRONMENT",
        "data": {"environmentId": environment_id, "userId": wallet.address},
    }


def subscribe(environment: Any) -> dict[str, Any]:
    return {
        "type": "SUBSCRIBE_PRICE",
        "data": {"mintAddress": environment.token_mint, "environmentId": environment.id},
    }


async def test_joined_environments_are_capped_per_wallet_across_its_connections(
    settings, alice, bob, make_environment
):
    settings.FUNPUMP_MAX_JOINED_ENVIRONMENTS = 2
    one, two, three = [await database_sync_to_async(make_environment)() for _ in range(3)]
    first, second = await open_socket(alice), await open_socket(alice)
    assert (await ask(first, join(one.id, alice)))["type"] == "ENVIRONMENT_STATE"
    assert (await ask(second, join(two.id, alice)))["type"] == "ENVIRONMENT_STATE"
    over = await ask(second, join(three.id, alice))
    assert over["data"]["code"] == "INVALID_MESSAGE"
    assert over["data"]["details"] == {"field": "environmentId", "limit": 2}
    # What the wallet already holds can be joined from any of its connections.
    assert (await ask(second, join(one.id, alice)))["type"] == "ENVIRONMENT_STATE"
    assert (await ask(first, join(one.id, alice)))["type"] == "ENVIRONMENT_STATE"
    other = await open_socket(bob)  # another wallet has its own allowance
    assert (await ask(other, join(three.id, bob)))["type"] == "ENVIRONMENT_STATE"
    await second.disconnect()  # two is no longer held; one still is, by the first connection
    assert (await ask(first, join(three.id, alice)))["type"] == "ENVIRONMENT_STATE"
    for socket in (first, other):
        await socket.disconnect()


async def test_a_failed_join_holds_nothing(settings, alice, environment):
    settings.FUNPUMP_MAX_JOINED_ENVIRONMENTS = 1
    socket = await open_socket(alice)
    missing = await ask(socket, join("env_missing", alice))
    assert missing["data"]["code"] == "ENVIRONMENT_NOT_FOUND"
    assert (await ask(socket, join(environment.id, alice)))["type"] == "ENVIRONMENT_STATE"
    await socket.disconnect()


async def test_a_printable_id_no_environment_can_have_is_not_found(alice):
    socket = await open_socket(alice)
    for environment_id in ["é", "has space", "a/b", "-leading"]:
        answer = await ask(socket, join(environment_id, alice))
        assert answer["data"]["code"] == "ENVIRONMENT_NOT_FOUND", answer
    await heartbeat(socket)
    await socket.disconnect()


async def test_price_subscriptions_are_capped_per_wallet_across_its_connections(
    settings, alice, make_environment
):
    settings.FUNPUMP_MAX_SUBSCRIPTIONS = 2
    one, two, three = [await database_sync_to_async(make_environment)() for _ in range(3)]
    first, second = await open_socket(alice), await open_socket(alice)
    assert (await ask(first, subscribe(one)))["type"] == "PRICE_UPDATE"
    assert (await ask(second, subscribe(two)))["type"] == "PRICE_UPDATE"
    over = await ask(second, subscribe(three))
    assert over["data"]["code"] == "INVALID_MESSAGE"
    assert over["data"]["details"]["limit"] == 2
    assert (await ask(second, subscribe(one)))["type"] == "PRICE_UPDATE"  # already held
    await second.send_to(
        text_data=json.dumps({**subscribe(two), "type": "UNSUBSCRIBE_PRICE"})
    )  # no reply
    assert (await ask(second, subscribe(three)))["type"] == "PRICE_UPDATE"
    for socket in (first, second):
        await socket.disconnect()


async def test_anonymous_subscriptions_are_capped_per_connection(settings, make_environment):
    settings.FUNPUMP_MAX_SUBSCRIPTIONS = 1
    one, two = [await database_sync_to_async(make_environment)() for _ in range(2)]
    first, second = await open_socket(), await open_socket()
    assert (await ask(first, subscribe(one)))["type"] == "PRICE_UPDATE"
    assert (await ask(second, subscribe(two)))["type"] == "PRICE_UPDATE"
    assert (await ask(first, subscribe(two)))["data"]["code"] == "INVALID_MESSAGE"
    for socket in (first, second):
        await socket.disconnect()


def test_holdings_count_distinct_items_per_owner():
    holdings = caps.Holdings()
    assert holdings.admit("w", "c1", "a", 2)
    assert holdings.admit("w", "c2", "a", 2)
    assert holdings.admit("w", "c2", "b", 2)
    assert not holdings.admit("w", "c1", "c", 2)
    holdings.release_connection("w", "c2")
    assert holdings.held("w") == 1  # "a" is still held through c1
    holdings.release("w", "c1", "a")
    assert holdings.held("w") == 0


# --- inbound bytes ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_byte_budget_allows_a_burst_then_the_rate():
    clock = Clock()
    budget = caps.InboundBudget(1000, 3000, 100, 10**9, clock)
    for _ in range(3):
        budget.arrived(1000)
    assert budget.wait(0) == 0  # the burst
    budget.arrived(1000)
    assert budget.wait(0) == pytest.approx(1.0)  # one second of debt
    clock.now += 0.5
    assert budget.wait(0) == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.wait(0) == 0
    clock.now += 3600  # refills up to the burst, no further
    for _ in range(3):
        budget.arrived(1000)
    assert budget.wait(0) == 0
    budget.arrived(1)
    assert budget.wait(0) > 0


def test_waiting_frames_stop_reading_until_the_application_catches_up():
    budget = caps.InboundBudget(0, 0, max_frames=3, max_bytes=250, clock=Clock())
    for _ in range(3):
        budget.arrived(50)
    assert budget.wait(3) == 0  # no byte rate configured, three frames are allowed
    budget.arrived(50)
    assert budget.wait(4) == caps.InboundBudget.POLL  # a fourth waits
    assert budget.wait(3) == 0  # the application took one
    budget.arrived(200)
    assert budget.wait(4) == caps.InboundBudget.POLL  # 350 bytes wait
    assert budget.wait(1) == 0  # only the 200-byte frame is left


@pytest.mark.timeout(120)
async def test_a_fast_sender_is_slowed_and_every_frame_answered(daphne_server):
    server = await database_sync_to_async(daphne_server)(
        FUNPUMP_INBOUND_BYTES_PER_SECOND="200000", FUNPUMP_INBOUND_BURST_BYTES="100000"
    )
    frame = json.dumps({"type": "HEARTBEAT", "data": {"pad": "x" * 60_000}})
    async with websockets.connect(server.ws) as client:
        for _ in range(12):  # 720 KB: several seconds of the budget
            await client.send(frame)
        for _ in range(12):
            assert json.loads(await client.recv())["type"] == "HEARTBEAT"
    assert "slowing down a fast sender" in server.output()


@pytest.mark.timeout(120)
async def test_the_wallet_cap_holds_across_server_processes(daphne_server, redis_url, alice):
    start = database_sync_to_async(daphne_server)
    one = await start(FUNPUMP_MAX_CONNECTIONS_PER_WALLET="2")
    two = await start(FUNPUMP_MAX_CONNECTIONS_PER_WALLET="2")
    headers = {"Authorization": f"Bearer {alice.token}"}
    first = await websockets.connect(one.ws, additional_headers=headers)
    second = await websockets.connect(one.ws, additional_headers=headers)
    third = await websockets.connect(two.ws, additional_headers=headers)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(third.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4429
    assert closed.value.rcvd.reason == "too many connections from this wallet"
    await first.close()
    for _ in range(50):  # the slot is free once the server has seen the close
        fourth = await websockets.connect(two.ws, additional_headers=headers)
        await fourth.send('{"type": "HEARTBEAT"}')
        try:
            assert json.loads(await asyncio.wait_for(fourth.recv(), 10))["type"] == "HEARTBEAT"
            break
        except websockets.ConnectionClosed:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the slot was never given back")
    for socket in (second, fourth):
        await socket.close()
