// The approval console: the pending inbox (polled) and a prompt run over the
// WebSocket. Every URL is relative to this script's folder's parent, so the page
// works at /aura/console and behind the Gateway at /api/aura/console alike.
// Text from the server is only ever set as textContent.
"use strict";

(() => {
  const API_BASE = new URL("..", document.currentScript.src);
  const TOKEN_KEY = "aura.console.token";
  const POLL_MS = 2000;
  const MIN_POLL_GAP_MS = 1000;

  const $ = (id) => document.getElementById(id);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const pretty = (value) => JSON.stringify(value === undefined ? null : value, null, 2);

  // --- the token --------------------------------------------------------------

  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const fromUrl = fragment.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl.trim());
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function claimsOf(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch (_) {
      return null;
    }
  }

  function showWho() {
    const jwt = token();
    $("token").value = jwt;
    if (!jwt) {
      $("who").textContent = "No token: enter one to see and decide requests.";
      return;
    }
    const claims = claimsOf(jwt);
    $("who").textContent = claims
      ? `as ${claims.sub ?? "?"} of tenant ${claims.tenant_id ?? "(none)"}` +
        (claims.role ? `, role ${claims.role}` : "")
      : "The token is not a JWT.";
  }

  // --- the API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, code, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  const describe = (error) => (error.code ? `${error.message} (${error.code})` : error.message);

  async function api(method, path, body) {
    const jwt = token();
    if (!jwt) throw new ApiError("Enter a token first.", "NO_TOKEN", 0);
    const init = {
      method,
      cache: "no-store",
      headers: { Authorization: `Bearer ${jwt}`, Accept: "application/json" },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(new URL(path, API_BASE), init);
    } catch (_) {
      throw new ApiError("The server cannot be reached.", "NETWORK_ERROR", 0);
    }
    let envelope = null;
    try {
      envelope = await response.json();
    } catch (_) {
      envelope = null;
    }
    if (!response.ok || !envelope || envelope.success !== true) {
      const message =
        envelope && typeof envelope.message === "string"
          ? envelope.message
          : `HTTP ${response.status} ${response.statusText}`;
      const code = (envelope && envelope.errorCode) || `HTTP_${response.status}`;
      throw new ApiError(message, code, response.status);
    }
    return envelope.data;
  }

  function notice(text) {
    $("notice").textContent = text;
  }

  // --- a request's card (the inbox's, and the one inline in a run) ----------------

  // `decide(action, body)` sends the decision; it resolves once it is accepted.
  function requestCard(item, decide) {
    const error = el("p", { class: "card-error", role: "alert" });
    const outcome = el("span", { class: "outcome" });
    const countdown = el("span", { class: "countdown" });
    const details = el("dl");
    const detail = (name, value) => details.append(el("dt", { text: name }), el("dd", {}, value));
    detail("Requested by", item.userId ?? "?");
    detail("Session", el("code", { text: item.sessionId ?? "?" }));
    if (item.context && Object.keys(item.context).length) {
      detail("Context", el("pre", { class: "context", text: pretty(item.context) }));
    }
    const args = el("pre", { class: "args", text: pretty(item.args ?? {}) });
    detail("Arguments", args);

    const reason = el("input", { class: "reason", type: "text", maxlength: "1000",
      placeholder: "Reason (shown to the requester)", "aria-label": "Reason" });
    const editor = el("textarea", { class: "args-editor", rows: "6",
      "aria-label": "Arguments (JSON)", spellcheck: "false" });
    const rejectPanel = el("div", { class: "panel reject-panel", hidden: "" }, reason,
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "reject send-reject", text: "Send rejection",
          onclick: () => send("reject", reason.value.trim() ? { reason: reason.value.trim() } : {}) }),
        el("button", { type: "button", text: "Back", onclick: () => open(null) })));
    const editPanel = el("div", { class: "panel edit-panel", hidden: "" }, editor,
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "approve send-edit",
          text: "Approve with these arguments", onclick: () => sendEdited() }),
        el("button", { type: "button", text: "Back", onclick: () => open(null) })));
    const buttons = el("div", { class: "buttons" },
      el("button", { type: "button", class: "approve", text: "Approve",
        onclick: () => send("approve", {}) }),
      el("button", { type: "button", class: "reject", text: "Reject",
        onclick: () => open(rejectPanel) }),
      el("button", { type: "button", class: "edit", text: "Edit arguments",
        onclick: () => { editor.value = pretty(item.args ?? {}); open(editPanel); } }),
      outcome);

    const card = el("div", { class: "card", "data-request-id": item.requestId },
      el("div", { class: "card-head" },
        el("span", { class: "action", text: item.actionType ?? "?" }),
        el("code", { class: "request-id", text: item.requestId }),
        countdown),
      el("p", { class: "message", text: item.message ?? "" }),
      details, buttons, rejectPanel, editPanel, error);

    function open(panel) {
      for (const p of [rejectPanel, editPanel]) p.hidden = p !== panel;
      if (panel === rejectPanel) reason.focus();
      if (panel === editPanel) editor.focus();
    }

    function busy(on) {
      for (const button of card.querySelectorAll("button")) button.disabled = on;
    }

    async function send(action, body) {
      error.textContent = "";
      busy(true);
      try {
        const result = await decide(action, body);
        open(null);
        for (const button of buttons.querySelectorAll("button")) button.hidden = true;
        outcome.textContent = action === "approve" ? "Approved" : "Rejected";
        if (result && result.args) args.textContent = pretty(result.args);
        card.dataset.decided = action;
        tick(Date.now());
      } catch (failure) {
        error.textContent = describe(failure);
        busy(false);
      }
    }

    function sendEdited() {
      let edited;
      try {
        edited = JSON.parse(editor.value);
      } catch (_) {
        error.textContent = "The arguments are not valid JSON.";
        return;
      }
      if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
        error.textContent = "The arguments must be a JSON object.";
        return;
      }
      send("approve", { args: edited });
    }

    function tick(now) {
      if (card.dataset.decided || !item.expiresAt) {
        countdown.textContent = "";
        return;
      }
      const left = Math.max(0, Math.round(item.expiresAt - now / 1000));
      const m = Math.floor(left / 60);
      const s = String(left % 60).padStart(2, "0");
      countdown.textContent = left ? `expires in ${m}:${s}` : "expired";
      countdown.classList.toggle("soon", left < 60);
    }
    tick(Date.now());
    return { node: card, tick };
  }

  // --- the inbox ------------------------------------------------------------------

  const inboxCards = new Map(); // requestId -> {node, tick}
  let pollTimer = null;
  let lastPoll = 0;

  function pollSoon(delay = 0) {
    clearTimeout(pollTimer);
    const at = Math.max(Date.now() + delay, lastPoll + MIN_POLL_GAP_MS);
    pollTimer = setTimeout(poll, at - Date.now());
  }

  async function poll() {
    lastPoll = Date.now();
    try {
      if (!token()) {
        showInbox([]);
        $("inbox-status").textContent = "";
        return;
      }
      const page = await api("GET", "hitl/pending?limit=50");
      $("inbox-status").textContent = "";
      showInbox(page.items);
    } catch (failure) {
      $("inbox-status").textContent = describe(failure);
      showInbox([]);
    } finally {
      pollSoon(POLL_MS);
    }
  }

  function decideOverHttp(requestId) {
    return async (action, body) => {
      const data = await api("POST", `hitl/${action}/${encodeURIComponent(requestId)}`, body);
      notice(`${requestId} ${data.status}`);
      pollSoon();
      return data;
    };
  }

  function showInbox(items) {
    const list = $("inbox");
    const wanted = new Set(items.map((item) => item.requestId));
    for (const [id, card] of inboxCards) {
      if (!wanted.has(id)) {
        card.node.parentElement.remove();
        inboxCards.delete(id);
      }
    }
    items.forEach((item, index) => {
      let card = inboxCards.get(item.requestId);
      if (!card) {
        card = requestCard(item, decideOverHttp(item.requestId));
        card.node.append(el("p", { class: "requested-at", text:
          item.createdAt ? `asked ${new Date(item.createdAt * 1000).toLocaleTimeString()}` : "" }));
        inboxCards.set(item.requestId, card);
        el("li", {}, card.node);
      }
      const row = card.node.parentElement;
      if (list.children[index] !== row) list.insertBefore(row, list.children[index] ?? null);
    });
    $("inbox-count").textContent = items.length ? `(${items.length})` : "";
    $("inbox-empty").hidden = items.length > 0 || !token() || Boolean($("inbox-status").textContent);
    list.dataset.loaded = "true";
  }

  // --- a run over the WebSocket -------------------------------------------------------

  let socket = null;
  let runCards = [];

  function wsUrl() {
    const url = new URL("ws", API_BASE);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url;
  }

  function summary(event, data) {
    const inner = data && typeof data.data === "object" && data.data !== null ? data.data : {};
    switch (event) {
      case "start": return `${data.message} (${data.sessionId})`;
      case "thought": return `${inner.thoughtType}: ${inner.content}`;
      case "plan_step": return `${inner.stepId} ${inner.description} (${inner.status})`;
      case "plan_step_update": return `${inner.stepId} → ${inner.status}`;
      case "tool_execution": return `${inner.toolName} ${inner.status} ${JSON.stringify(inner.toolArgs ?? {})}`;
      case "hitl": return inner.message;
      case "content": return inner.content;
      case "end": return `${data.message}: ${data.status}`;
      case "error": return `${data.errorType}: ${data.error}`;
      case "failed": return `${data.errorType}: ${data.message}`;
      default: return JSON.stringify(data);
    }
  }

  function run(prompt) {
    if (socket) return;
    if (!token()) {
      $("run-status").textContent = "Enter a token first.";
      return;
    }
    $("events").replaceChildren();
    $("run-status").textContent = "";
    runCards = [];
    let opened = false;
    let proposedArgs = {};
    const ws = new WebSocket(wsUrl(), ["aura.v1", `bearer.${token()}`]);
    socket = ws;
    $("run").disabled = true;
    notice("connecting…");

    const pending = new Map(); // requestId -> {resolve, reject} of a decision sent

    ws.addEventListener("open", () => {
      opened = true;
      $("cancel").disabled = false;
      ws.send(JSON.stringify({ type: "start", prompt }));
      notice("running");
    });

    ws.addEventListener("message", ({ data }) => {
      let message;
      try {
        message = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (message.type === "event") {
        const inner = message.data && message.data.data;
        if (message.event === "tool_execution" && inner && inner.requiresApproval) {
          proposedArgs = inner.toolArgs ?? {};
        }
        const row = el("li", { class: `event ending-${message.event}`, "data-event": message.event },
          el("span", { class: "event-id", text: String(message.id) }),
          el("span", { class: "event-type", text: message.event }),
          el("span", { class: "event-text", text: summary(message.event, message.data) ?? "" }));
        if (message.event === "hitl" && inner) {
          const requester = (claimsOf(token()) ?? {}).sub;
          const card = requestCard({ userId: requester, ...inner, args: proposedArgs }, (action, body) =>
            new Promise((resolve, reject) => {
              pending.set(inner.requestId, { resolve, reject });
              ws.send(JSON.stringify({ type: action, requestId: inner.requestId, ...body }));
            }));
          runCards.push(card);
          row.append(card.node);
        }
        $("events").append(row);
      } else if (message.type === "ack") {
        const waiting = pending.get(message.requestId);
        pending.delete(message.requestId);
        if (waiting) waiting.resolve(message);
      } else if (message.type === "error") {
        const failure = new ApiError(message.message, message.errorCode, message.status);
        const waiting = message.requestId && pending.get(message.requestId);
        if (waiting) {
          pending.delete(message.requestId);
          waiting.reject(failure);
        } else {
          $("run-status").textContent = describe(failure);
        }
      } else if (message.type === "done") {
        notice("session done");
      }
    });

    ws.addEventListener("close", (event) => {
      socket = null;
      $("run").disabled = false;
      $("cancel").disabled = true;
      for (const waiting of pending.values()) {
        waiting.reject(new ApiError("the session ended", "SESSION_ENDED", 0));
      }
      pending.clear();
      if (!opened) {
        $("run-status").textContent =
          "The server refused the WebSocket: check the token (the inbox shows why it is refused).";
        notice("");
      } else if (event.code !== 1000) {
        $("run-status").textContent =
          `The connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`;
      }
      $("events").dataset.closed = String(event.code);
    });
  }

  // --- wiring ---------------------------------------------------------------------

  function start() {
    takeTokenFromFragment();
    showWho();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const entered = $("token").value.trim();
      if (entered) sessionStorage.setItem(TOKEN_KEY, entered);
      else sessionStorage.removeItem(TOKEN_KEY);
      showWho();
      notice("");
      pollSoon();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showWho();
      pollSoon();
    });
    $("run-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const prompt = $("prompt").value.trim();
      if (prompt) run(prompt);
    });
    $("cancel").addEventListener("click", () => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "cancel" }));
    });
    setInterval(() => {
      const now = Date.now();
      for (const card of inboxCards.values()) card.tick(now);
      for (const card of runCards) card.tick(now);
    }, 1000);
    poll();
  }

  start();
})();
