/* Zaima 在吗 — the 「联系客服」 widget. One script tag on any page:
 *   <script src="https://help.example.com/widget.js" async data-lang="zh-CN"></script>
 * Protocol: docs/realtime.md. Everything lives in a shadow root so the host page's CSS cannot break it
 * and ours cannot leak out. Messages are rendered as text (links made clickable), never as HTML. */
(function () {
  "use strict";
  if (window.ZaimaWidget) return;
  var script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  var data = (script && script.dataset) || {};
  var BASE = new URL(script ? script.src : "/widget.js", location.href).origin;
  var WS_BASE = BASE.replace(/^http/, "ws");
  var STORE_KEY = "zaima.customer." + BASE;
  var T = {
    "zh-CN": {
      button: "联系客服", title: "在线客服", close: "关闭", send: "发送", placeholder: "请描述您的问题…",
      image: "发送图片", reconnecting: "网络不稳定，正在重新连接…", connecting: "正在连接…",
      offline: "当前没有客服在线。请直接留言，我们上线后会按顺序回复，您的消息不会丢失。",
      online: "客服在线", sending: "发送中", failed: "发送失败，点击重试", read: "已读", sent: "已送达",
      typing: "正在输入…", order: "订单", you: "我", bot: "智能客服", agent: "客服", system: "系统",
      ticket: "工单号", lang: "EN", tooLarge: "图片不能超过 5 MB", badType: "只能发送 PNG、JPEG、WebP 或 GIF 图片",
      tooLong: "消息太长了（最多 4000 字）", sessionFailed: "客服暂时连接不上，请稍后再试，或通过「客服」页面的其他方式联系我们。",
      welcome: "您好，这里是在线客服。请直接描述您的问题，订单相关问题请附上订单号。",
    },
    en: {
      button: "Support", title: "Customer support", close: "Close", send: "Send", placeholder: "Describe your problem…",
      image: "Send an image", reconnecting: "Connection lost, reconnecting…", connecting: "Connecting…",
      offline: "No agent is online right now. Leave a message: we answer in order when we are back, and nothing you send is lost.",
      online: "Agents online", sending: "Sending", failed: "Not sent — tap to retry", read: "Read", sent: "Delivered",
      typing: "typing…", order: "Order", you: "Me", bot: "Assistant", agent: "Agent", system: "System",
      ticket: "Ticket", lang: "中文", tooLarge: "Images must be 5 MB or smaller", badType: "Only PNG, JPEG, WebP or GIF images",
      tooLong: "Message too long (4000 characters at most)", sessionFailed: "Support cannot be reached right now; please try again or use the other channels on the Help page.",
      welcome: "Hello! Tell us what went wrong; for an order, include its number.",
    },
  };
  var lang = data.lang === "en" || (localStorage.getItem("zaima.lang") === "en" && data.lang !== "zh-CN") ? "en" : "zh-CN";
  function t(k) { return T[lang][k]; }

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:-apple-system,BlinkMacSystemFont,'PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei',sans-serif}",
    ".fab{position:fixed;right:16px;bottom:16px;z-index:2147483000;border:0;border-radius:999px;background:#e8590c;color:#fff;",
    "font-size:16px;font-weight:600;padding:12px 18px;box-shadow:0 4px 14px rgba(0,0,0,.25);cursor:pointer;display:flex;gap:6px;align-items:center}",
    ".fab .dot{width:9px;height:9px;border-radius:50%;background:#adb5bd}.fab .dot.on{background:#51cf66}",
    ".panel{position:fixed;right:16px;bottom:16px;z-index:2147483001;width:380px;height:min(640px,calc(100vh - 32px));",
    "background:#fff;color:#212529;border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.3);display:flex;flex-direction:column;overflow:hidden}",
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;height:100%;border-radius:0}}",
    ".head{background:#e8590c;color:#fff;padding:10px 12px;display:flex;align-items:center;gap:8px}",
    ".head .ttl{flex:1;min-width:0}.head b{display:block;font-size:16px}.head small{font-size:12px;opacity:.9}",
    ".head button{background:rgba(255,255,255,.2);color:#fff;border:0;border-radius:8px;padding:6px 10px;font-size:14px;cursor:pointer}",
    ".banner{font-size:13px;padding:8px 12px;background:#fff3bf;color:#5c3c00}.banner.warn{background:#ffe3e3;color:#8a1c1c}",
    ".ctx{font-size:13px;padding:6px 12px;background:#f1f3f5;color:#495057;border-bottom:1px solid #e9ecef}",
    ".list{flex:1;overflow-y:auto;padding:12px;background:#f8f9fa;display:flex;flex-direction:column;gap:8px}",
    ".msg{max-width:82%;display:flex;flex-direction:column;gap:2px}.msg .who{font-size:12px;color:#868e96}",
    ".msg .bubble{padding:8px 11px;border-radius:12px;background:#fff;border:1px solid #e9ecef;white-space:pre-wrap;word-break:break-word;font-size:15px;line-height:1.45}",
    ".msg.mine{align-self:flex-end;align-items:flex-end}.msg.mine .bubble{background:#e8590c;color:#fff;border-color:#e8590c}",
    ".msg.mine .bubble a{color:#fff}.msg.system{align-self:center;max-width:95%}.msg.system .bubble{background:transparent;border:0;color:#868e96;font-size:13px;text-align:center}",
    ".msg .bubble.media,.msg.mine .bubble.media{background:transparent;border:0;padding:0}",
    ".msg img{max-width:220px;max-height:220px;border-radius:8px;display:block;cursor:zoom-in}",
    ".state{font-size:11px;color:#868e96}.state.bad{color:#c92a2a;cursor:pointer}",
    ".typing{font-size:12px;color:#868e96;padding:0 12px 4px;min-height:18px;background:#f8f9fa}",
    ".compose{display:flex;gap:6px;padding:8px;border-top:1px solid #e9ecef;background:#fff;align-items:flex-end}",
    ".compose textarea{flex:1;resize:none;border:1px solid #ced4da;border-radius:10px;padding:8px 10px;font-size:16px;max-height:120px;min-height:40px}",
    ".compose button{border:0;border-radius:10px;padding:9px 12px;font-size:15px;cursor:pointer;min-height:40px}",
    ".compose .send{background:#e8590c;color:#fff;font-weight:600}.compose .img{background:#f1f3f5;color:#495057}",
    ".err{font-size:13px;color:#c92a2a;padding:0 12px 6px}",
    "[hidden]{display:none!important}",
  ].join("\n");

  var host = document.createElement("div");
  host.id = "zaima-widget";
  var root = host.attachShadow({ mode: "open" });
  // A constructed stylesheet: a strict Content-Security-Policy on the host page blocks <style> elements.
  var useSheet = "adoptedStyleSheets" in Document.prototype && "replaceSync" in CSSStyleSheet.prototype;
  if (useSheet) { var sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); root.adoptedStyleSheets = [sheet]; }
  root.innerHTML = (useSheet ? "" : '<style>' + CSS + '</style>') +
    '<button class="fab" part="button" data-testid="widget-button"><span class="dot"></span><span class="label"></span></button>' +
    '<section class="panel" hidden role="dialog" aria-modal="false" data-testid="widget-panel">' +
    '<div class="head"><div class="ttl"><b class="title"></b><small class="sub"></small></div>' +
    '<button class="lang" data-testid="widget-lang"></button><button class="close" data-testid="widget-close"></button></div>' +
    '<div class="banner" data-testid="widget-status" hidden></div>' +
    '<div class="banner warn offline" data-testid="widget-offline" hidden></div>' +
    '<div class="ctx" hidden data-testid="widget-order"></div>' +
    '<div class="list" data-testid="widget-messages" aria-live="polite"></div>' +
    '<div class="typing" data-testid="widget-typing"></div>' +
    '<div class="err" data-testid="widget-error" hidden></div>' +
    '<form class="compose"><input type="file" accept="image/png,image/jpeg,image/webp,image/gif" hidden>' +
    '<button type="button" class="img" data-testid="widget-image"><svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><rect x="3" y="3" width="18" height="18" rx="2"/><circle cx="8.5" cy="8.5" r="1.5"/><path d="M21 15l-5-5L5 21"/></svg></button>' +
    '<textarea rows="1" maxlength="4000" data-testid="widget-input"></textarea>' +
    '<button type="submit" class="send" data-testid="widget-send"></button></form></section>';
  function $(sel) { return root.querySelector(sel); }

  var state = {
    token: localStorage.getItem(STORE_KEY) || null,
    conversation: null, messages: {}, lastSeq: 0, agentReadSeq: 0, agentsOnline: 0,
    ws: null, connected: false, retry: 0, outbox: {}, started: false, open: false, typingSent: 0,
  };

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "m" + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }

  function applyLang() {
    $(".fab .label").textContent = t("button");
    $(".title").textContent = t("title");
    $(".close").textContent = "✕";
    $(".close").setAttribute("aria-label", t("close"));
    $(".lang").textContent = t("lang");
    $(".send").textContent = t("send");
    $(".img").setAttribute("aria-label", t("image"));
    $(".img").title = t("image");
    $("textarea").placeholder = t("placeholder");
    $(".offline").textContent = t("offline");
    renderHeader();
    renderAll();
  }

  function renderHeader() {
    var c = state.conversation;
    $(".sub").textContent = c ? t("ticket") + " " + c.ticket_no + (state.agentsOnline > 0 ? " · " + t("online") + " " + state.agentsOnline : "") : "";
    $(".fab .dot").classList.toggle("on", state.agentsOnline > 0);
    $(".offline").hidden = !(state.started && state.agentsOnline === 0);
    var ctx = $(".ctx");
    if (c && c.order_no) { ctx.hidden = false; ctx.textContent = t("order") + " " + displayOrderNo(c.order_no); }
    else ctx.hidden = true;
  }

  function displayOrderNo(no) {  // K7Q39XDM2PHT → K7Q3-9XDM-2PHT, as on the order page
    return /^[0-9A-Z]{12}$/.test(no) ? no.slice(0, 4) + "-" + no.slice(4, 8) + "-" + no.slice(8) : no;
  }

  function setStatus(text) {
    var el = $(".banner:not(.warn)");
    el.hidden = !text;
    el.textContent = text || "";
  }

  function showError(text) {
    var el = $(".err");
    el.hidden = !text;
    el.textContent = text || "";
    if (text) setTimeout(function () { if (el.textContent === text) el.hidden = true; }, 6000);
  }

  function linkify(el, text) {
    var re = /(https?:\/\/[^\s<>"'，。；！？）]+)/g, last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) el.appendChild(document.createTextNode(text.slice(last, m.index)));
      var a = document.createElement("a");
      a.href = m[1]; a.textContent = m[1]; a.target = "_blank"; a.rel = "noopener noreferrer nofollow";
      el.appendChild(a);
      last = m.index + m[1].length;
    }
    if (last < text.length) el.appendChild(document.createTextNode(text.slice(last)));
  }

  function senderName(m) {
    if (m.sender_kind === "customer") return t("you");
    if (m.sender_kind === "agent") return (m.sender_name || t("agent")) + " · " + t("agent");
    return m.sender_name || t(m.sender_kind);
  }

  function messageNode(m, pending) {
    var mine = m.sender_kind === "customer";
    var div = document.createElement("div");
    div.className = "msg" + (mine ? " mine" : "") + (m.sender_kind === "system" ? " system" : "");
    div.dataset.testid = "widget-message";
    div.dataset.sender = m.sender_kind;
    if (m.seq) div.dataset.seq = m.seq;
    if (m.sender_kind !== "system") {
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = senderName(m);
      div.appendChild(who);
    }
    var bubble = document.createElement("div");
    bubble.className = "bubble" + (m.attachment && !m.body ? " media" : "");
    if (m.attachment) {
      var img = document.createElement("img");
      img.src = BASE + (m.attachment.thumb_url || m.attachment.url);
      img.alt = m.attachment.name || "image";
      img.dataset.testid = "widget-image-thumb";
      img.addEventListener("click", function () { window.open(BASE + m.attachment.url, "_blank", "noopener"); });
      bubble.appendChild(img);
    }
    if (m.body) linkify(bubble, m.body);
    div.appendChild(bubble);
    if (mine) {
      var st = document.createElement("span");
      st.className = "state";
      if (pending === "failed") { st.className = "state bad"; st.textContent = t("failed"); st.onclick = flushOutbox; }
      else if (pending) st.textContent = t("sending");
      else st.textContent = m.seq && m.seq <= state.agentReadSeq ? t("read") : t("sent");
      st.dataset.testid = "widget-message-state";
      div.appendChild(st);
    }
    return div;
  }

  function renderAll() {
    var list = $(".list");
    list.textContent = "";
    var seqs = Object.keys(state.messages).map(Number).sort(function (a, b) { return a - b; });
    if (!seqs.length && !Object.keys(state.outbox).length) {
      list.appendChild(messageNode({ sender_kind: "system", body: t("welcome") }));
    }
    seqs.forEach(function (s) { list.appendChild(messageNode(state.messages[s])); });
    Object.keys(state.outbox).forEach(function (id) {
      var o = state.outbox[id];
      list.appendChild(messageNode({ sender_kind: "customer", body: o.text }, o.failed ? "failed" : "sending"));
    });
    list.scrollTop = list.scrollHeight;
  }

  function addMessage(m) {
    if (!m || !m.seq) return;
    var isNew = !state.messages[m.seq];
    state.messages[m.seq] = m;
    if (m.client_msg_id && state.outbox[m.client_msg_id]) delete state.outbox[m.client_msg_id];
    if (m.seq > state.lastSeq) state.lastSeq = m.seq;
    if (isNew && m.sender_kind !== "customer") $(".typing").textContent = "";
    renderAll();
    markRead();
  }

  function markRead() {
    if (!state.open || document.hidden || !state.conversation) return;
    if (state.lastSeq > (state.readSent || 0)) {
      state.readSent = state.lastSeq;
      sendFrame({ type: "read", conversation_id: state.conversation.id, seq: state.lastSeq });
    }
  }

  function post(path, body) {
    return fetch(BASE + path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { var e = new Error("http " + r.status); e.body = j; e.status = r.status; throw e; } return j; });
    });
  }

  function startSession() {
    var body = {};
    if (state.token) body.customer_token = state.token;
    if (data.orderContext) body.order_context = data.orderContext;
    if (data.userId && data.sig) body.identity = { user_id: data.userId, ts: data.ts, sig: data.sig, name: data.name || null };
    setStatus(t("connecting"));
    return post("/api/v1/chat/session", body).then(function (s) {
      state.token = s.customer_token;
      try { localStorage.setItem(STORE_KEY, s.customer_token); } catch (e) { /* private mode */ }
      state.conversation = s.conversation;
      state.agentReadSeq = s.conversation.agent_read_seq || 0;
      state.agentsOnline = s.agents_online;
      state.messages = {};
      state.lastSeq = 0;
      (s.messages || []).forEach(function (m) { state.messages[m.seq] = m; if (m.seq > state.lastSeq) state.lastSeq = m.seq; });
      state.started = true;
      renderHeader();
      renderAll();
      connect();
    }).catch(function (e) {
      if (e.status === 401 && state.token) {  // expired device token: start a fresh session
        state.token = null;
        try { localStorage.removeItem(STORE_KEY); } catch (x) { /* ignore */ }
        return startSession();
      }
      setStatus("");
      showError(t("sessionFailed"));
      state.sessionPromise = null;
    });
  }

  function sendFrame(frame) {
    if (state.ws && state.connected) { state.ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function connect() {
    if (state.ws) return;
    var ws = new WebSocket(WS_BASE + "/ws/customer");
    state.ws = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "auth", token: state.token, conversation_id: state.conversation.id, last_seq: state.lastSeq }));
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = function (ev) {
      state.ws = null;
      state.connected = false;
      clearInterval(state.pinger);
      if (ev.code === 4001 || ev.code === 4003) {  // token no longer valid: new session, then reconnect
        state.token = null;
        try { localStorage.removeItem(STORE_KEY); } catch (e) { /* ignore */ }
        setStatus(t("reconnecting"));
        setTimeout(startSession, 500);
        return;
      }
      setStatus(t("reconnecting"));
      var delay = ev.code === 4009 ? 0 : Math.min(15000, 1000 * Math.pow(2, state.retry)) + Math.random() * 500;
      state.retry += 1;
      setTimeout(connect, delay);
    };
  }

  function handle(f) {
    switch (f.type) {
      case "ready":
        state.connected = true;
        state.retry = 0;
        state.conversation = f.conversation;
        state.agentReadSeq = Math.max(state.agentReadSeq, f.conversation.agent_read_seq || 0);
        state.agentsOnline = f.agents_online;
        setStatus("");
        renderHeader();
        state.pinger = setInterval(function () { sendFrame({ type: "ping" }); }, 25000);
        flushOutbox();
        markRead();
        break;
      case "message": addMessage(f.message); break;
      case "ack":
        delete state.outbox[f.client_msg_id];
        addMessage(f.message);
        break;
      case "typing":
        if (f.sender_kind !== "customer") $(".typing").textContent = f.state ? (f.name || t("agent")) + " " + t("typing") : "";
        break;
      case "read":
        if (f.reader === "agent" && f.seq > state.agentReadSeq) { state.agentReadSeq = f.seq; renderAll(); }
        break;
      case "conversation":
        if (state.conversation && f.conversation.id !== state.conversation.id) {  // the old ticket was closed
          state.messages = {}; state.lastSeq = 0; state.readSent = 0; state.agentReadSeq = 0;
        }
        state.conversation = f.conversation; renderHeader(); renderAll(); break;
      case "presence": state.agentsOnline = f.agents_online; renderHeader(); break;
      case "error":
        if (f.ref && state.outbox[f.ref]) { state.outbox[f.ref].failed = true; renderAll(); }
        showError(lang === "en" ? f.message_en : f.message);
        break;
    }
  }

  function flushOutbox() {
    Object.keys(state.outbox).forEach(function (id) {
      var o = state.outbox[id];
      if (sendFrame({ type: "send", conversation_id: state.conversation.id, client_msg_id: id, text: o.text })) o.failed = false;
    });
    renderAll();
  }

  function sendText(text) {
    text = text.trim();
    if (!text) return;
    if (text.length > 4000) { showError(t("tooLong")); return; }
    var id = uuid();
    state.outbox[id] = { text: text };
    renderAll();
    sendFrame({ type: "send", conversation_id: state.conversation.id, client_msg_id: id, text: text });
    sendFrame({ type: "typing", conversation_id: state.conversation.id, state: false });
    state.typingSent = 0;
  }

  function uploadImage(file) {
    if (!file) return;
    if (file.size > 5 * 1024 * 1024) { showError(t("tooLarge")); return; }
    var form = new FormData();
    form.append("file", file);
    form.append("client_msg_id", uuid());
    fetch(BASE + "/api/v1/chat/conversations/" + state.conversation.id + "/attachments", {
      method: "POST", headers: { Authorization: "Bearer " + state.token }, body: form,
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { showError(j.error ? (lang === "en" ? j.error.message_en : j.error.message) : t("badType")); return; }
        addMessage(j.message);
      });
    }).catch(function () { showError(t("reconnecting")); });
  }

  function openPanel() {
    state.open = true;
    $(".panel").hidden = false;
    $(".fab").hidden = true;
    if (!state.sessionPromise) state.sessionPromise = startSession();
    setTimeout(function () { $("textarea").focus(); }, 50);
    markRead();
  }

  function closePanel() {
    state.open = false;
    $(".panel").hidden = true;
    $(".fab").hidden = false;
  }

  $(".fab").addEventListener("click", openPanel);
  $(".close").addEventListener("click", closePanel);
  $(".lang").addEventListener("click", function () {
    lang = lang === "en" ? "zh-CN" : "en";
    try { localStorage.setItem("zaima.lang", lang); } catch (e) { /* ignore */ }
    applyLang();
  });
  $("form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var ta = $("textarea");
    sendText(ta.value);
    ta.value = "";
  });
  $("textarea").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("form").requestSubmit(); }
  });
  $("textarea").addEventListener("input", function () {
    var now = Date.now();
    if (state.conversation && now - state.typingSent > 3000) {
      state.typingSent = now;
      sendFrame({ type: "typing", conversation_id: state.conversation.id, state: true });
    }
  });
  $(".img").addEventListener("click", function () { $("input[type=file]").click(); });
  $("input[type=file]").addEventListener("change", function (ev) {
    uploadImage(ev.target.files[0]);
    ev.target.value = "";
  });
  document.addEventListener("visibilitychange", markRead);

  function mount() {
    document.body.appendChild(host);
    applyLang();
    if (data.open === "1") openPanel();
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  window.ZaimaWidget = { open: openPanel, close: closePanel };
  document.addEventListener("click", function (ev) {
    var el = ev.target.closest && ev.target.closest("[data-zaima-open]");
    if (el) { ev.preventDefault(); openPanel(); }
  });
})();
