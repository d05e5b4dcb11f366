// The trading room: signs in with an ed25519 key kept in this browser, then talks /ws.
// Amounts stay integers (BigInt lamports and raw units); text is always set as text, never HTML.
"use strict";

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const $ = (id) => document.getElementById(id);
let socket = null;
let wallet = null;
let joined = null;
let lastSequence = 0;

function base58(bytes) {
  let value = 0n;
  for (const byte of bytes) value = value * 256n + BigInt(byte);
  let out = "";
  while (value > 0n) { out = ALPHABET[Number(value % 58n)] + out; value /= 58n; }
  for (const byte of bytes) { if (byte !== 0) break; out = "1" + out; }
  return out;
}

// "1.5" with `decimals` places → integer string, without floating point.
function toUnits(text, decimals) {
  const match = /^(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!match) throw new Error("enter a positive number");
  const fraction = (match[2] || "").slice(0, decimals).padEnd(decimals, "0");
  return (BigInt(match[1]) * 10n ** BigInt(decimals) + BigInt(fraction || "0")).toString();
}

function fromUnits(text, decimals) {
  const value = BigInt(text);
  const unit = 10n ** BigInt(decimals);
  const fraction = (value % unit).toString().padStart(decimals, "0").replace(/0+$/, "");
  return (value / unit).toString() + (fraction ? "." + fraction : "");
}

function status(text) { $("status").textContent = text; }

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || response.statusText);
  return data;
}

async function browserKey() {
  const stored = localStorage.getItem("funpump-key");
  if (stored) {
    const jwk = JSON.parse(stored);
    const privateKey = await crypto.subtle.importKey("jwk", jwk, "Ed25519", true, ["sign"]);
    const publicJwk = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
    const publicKey = await crypto.subtle.importKey("jwk", publicJwk, "Ed25519", true, ["verify"]);
    return { privateKey, publicKey };
  }
  const pair = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]);
  localStorage.setItem("funpump-key", JSON.stringify(
    await crypto.subtle.exportKey("jwk", pair.privateKey)));
  return pair;
}

async function signIn() {
  const pair = await browserKey();
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const address = base58(raw);
  const challenge = await post("/api/auth/challenge", { wallet: address });
  const signature = new Uint8Array(await crypto.subtle.sign(
    "Ed25519", pair.privateKey, new TextEncoder().encode(challenge.message)));
  await post("/api/auth/verify",
    { wallet: address, nonce: challenge.nonce, signature: base58(signature) });
  wallet = address;
  $("wallet").textContent = address;
  $("sign-in").disabled = true;
  connect();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("open", () => { $("join").disabled = false; status("connected"); });
  socket.addEventListener("close", () => { $("join").disabled = true; status("disconnected"); });
  socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  setInterval(() => send("HEARTBEAT"), 30000);
}

function send(type, data, requestId) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type, data, requestId }));
  }
}

function showMarket(state) {
  $("price").textContent = state.price;
  $("market-cap").textContent = fromUnits(state.marketCap, 9);
  if (state.participants !== undefined) $("participants").textContent = state.participants;
}

function showBalance(balance) {
  $("balance-sol").textContent = fromUnits(balance.sol, 9);
  $("balance-token").textContent = fromUnits(balance.token, 6);
}

function addTrade(trade) {
  const item = document.createElement("li");
  const side = trade.isBuy ? "bought" : "sold";
  item.textContent = `${trade.userId.slice(0, 6)}… ${side} ${fromUnits(trade.tokenAmount, 6)} ` +
    `tokens for ${fromUnits(trade.solAmount, 9)} SOL at ${trade.price}`;
  $("trades").prepend(item);
}

function addChat(message) {
  const item = document.createElement("li");
  const who = document.createElement("strong");
  who.textContent = message.userId.slice(0, 6) + "…";
  item.append(who, " ", message.message);  // text nodes: markup shows as typed
  $("chat").append(item);
}

function handle(message) {
  const data = message.data;
  switch (message.type) {
    case "ENVIRONMENT_STATE":
      joined = data.id;
      lastSequence = data.sequence;
      $("trades").replaceChildren();
      $("chat").replaceChildren();
      data.trades.forEach(addTrade);
      data.chatHistory.forEach(addChat);
      showMarket(data);
      showBalance(data.balance);
      status(`joined ${data.name}`);
      break;
    case "VIRTUAL_TRADE_EXECUTED": {
      if (data.sequence !== lastSequence + 1) return rejoin();
      lastSequence = data.sequence;
      addTrade(data.trade);
      const vS = BigInt(data.newReserves.sol), vT = BigInt(data.newReserves.token);
      // SOL per whole token = vS / (vT * 1000), printed to 24 places like the server's prices.
      $("price").textContent = fromUnits((vS * 10n ** 24n / (vT * 1000n)).toString(), 24);
      $("market-cap").textContent = fromUnits((vS * 10n ** 15n / vT).toString(), 9);
      if (data.balance) showBalance(data.balance);
      break;
    }
    case "CHAT_MESSAGE":
      if (data.sequence !== lastSequence + 1) return rejoin();
      lastSequence = data.sequence;
      addChat(data);
      break;
    case "ERROR":
      status(`${data.code}: ${data.message}`);
      break;
  }
}

function rejoin() { send("JOIN_ENVIRONMENT", { environmentId: joined, userId: wallet }); }

async function loadEnvironments() {
  const response = await fetch("/api/environments?limit=50");
  const page = await response.json();
  for (const environment of page.results) {
    const option = document.createElement("option");
    option.value = environment.id;
    option.textContent = `${environment.name} (${environment.id})`;
    $("environment").append(option);
  }
}

$("sign-in").addEventListener("click", () => signIn().catch((error) => status(error.message)));
$("join").addEventListener("click", () => {
  send("JOIN_ENVIRONMENT", { environmentId: $("environment").value, userId: wallet });
});
$("trade-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const isBuy = event.submitter.value === "buy";
  try {
    const amount = toUnits($("amount").value, isBuy ? 9 : 6);
    send("VIRTUAL_TRADE", { environmentId: joined, amount, isBuy });
  } catch (error) { status(error.message); }
});
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  send("CHAT_MESSAGE", { environmentId: joined, message: $("chat-text").value });
  $("chat-text").value = "";
});
loadEnvironments();
