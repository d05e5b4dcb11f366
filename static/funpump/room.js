// The trading room: signs in with an ed25519 key kept in this browser, then talks /ws.
// Amounts stay integers (BigInt lamports and raw units); text is always set as text, never HTML.
"use strict";

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const $ = (id) => document.getElementById(id);
// The protocol's names and limits, rendered into the page from its declaration (json_script).
const PROTOCOL = JSON.parse($("protocol").textContent);
let socket = null;
let wallet = null;
let joined = null;
let lastSequence = 0;
let tokenBalance = "0";  // raw units held in the joined environment, for "sell half"
let priced = null;  // the environment whose PRICE_UPDATEs this socket subscribed to
let pricedMint = null;
let currentRound = 1;

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

let heartbeat = null;
let reconnects = 0;  // attempts since the last connection that opened

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("open", () => {
    reconnects = 0;
    priced = pricedMint = null;  // a new socket has no subscriptions yet
    $("join").disabled = false;
    status("connected");
    if (joined) rejoin();  // back after a reconnection: the state comes again, gaps included
  });
  socket.addEventListener("close", (event) => {
    $("join").disabled = true;
    status("disconnected");
    voiceReset("disconnected");
    reconnect(event.code, event.reason);
  });
  socket.addEventListener("message", (event) => handle(untag(JSON.parse(event.data))));
  if (!heartbeat) heartbeat = setInterval(() => send("HEARTBEAT"), 30000);
}

// A server restart closes with 1012 (1001 when it goes away): come back at once, after a short
// random pause so a whole room does not arrive together; behind a proxy that reaches another
// server process. 4429 (too many connections from this wallet or address) is not retried: the
// reason is shown, since another try would only be refused again. Other closes retry every 3 s,
// up to 5 times.
function reconnect(code, reason) {
  if (code === 4429) { status(`disconnected: ${reason || "too many connections"}`); return; }
  if (reconnects >= 5) { status("disconnected: reload the page to reconnect"); return; }
  reconnects += 1;
  const restart = code === 1012 || code === 1001;
  const delay = restart && reconnects === 1 ? Math.random() * 1000 : 3000;
  status(restart ? "server restarting: reconnecting…" : "disconnected: reconnecting…");
  setTimeout(connect, delay);
}

// A trade, chat line or claim runs once per requestId (docs/protocol.md, "Idempotent requests"),
// so every message goes out with a fresh id, "<tag>~<page>.<n>"; answers are read by the tag.
const pageId = Math.random().toString(36).slice(2, 10);
let sent = 0;

function send(type, data, tag) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    sent += 1;
    const requestId = tag === undefined ? undefined : `${tag}~${pageId}.${sent}`;
    socket.send(JSON.stringify({ type, data, requestId }));
  }
}

function untag(message) {
  if (typeof message.requestId === "string") message.requestId = message.requestId.split("~")[0];
  return message;
}

function showMarket(state) {
  $("price").textContent = state.price;
  $("market-cap").textContent = fromUnits(state.marketCap, 9);
  if (state.participants !== undefined) $("participants").textContent = state.participants;
  if (state.phase !== undefined) showPhase(state);
  if (state.volume24h !== undefined) $("volume").textContent = fromUnits(state.volume24h, 9);
  if (state.priceChange24h !== undefined) {
    const change = Number(state.priceChange24h) * 100;  // display only: never a balance
    $("change").textContent = `${change > 0 ? "+" : ""}${change.toFixed(2)} %`;
  }
}

// Buy and Sell only where the market takes trades: open, on its curve or its pool (a curve that
// completed before graduation existed takes none until an operator starts a new round).
function showTradable(state) {
  const tradable = state.isOpen && (state.phase === "pool" || !state.complete);
  document.querySelectorAll("#trade-form button").forEach((button) => {
    button.disabled = !tradable;
  });
  if (!tradable) status(`${state.name} is not taking trades right now`);
}

// The curve's progress toward completion, then the pool it graduated to (docs/protocol.md).
function showPhase(state) {
  if (state.round !== undefined) currentRound = state.round;
  const round = state.round > 1 ? ` · round ${state.round}` : "";
  $("phase").textContent = state.phase === "pool"
    ? `AMM pool (graduated)${round}`
    : state.progress === undefined
      ? `bonding curve${round}`
      : `bonding curve, ${(Number(state.progress) * 100).toFixed(1)} % sold${round}`;
}

function showBalance(balance) {
  $("balance-sol").textContent = fromUnits(balance.sol, 9);
  $("balance-token").textContent = fromUnits(balance.token, 6);
  tokenBalance = balance.token;
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
      if (data.id !== joined) voiceClear();  // a command heard for another room is not for this
      if (message.requestId === "voice-confirm") voiceResult(`Joined ${data.name}.`);
      joined = data.id;
      lastSequence = data.sequence;
      $("trades").replaceChildren();
      $("chat").replaceChildren();
      data.trades.forEach(addTrade);
      data.chatHistory.forEach(addChat);
      showMarket(data);
      showBalance(data.balance);
      status(`joined ${data.name}`);
      showTradable(data);
      // Price, 24 h volume, phase and progress as they change (coalesced by the server).
      if (priced !== data.id) {
        if (pricedMint) send("UNSUBSCRIBE_PRICE", { mintAddress: pricedMint, environmentId: priced });
        send("SUBSCRIBE_PRICE", { mintAddress: data.tokenMint, environmentId: data.id });
        priced = data.id;
        pricedMint = data.tokenMint;
      }
      voiceIdle();
      break;
    case "VIRTUAL_TRADE_EXECUTED": {
      if (message.requestId === "voice-confirm") {
        const side = data.trade.isBuy ? "Bought" : "Sold";
        voiceResult(`${side} ${fromUnits(data.trade.tokenAmount, 6)} tokens for ` +
          `${fromUnits(data.trade.solAmount, 9)} SOL.`);
      }
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
      if (message.requestId === "voice-confirm") voiceResult("Sent to the chat.");
      if (data.sequence !== lastSequence + 1) return rejoin();
      lastSequence = data.sequence;
      addChat(data);
      break;
    case "MARKET_GRADUATED":
    case "ROUND_STARTED":
      if (data.environmentId !== joined) break;
      if (data.sequence !== lastSequence + 1) return rejoin();
      lastSequence = data.sequence;
      if (message.type === "MARKET_GRADUATED") {
        showPhase({ phase: "pool", round: data.round });
        status("The curve is complete: trading goes on in the AMM pool.");
      } else {
        status(`Round ${data.round} started: fresh balances, the curve starts again.`);
      }
      break;
    case "PRICE_UPDATE":
      if (data.environmentId !== joined) break;
      $("price").textContent = data.price;
      $("market-cap").textContent = fromUnits(data.marketCap, 9);
      $("volume").textContent = fromUnits(data.volume, 9);
      if (data.phase !== undefined) showPhase({ ...data, round: currentRound });
      break;
    case "PARTICIPANTS":
      if (data.environmentId === joined) $("participants").textContent = data.participants;
      break;
    case "REWARD_UPDATE":
      if (message.requestId === "voice-confirm") {
        voiceResult(`Claimed. Tier: ${data.tier || "none yet"}; ` +
          `${fromUnits(data.unclaimedRewards, 9)} SOL unclaimed.`);
      }
      break;
    case "VOICE_SESSION_READY":
    case "VOICE_TRANSCRIPTION":
    case "VOICE_COMMAND":
    case "VOICE_RESPONSE":
      voiceHandle(message);
      break;
    case "ERROR":
      status(`${data.code}: ${data.message}`);
      voiceError(message);
      break;
  }
}

function rejoin() { send("JOIN_ENVIRONMENT", { environmentId: joined, userId: wallet }, "rejoin"); }

// --- voice: microphone → 16 kHz PCM16 binary frames; the server answers, the person confirms ---

const voice = {
  session: null,   // {id, expiresAt, environment} of the open voice session
  starting: null,  // {resolve, reject} while VOICE_SESSION_START is unanswered
  capture: null,   // {stream, context, node} while the microphone is open
  opening: false,  // between a press of Speak and the microphone being open
  command: null,   // the last VOICE_COMMAND that a Confirm would carry out
  fresh: true,     // the next transcription begins a new utterance
  shown: null,     // the text of the turn's last final, as shown
};
const FRACTIONS = { "1": "all", "0.5": "half", "0.25": "a quarter" };
const METRICS = { price: "the price", volume: "the 24 h volume", marketCap: "the market cap" };

function voiceState(text) { $("voice-state").textContent = text; }
function voiceResult(text) { $("voice-result").textContent = text; }

function voiceIdle() {
  if (voice.capture || voice.opening) return;
  $("speak").disabled = !joined || !socket || socket.readyState !== WebSocket.OPEN;
  $("speak").textContent = "Speak";
  $("speak").setAttribute("aria-pressed", "false");
}

function voiceClear() {
  for (const id of ["voice-intent", "voice-params", "voice-response", "voice-result"]) {
    $(id).textContent = "";
  }
  $("voice-error").textContent = "";
  $("voice-confirm").hidden = true;
  voice.command = null;
}

// The socket closed: the server has ended the session with it.
function voiceReset(reason) {
  if (voice.starting) voice.starting.reject(new Error(reason));
  voice.starting = null;
  voice.session = null;
  if (voice.capture) { closeCapture(voice.capture); voice.capture = null; voiceState(reason); }
  voiceIdle();
}

function voiceSession() {
  const session = voice.session;
  if (session && session.environment === joined && Date.now() < session.expiresAt - 10000) {
    return Promise.resolve(session);
  }
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    return Promise.reject(new Error("not connected"));
  }
  return new Promise((resolve, reject) => {
    voice.starting = { resolve, reject, environment: joined };
    send("VOICE_SESSION_START", { userId: wallet, environmentId: joined }, "voice-start");
  });
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new Error("this browser cannot record here (the microphone needs HTTPS or localhost)");
  }
  const stream = await navigator.mediaDevices.getUserMedia(
    { audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
  let context = null;
  try {
    let source;
    try {
      context = new AudioContext({ sampleRate: 16000 });  // the browser resamples the microphone
      source = context.createMediaStreamSource(stream);
    } catch (error) {
      // Firefox will not feed a 16 kHz context from a 48 kHz microphone: the worklet resamples.
      if (context) context.close();
      context = new AudioContext();
      source = context.createMediaStreamSource(stream);
    }
    await context.audioWorklet.addModule($("speak").dataset.worklet);
    const node = new AudioWorkletNode(context, "pcm-recorder", { numberOfInputs: 1 });
    source.connect(node);
    node.connect(context.destination);  // silent output; keeps the node running
    await context.resume();
    return { stream, context, node };
  } catch (error) {
    stream.getTracks().forEach((track) => track.stop());
    if (context) context.close();
    throw error;
  }
}

function closeCapture(capture) {
  if (capture.closed) return;
  capture.closed = true;
  capture.node.port.onmessage = null;
  capture.stream.getTracks().forEach((track) => track.stop());
  capture.context.close();
}

async function speakStart() {
  voice.opening = true;
  $("speak").disabled = true;
  voiceState("starting…");
  $("voice-error").textContent = "";
  const [session, capture] = await Promise.allSettled([voiceSession(), openMicrophone()]);
  voice.opening = false;
  if (session.status === "rejected" || capture.status === "rejected") {
    if (capture.status === "fulfilled") closeCapture(capture.value);
    const error = session.status === "rejected" ? session.reason : capture.reason;
    $("voice-error").textContent = error.message || String(error);
    voiceState("");
    voiceIdle();
    return;
  }
  const { id } = session.value;
  voice.capture = capture.value;
  voice.capture.node.port.onmessage = (event) => {
    const { pcm, last } = event.data;  // ~100 ms of 16 kHz PCM16, as the server wants it
    if (pcm.byteLength && socket.readyState === WebSocket.OPEN) socket.send(pcm);
    if (last) {
      send("VOICE_AUDIO_END", { sessionId: id }, "voice-end");
      closeCapture(capture.value);
    }
  };
  voice.fresh = true;
  voice.shown = null;
  $("speak").textContent = "Stop";
  $("speak").setAttribute("aria-pressed", "true");
  $("speak").disabled = false;
  voiceState("listening… say a command, then press Stop");
}

function speakStop() {
  const capture = voice.capture;
  voice.capture = null;
  capture.node.port.postMessage("flush");  // its answer sends the rest and VOICE_AUDIO_END
  voiceState("");
  voiceIdle();
}

function describe(command) {
  const p = command.parameters;
  switch (command.intent) {
    case "EXECUTE_TRADE":
      if (p.isBuy) return `buy ${fromUnits(p.amount, 9)} SOL`;
      if (p.fraction !== undefined) {
        return `sell ${FRACTIONS[p.fraction] || p.fraction} of your tokens`;
      }
      return `sell ${fromUnits(p.amount, 6)} tokens`;
    case "LAUNCH_TOKEN": return `launch a token called “${p.tokenName}”`;
    case "MARKET_ANALYSIS": return METRICS[p.metric] || p.metric;
    case "JOIN_ENVIRONMENT": return `join “${p.environmentName}”`;
    case "CHAT": return `say “${p.message}”`;
    case "GET_REWARDS": return "your rewards";
    case "CLAIM_REWARDS": return "claim your rewards";
    default: return "not understood";
  }
}

function voiceHandle(message) {
  const data = message.data;
  if (message.type === "VOICE_SESSION_READY") {
    if (message.requestId !== "voice-start" || !voice.starting) return;
    const environment = voice.starting.environment;
    voice.session = { id: data.sessionId, expiresAt: data.expiresAt, environment };
    voice.starting.resolve(voice.session);
    voice.starting = null;
    return;
  }
  if (!voice.session || data.sessionId !== voice.session.id) return;  // an older session's
  switch (message.type) {
    case "VOICE_TRANSCRIPTION":
      // Stop's VOICE_AUDIO_END is answered by the turn's final again when silence had already
      // ended the utterance: the command shown under it stays.
      if (data.isFinal && voice.fresh && message.requestId === "voice-end"
          && data.text === voice.shown) break;
      if (voice.fresh) { voiceClear(); voice.fresh = false; }
      $("voice-heard").textContent = data.text || (data.isFinal ? "(nothing heard)" : "…");
      $("voice-heard").classList.toggle("interim", !data.isFinal);
      if (data.isFinal) { voice.fresh = true; voice.shown = data.text; }
      break;
    case "VOICE_COMMAND": {
      $("voice-intent").textContent = data.intent;
      const sure = Math.round(data.confidence * 100);
      $("voice-params").textContent = `${describe(data)} (${sure}% sure)`;
      // Commands a message carries out can be confirmed; the others only ask for figures.
      voice.command = Object.hasOwn(PROTOCOL.confirmedBy, data.intent) ? data : null;
      break;
    }
    case "VOICE_RESPONSE":
      $("voice-response").textContent = data.text;
      $("voice-confirm").hidden = !voice.command;
      break;
  }
}

// Errors about voice: answers to voice-* requests, and those the server pushes unasked (about
// the streamed audio or a heard command: RATE_LIMITED, a session ended elsewhere or expired).
function voiceError(message) {
  const unasked = message.requestId === undefined || message.requestId === null;
  if (!unasked && !String(message.requestId).startsWith("voice-")) return;
  const data = message.data;
  if (message.requestId === "voice-start" && voice.starting) {
    voice.starting.reject(new Error(`${data.code}: ${data.message}`));
    voice.starting = null;
    return;
  }
  $("voice-error").textContent = `${data.code}: ${data.message}`;
  if (data.code === "INVALID_MESSAGE" && (unasked || message.requestId === "voice-end")) {
    voice.session = null;  // ended or expired: the next press starts a new one
    if (voice.capture) {
      closeCapture(voice.capture);
      voice.capture = null;
      voiceState("");
      voiceIdle();
    }
  }
}

function voiceConfirm() {
  const command = voice.command;
  if (!command) return;
  const p = command.parameters;
  try {
    switch (command.intent) {
      case "EXECUTE_TRADE": {
        let amount = p.amount;
        if (!p.isBuy && p.fraction !== undefined) {
          // floor(balance × fraction) in integers: the fraction as an 18-place fixed-point number
          amount = (BigInt(tokenBalance) * BigInt(toUnits(p.fraction, 18)) / 10n ** 18n).toString();
          if (amount === "0") throw new Error("you hold no tokens to sell");
        }
        send("VIRTUAL_TRADE", { environmentId: joined, amount, isBuy: p.isBuy }, "voice-confirm");
        break;
      }
      case "CHAT":
        send("CHAT_MESSAGE", { environmentId: joined, message: p.message }, "voice-confirm");
        break;
      case "CLAIM_REWARDS":
        send("CLAIM_REWARDS", { userId: wallet }, "voice-confirm");
        break;
      case "JOIN_ENVIRONMENT": {
        const name = String(p.environmentName).toLowerCase();
        const option = [...$("environment").options]
          .find((item) => item.dataset.name.toLowerCase() === name);
        if (!option) throw new Error(`no environment called ${p.environmentName} in the list`);
        $("environment").value = option.value;
        send("JOIN_ENVIRONMENT", { environmentId: option.value, userId: wallet }, "voice-confirm");
        break;
      }
    }
    voice.command = null;
    $("voice-confirm").hidden = true;
    voiceResult("Sent…");
  } catch (error) { $("voice-error").textContent = error.message; }
}

async function loadEnvironments() {
  const response = await fetch("/api/environments?limit=50");
  const page = await response.json();
  for (const environment of page.results) {
    const option = document.createElement("option");
    option.value = environment.id;
    option.textContent = `${environment.name} (${environment.id})`;
    option.dataset.name = environment.name;
    $("environment").append(option);
  }
}

$("sign-in").addEventListener("click", () => signIn().catch((error) => status(error.message)));
$("join").addEventListener("click", () => {
  send("JOIN_ENVIRONMENT", { environmentId: $("environment").value, userId: wallet }, "join");
});
$("trade-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const isBuy = event.submitter.value === "buy";
  try {
    const amount = toUnits($("amount").value, isBuy ? 9 : 6);
    send("VIRTUAL_TRADE", { environmentId: joined, amount, isBuy }, "trade");
  } catch (error) { status(error.message); }
});
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  send("CHAT_MESSAGE", { environmentId: joined, message: $("chat-text").value }, "chat");
  $("chat-text").value = "";
});
$("speak").addEventListener("click", () => (voice.capture ? speakStop() : speakStart()));
$("voice-confirm").addEventListener("click", voiceConfirm);
loadEnvironments();
