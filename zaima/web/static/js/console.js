// Zaima agent console: inbox, conversation, order panel — live over the agent socket (docs/realtime.md).
// All user-supplied text is inserted with textContent, never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const ME = JSON.parse(document.getElementById("me").textContent);
const LANG = document.documentElement.lang === "en" ? "en" : "zh-CN";
const tr = (zh, en) => (LANG === "en" ? en : zh);
const STATUS_TEXT = {
  bot: tr("机器人接待", "With bot"), queued: tr("排队中", "Queued"), open: tr("处理中", "Open"),
  pending_customer: tr("等待客户", "Waiting on customer"), resolved: tr("已解决", "Resolved"), closed: tr("已关闭", "Closed"),
};
const ACTOR_TEXT = { customer: tr("客户", "customer"), bot: tr("机器人", "bot"), agent: tr("客服", "agent"),
  system: tr("系统", "system"), gateway: tr("支付网关", "gateway"), supplier: tr("供应商", "supplier") };
const PAY_TEXT = { alipay: tr("支付宝", "Alipay"), wxpay: tr("微信支付", "WeChat Pay"), qqpay: tr("QQ 钱包", "QQ Wallet") };
const KEY_STATUS_TEXT = { quarantined: tr("已作废（反馈异常）", "voided (reported bad)"), void: tr("已作废", "void"),
  reserved: tr("已预留", "reserved"), available: tr("未售出", "available") };
const VIA_TEXT = { notify: tr("异步通知", "notify"), query: tr("主动查询", "query"), manual: tr("人工", "manual") };
const METHOD_TEXT = { stock: tr("库存发卡", "from stock"), supplier: tr("供应商直充", "supplier") };
const RESULT_TEXT = { delivered: tr("已发货", "delivered"), partial: tr("部分发货", "partial"), short: tr("缺货", "short"),
  submitted: tr("已提交", "submitted"), failed: tr("失败", "failed") };
const pickText = (map, value) => map[value] || value;
const displayNo = (no) => (/^[0-9A-Z]{12}$/.test(no || "") ? `${no.slice(0, 4)}-${no.slice(4, 8)}-${no.slice(8)}` : no);
const SENDER_TEXT = { customer: tr("客户", "Customer"), bot: tr("机器人", "Bot"), agent: tr("客服", "Agent"), system: tr("系统", "System") };
const PRIORITY_TEXT = { low: tr("低", "Low"), normal: tr("普通", "Normal"), high: tr("高", "High"), urgent: tr("紧急", "Urgent") };
const METRIC_TEXT = { first_response: tr("首次响应", "First response"), next_response: tr("下次响应", "Next response"),
  resolution: tr("解决", "Resolution") };
const SKILL_TEXT = { card_key: tr("卡密", "Card key"), recharge: tr("直充", "Recharge"), account: tr("账号", "Account"),
  license: tr("激活码", "Licence") };
const METRICS = ["first_response", "next_response", "resolution"];
const HUMAN_STATUSES = ["queued", "open", "pending_customer"];
const ESCALATE = { low: "normal", normal: "high", high: "urgent", urgent: "urgent" };  // as the server does on a breach
const MANAGER = ["supervisor", "admin"].includes(ME.role);

const state = {
  view: "all", status: "", conversations: new Map(), current: null, messages: new Map(), lastSeq: 0,
  ws: null, connected: false, retry: 0, outbox: new Map(), canned: [], staff: [], presence: {},
  showQueue: false, queue: null, policy: null, skew: 0,  // skew: server clock minus this browser's clock, in ms
};
const $ = (sel) => document.querySelector(sel);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
const fmtTime = (iso) => iso ? new Date(iso).toLocaleString(LANG, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }) : "";
const uuid = () => (crypto.randomUUID ? crypto.randomUUID() : "c" + Date.now().toString(36) + Math.random().toString(36).slice(2));

async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" };
  if (options.body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(options.body); }
  const r = await fetch(path, init);
  const j = await r.json().catch(() => ({}));
  if (r.status === 401) { location.href = "/console/login"; throw new Error("login"); }
  if (!r.ok) { const msg = j.error ? (LANG === "en" ? j.error.message_en : j.error.message) : r.statusText; toast(msg); throw new Error(msg); }
  return j;
}

// `onClick`: what tapping the toast does (e.g. open the conversation it is about).
function toast(text, onClick, ms = 5000) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  t.classList.toggle("clickable", !!onClick);
  t.onclick = onClick ? () => { t.hidden = true; onClick(); } : null;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, ms);
}

// ---------------------------------------------------------------- service: clock, SLA countdowns, VIP, priority
const serverNow = () => Date.now() + state.skew;
function syncClock(serverIso, sentAt, receivedAt) {
  const server = Date.parse(serverIso || "");
  if (!Number.isNaN(server)) state.skew = server - (sentAt + receivedAt) / 2;
}
const pad2 = (n) => String(n).padStart(2, "0");

// Time left or waited: mm:ss under an hour, then hours and minutes (h:mm would read like mm:ss).
function fmtSpan(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 3600) return `${pad2(Math.floor(s / 60))}:${pad2(s % 60)}`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  if (h >= 48) return tr(`${Math.floor(h / 24)}天${h % 24}小时`, `${Math.floor(h / 24)}d ${h % 24}h`);
  return tr(`${h}小时${pad2(m)}分`, `${h}h ${pad2(m)}m`);
}

// The target of a metric in ms, from the policy the ticket's targets were set with ("vip-high", "normal"…).
function targetMs(c, metric) {
  const p = state.policy;
  if (!p) return null;
  const name = (c.sla && c.sla.policy) || (c.vip ? "vip-" : "") + c.priority;
  const vip = name.startsWith("vip-");
  const base = p.targets[name.replace(/^vip-/, "")] || p.targets.normal;
  const minutes = vip ? Math.min(base[metric], p.vip[metric]) : base[metric];
  return minutes * 60000;
}

function slaState(c, metric, now) {
  const s = c.sla || {};
  const due = Date.parse(s[metric + "_due_at"] || "");
  if (Number.isNaN(due)) return null;
  if ((s.breached || []).includes(metric)) return { state: "late", text: tr("已超时", "overdue"), due };
  if (metric === "resolution" && s.paused) return { state: "paused", text: tr("已暂停", "paused"), due };
  const left = due - now;
  if (left <= 0) return { state: "late", text: tr("已超时", "overdue"), due };
  const target = targetMs(c, metric);
  const share = state.policy ? (100 - state.policy.warn_percent) / 100 : 0.2;
  const warn = (s.warned || []).includes(metric) || (target && left <= target * share);
  return { state: warn ? "warn" : "ok", text: fmtSpan(left), due };
}

function updateSlaChip(chip) {
  const info = slaState(chip._conv, chip.dataset.metric, serverNow());
  if (!info) { chip.hidden = true; return; }
  chip.hidden = false;
  chip.className = "chip sla sla-" + info.state;
  chip.dataset.state = info.state;
  chip.lastChild.textContent = info.text;
  chip.title = METRIC_TEXT[chip.dataset.metric] + tr("截止 ", " due ") + fmtTime(new Date(info.due).toISOString()) +
    (info.state === "paused" ? tr("（等待客户回复，计时暂停）", " (waiting on the customer, clock paused)") : "");
}

function slaChip(c, metric) {
  const chip = el("span", "chip sla");
  chip.dataset.testid = "sla-chip";
  chip.dataset.metric = metric;
  chip._conv = c;
  chip.append(el("span", "metric", METRIC_TEXT[metric] + " "), el("span", "left"));
  updateSlaChip(chip);
  return chip;
}

function vipBadge() {
  const v = el("span", "vip", "VIP");
  v.dataset.testid = "vip-badge";
  v.title = tr("VIP 客户：优先排队，响应时限更短", "VIP customer: queued first, tighter targets");
  return v;
}

function priorityChip(priority) {
  const p = el("span", "chip prio p-" + priority, PRIORITY_TEXT[priority] || priority);
  p.dataset.testid = "priority-chip";
  p.title = tr("优先级：", "Priority: ") + (PRIORITY_TEXT[priority] || priority);
  return p;
}

// The running targets of a ticket as countdown chips (none while it is with the bot, resolved or closed).
function slaChips(c) {
  return METRICS.filter((m) => c.sla && c.sla[m + "_due_at"]).map((m) => slaChip(c, m));
}

// Every second: countdowns and waits move on without re-rendering the lists.
function tick() {
  document.querySelectorAll(".chip.sla").forEach(updateSlaChip);
  const now = serverNow();
  document.querySelectorAll("[data-since]").forEach((e) => { e.lastChild.textContent = fmtSpan(now - Date.parse(e.dataset.since)); });
}

// ---------------------------------------------------------------- inbox
const customerName = (c) => (c.customer && c.customer.display_name) || "";

async function loadInbox() {
  const q = new URLSearchParams({ view: state.view });
  if (state.status) q.set("status", state.status);
  const j = await api("/console/api/conversations?" + q);
  state.conversations = new Map(j.conversations.map((c) => [c.id, c]));
  const fresh = state.current && state.conversations.get(state.current.id);
  if (fresh) { state.current = { ...state.current, ...fresh }; renderHeader(); }
  renderInbox();
}

function matchesFilter(c) {
  // A visitor who opened the chat and wrote nothing is not a conversation yet (the server leaves them out too).
  if (c.status === "bot" && !c.last_message && !c.last_message_at) return false;
  if (state.status && c.status !== state.status) return false;
  if (!state.status && c.status === "closed") return false;
  if (state.view === "mine") return c.assignee_id === ME.id;
  if (state.view === "unassigned") return !c.assignee_id;
  return true;
}

function renderInbox() {
  const list = $("#inbox");
  list.textContent = "";
  const items = [...state.conversations.values()].filter(matchesFilter)
    .sort((a, b) => (b.last_message_at || b.updated_at || "").localeCompare(a.last_message_at || a.updated_at || ""));
  if (!items.length) list.appendChild(el("li", "empty", tr("这里没有会话", "Nothing here")));
  for (const c of items) {
    const li = el("li", "conv" + (state.current && state.current.id === c.id ? " active" : ""));
    li.dataset.testid = "inbox-item";
    li.dataset.id = c.id;
    const top = el("div", "row");
    top.append(el("b", null, c.ticket_no));
    if (c.vip) top.append(vipBadge());
    if (c.priority && c.priority !== "normal") top.append(priorityChip(c.priority));
    top.append(el("span", "badge s-" + c.status, STATUS_TEXT[c.status] || c.status));
    if (c.unread) top.append(el("span", "unread", String(c.unread)));
    const who = el("div", "row muted");
    who.append(el("span", null, customerName(c)), el("span", null, c.order_no ? tr("订单 ", "Order ") + displayNo(c.order_no) : ""),
      el("span", "time", fmtTime(c.last_message_at || c.updated_at)));
    li.append(top, who, el("div", "preview", c.last_message ? c.last_message.text : tr("（新会话）", "(new conversation)")));
    const chips = slaChips(c);
    if (chips.length) { const row = el("div", "row chips"); row.append(...chips); li.append(row); }
    li.addEventListener("click", () => openConversation(c.id));
    list.appendChild(li);
  }
}

// ---------------------------------------------------------------- conversation
async function openConversation(id) {
  if (state.current && state.current.id !== id) sendFrame({ type: "unsubscribe", conversation_id: state.current.id });
  const j = await api("/console/api/conversations/" + id);
  state.current = j.conversation;
  state.messages = new Map(j.messages.map((m) => [m.seq, m]));
  state.lastSeq = Math.max(0, ...j.messages.map((m) => m.seq));
  state.order = j.order;
  sendFrame({ type: "subscribe", conversation_id: id, last_seq: state.lastSeq });
  $("#empty").hidden = true;
  $("#conversation").hidden = false;
  document.body.classList.add("has-conv");
  renderHeader();
  renderMessages();
  renderOrder();
  renderInbox();
  if (state.showQueue) renderQueue();
  markRead();
}

function renderHeader() {
  const c = state.current;
  $("#conv-title").textContent = c.ticket_no + " · " + customerName(c);
  $("#conv-sub").textContent = [c.order_no ? tr("订单 ", "Order ") + displayNo(c.order_no) : tr("未关联订单", "No order"),
    tr("创建于 ", "Created ") + fmtTime(c.created_at)].join(" · ");
  const flags = $("#conv-flags");
  flags.textContent = "";
  if (c.vip) flags.append(vipBadge());
  if (c.priority) flags.append(priorityChip(c.priority));
  flags.append(...slaChips(c));
  // A ticket that breached its SLA may be taken over by any agent (the server allows assigning it to oneself).
  const breached = c.sla && c.sla.breached && c.sla.breached.length;
  $("#take-over").hidden = !(breached && c.assignee_id !== ME.id && HUMAN_STATUSES.includes(c.status));
  const st = $("#conv-status");
  st.value = c.status;
  const as = $("#conv-assignee");
  as.textContent = "";
  as.append(new Option(tr("未分配", "Unassigned"), ""));
  for (const s of state.staff) {
    const label = s.display_name + (state.presence[s.username] ? " · " + presenceText(state.presence[s.username]) : "");
    as.append(new Option(label, s.id));
  }
  as.value = c.assignee_id || "";
}

function linkify(node, text) {
  const re = /(https?:\/\/[^\s<>"'，。；！？）]+)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) node.append(text.slice(last, m.index));
    const a = el("a", null, m[1]);
    a.href = m[1]; a.target = "_blank"; a.rel = "noopener noreferrer nofollow";
    node.append(a);
    last = m.index + m[1].length;
  }
  if (last < text.length) node.append(text.slice(last));
}

function messageNode(m, pending) {
  const div = el("div", "msg " + m.sender_kind + (m.internal ? " note" : ""));
  div.dataset.testid = "console-message";
  if (m.seq) div.dataset.seq = m.seq;
  const who = el("div", "who", (m.internal ? tr("内部备注 · ", "Internal note · ") : "") + (m.sender_name || SENDER_TEXT[m.sender_kind]) +
    " · " + fmtTime(m.created_at) + (pending ? " · " + tr("发送中", "sending") : ""));
  const bubble = el("div", "bubble");
  if (m.attachment) {
    const a = el("a");
    a.href = m.attachment.url; a.target = "_blank"; a.rel = "noopener";
    const img = el("img");
    img.src = m.attachment.thumb_url || m.attachment.url;
    img.alt = m.attachment.name || "image";
    img.dataset.testid = "console-image";
    a.append(img);
    bubble.append(a);
  }
  if (m.body) linkify(bubble, m.body);
  div.append(who, bubble);
  if (m.sender_kind === "agent" && !m.internal && m.seq && state.current && m.seq <= (state.current.customer_read_seq || 0)) {
    div.append(el("div", "read", tr("客户已读", "Read by customer")));
  }
  return div;
}

function renderMessages() {
  const box = $("#messages");
  box.textContent = "";
  [...state.messages.keys()].sort((a, b) => a - b).forEach((s) => box.append(messageNode(state.messages.get(s))));
  for (const [, o] of state.outbox) {
    if (o.conversation_id === state.current.id) box.append(messageNode({ sender_kind: "agent", sender_name: ME.display_name, body: o.text, internal: o.internal }, true));
  }
  box.scrollTop = box.scrollHeight;
}

function markRead() {
  if (!state.current || document.hidden) return;
  if (state.lastSeq > (state.current.agent_read_seq || 0)) {
    state.current.agent_read_seq = state.lastSeq;
    sendFrame({ type: "read", conversation_id: state.current.id, seq: state.lastSeq });
  }
}

// ---------------------------------------------------------------- order panel
function renderOrder() {
  const p = $("#order");
  p.textContent = "";
  const o = state.order;
  if (!o) { p.append(el("p", "muted", tr("这个会话没有关联订单。", "This conversation has no order.")), evidenceLinks()); return; }
  p.dataset.testid = "order-panel";
  const h = el("h3", null, tr("订单 ", "Order ") + o.display_no);
  const st = el("span", "badge o-" + o.status, LANG === "en" ? o.status_text_en : o.status_text);
  st.dataset.testid = "order-status";
  h.append(" ", st);
  p.append(h);
  const dl = el("dl");
  const row = (k, v) => { dl.append(el("dt", null, k), el("dd", null, v)); };
  row(tr("商品", "Product"), o.product.name + " × " + o.quantity);
  row(tr("金额", "Amount"), "¥" + o.amount + (o.refunded_amount !== "0.00" ? tr("（已退 ¥", " (refunded ¥") + o.refunded_amount + ")" : ""));
  row(tr("联系方式", "Contact"), o.contact || "");
  row(tr("下单时间", "Placed"), fmtTime(o.created_at));
  row(tr("支付", "Payment"), o.payment ? `${pickText(PAY_TEXT, o.payment.pay_type)} · ¥${o.payment.amount} · ${o.payment.trade_no} · ${pickText(VIA_TEXT, o.payment.received_via)}` : tr("未支付", "Unpaid"));
  row(tr("发货", "Delivered"), `${o.delivered_quantity}/${o.quantity}` + (o.delivered_at ? " · " + fmtTime(o.delivered_at) : ""));
  p.append(dl);
  if (o.keys && o.keys.length) {
    p.append(el("h4", null, tr("卡密（已打码）", "Keys (masked)")));
    const ul = el("ul", "keys");
    // Keys sent as replacements (the timeline's key_replaced entries name them) are marked as such.
    const replacements = new Set((o.timeline || []).filter((e) => e.kind === "key_replaced" && e.data)
      .map((e) => e.data.new_key_id));
    o.keys.forEach((k) => {
      const notes = [];
      if (k.status !== "sold") notes.push(pickText(KEY_STATUS_TEXT, k.status));
      if (replacements.has(k.id)) notes.push(tr("补发", "replacement"));
      const li = el("li", null, [k.masked, ...notes].join(" · "));
      li.dataset.keyId = k.id;
      ul.append(li);
    });
    const btn = el("button", "btn small", tr("查看完整卡密（会记录）", "Reveal keys (audited)"));
    btn.dataset.testid = "reveal-keys";
    btn.addEventListener("click", revealKeys);
    p.append(ul, btn);
  }
  const section = (title, items, fmt) => {
    if (!items || !items.length) return;
    p.append(el("h4", null, title));
    const ul = el("ul", "log");
    items.forEach((i) => ul.append(el("li", null, fmt(i))));
    p.append(ul);
  };
  section(tr("时间线", "Timeline"), o.timeline, (e) => `${fmtTime(e.at)} ${LANG === "en" ? e.text_en : e.text} · ${pickText(ACTOR_TEXT, e.actor)}${e.reason ? " · " + e.reason : ""}`);
  section(tr("发货记录", "Delivery attempts"), o.delivery_attempts, (a) => `${fmtTime(a.at)} ${pickText(METHOD_TEXT, a.method)} · ${pickText(RESULT_TEXT, a.result)} × ${a.quantity}`);
  section(tr("供应商记录", "Supplier log"), o.supplier_orders, (s) => `${s.request_id} · ${s.status}${s.supplier_order_no ? " · " + s.supplier_order_no : ""}${s.message ? " · " + s.message : ""}`);
  p.append(evidenceLinks());
}

// The ticket's evidence bundle (for disputes): a printable page in a new tab, or the JSON. Each export is audited.
function evidenceLinks() {
  const box = el("p", "evidence");
  const page = el("a", "btn small", tr("证据包", "Evidence"));
  page.href = `/console/conversations/${state.current.id}/evidence`;
  page.target = "_blank"; page.rel = "noopener";
  page.title = tr("打开可打印的证据包（导出会写入订单记录）", "Open the printable evidence bundle (exports are logged)");
  page.dataset.testid = "evidence-page";
  const json = el("a", "btn small", tr("下载 JSON", "Download JSON"));
  json.href = `/console/api/conversations/${state.current.id}/evidence.json`;
  json.download = "";
  json.dataset.testid = "evidence-json";
  box.append(page, " ", json);
  return box;
}

async function revealKeys() {
  if (!confirm(tr("查看完整卡密会写入订单审计记录。继续？", "Revealing keys is written to the order's audit log. Continue?"))) return;
  const j = await api(`/console/api/orders/${state.order.order_no}/reveal-keys`, { method: "POST", body: { conversation_id: state.current.id } });
  const ul = $("#order ul.keys");
  ul.textContent = "";
  j.keys.forEach((k) => { const li = el("li", "revealed", k.secret + " · " + k.status); li.dataset.testid = "revealed-key"; ul.append(li); });
}

// ---------------------------------------------------------------- composer and canned responses
function sendCurrent() {
  const ta = $("#reply");
  const text = ta.value.trim();
  if (!text || !state.current) return;
  const internal = $("#note-mode").checked;
  const id = uuid();
  state.outbox.set(id, { conversation_id: state.current.id, text, internal });
  ta.value = "";
  hideCanned();
  renderMessages();
  sendFrame({ type: "send", conversation_id: state.current.id, client_msg_id: id, text, internal });
}

function showCanned(query) {
  const box = $("#canned");
  const items = state.canned.filter((c) => c.shortcut.startsWith(query) || c.title.includes(query)).slice(0, 8);
  box.textContent = "";
  if (!items.length) { box.hidden = true; return; }
  items.forEach((c, i) => {
    const li = el("li", i === 0 ? "active" : "");
    li.append(el("b", null, "/" + c.shortcut), " ", el("span", null, c.title));
    li.dataset.testid = "canned-item";
    li.addEventListener("mousedown", (ev) => { ev.preventDefault(); applyCanned(c); });
    box.append(li);
  });
  box.hidden = false;
  state.cannedItems = items;
}

function hideCanned() { $("#canned").hidden = true; state.cannedItems = null; }

function applyCanned(c) {
  $("#reply").value = c.body;
  hideCanned();
  $("#reply").focus();
}

// ---------------------------------------------------------------- queue view
async function loadQueue() {
  const sentAt = Date.now();
  const j = await api("/console/api/queue");
  syncClock(j.server_time, sentAt, Date.now());
  state.queue = j;
  state.policy = j.sla;
  renderQueue();
}

// Inbox events arrive in bursts: fetch the queue at most once per burst.
function refreshQueueSoon(delay = 400) {
  clearTimeout(refreshQueueSoon.timer);
  refreshQueueSoon.timer = setTimeout(() => loadQueue().catch(() => {}), delay);
}

function waitText(q, item) {
  if (item.expected_wait_seconds == null) {
    if (!q.open_now) return tr("非服务时间", "Closed now");
    return q.agents_online ? tr("预计 —", "Expected —") : tr("暂无客服在线", "No agent online");
  }
  if (item.expected_wait_seconds < 60) return tr("马上接入", "Next up");
  const minutes = Math.ceil(item.expected_wait_seconds / 60);
  return tr(`预计约 ${minutes} 分钟`, `Expected ~${minutes} min`);
}

function renderQueue() {
  const q = state.queue;
  if (!q) return;
  const count = $("#queue-count");
  count.textContent = q.waiting ? String(q.waiting) : "";
  count.hidden = !q.waiting;
  const summary = $("#queue-summary");
  summary.textContent = "";
  const handle = Math.max(1, Math.round(q.handle_seconds / 60));
  const parts = [tr(`排队 ${q.waiting} 位`, `${q.waiting} waiting`),
    tr(`在线客服 ${q.agents_online}`, `${q.agents_online} agents online`),
    tr(`平均处理约 ${handle} 分钟`, `handling ~${handle} min`)];
  summary.append(parts.join(" · "));
  if (!q.open_now) {
    summary.append(el("div", "closed", tr(`现在是非服务时间，${q.next_open_text || ""} 开始服务`,
      `Outside service hours; opens ${q.next_open_text_en || ""}`)));
  }
  const list = $("#queue-list");
  list.textContent = "";
  if (!q.queue.length) list.append(el("li", "empty", tr("没有排队的会话", "Nobody is waiting")));
  for (const item of q.queue) {
    const li = el("li", "conv queue-item" + (state.current && state.current.id === item.id ? " active" : ""));
    li.dataset.testid = "queue-item";
    li.dataset.id = item.id;
    const top = el("div", "row");
    top.append(el("span", "pos", "#" + item.position), el("b", null, item.ticket_no));
    if (item.vip) top.append(vipBadge());
    if (item.priority !== "normal") top.append(priorityChip(item.priority));
    if (item.skill) top.append(el("span", "chip skill", SKILL_TEXT[item.skill] || item.skill));
    if (item.returned) top.append(el("span", "chip skill", tr("退回", "Returned")));
    const since = item.queued_at || new Date(Date.parse(q.server_time) - item.waited_seconds * 1000).toISOString();
    const waited = el("span", "waited");
    waited.dataset.since = since;
    waited.dataset.testid = "queue-waited";
    waited.append(tr("已等 ", "Waited "), el("span", null, fmtSpan(serverNow() - Date.parse(since))));
    const wait = el("span", "expected", waitText(q, item));
    wait.dataset.testid = "queue-expected";
    const who = el("div", "row muted");
    who.append(el("span", null, (item.customer && item.customer.display_name) || ""), waited, wait);
    li.append(top, who);
    const chips = slaChips(item);
    if (chips.length) { const row = el("div", "row chips"); row.append(...chips); li.append(row); }
    li.addEventListener("click", () => openConversation(item.id));
    list.append(li);
  }
  const agents = $("#queue-agents");
  agents.textContent = "";
  if (!q.agents.length) agents.append(el("li", "muted", tr("目前没有客服在线", "No agent is on duty")));
  for (const a of q.agents) {
    const li = el("li", "agent " + a.presence);
    li.dataset.testid = "queue-agent";
    const full = a.load >= a.max_concurrent;
    const load = el("span", "load" + (full ? " full" : ""), `${a.load}/${a.max_concurrent}`);
    load.title = tr("接待中 / 同时接待上限", "open conversations / capacity");
    const skills = a.skills.length ? a.skills.map((k) => SKILL_TEXT[k] || k).join("、") : tr("全部商品", "all kinds");
    li.append(el("span", "dot"), el("span", "name", a.display_name),
      el("span", "muted", presenceText(a.presence) + " · " + skills), load);
    agents.append(li);
  }
}

function showQueue(on) {
  state.showQueue = on;
  $("#queue-panel").hidden = !on;
  $("#inbox").hidden = on;
  $("#status-filter").hidden = on;
  if (on) loadQueue().catch(() => {});
}

// A warning goes to the assignee (and to supervisors when nobody has the ticket); a breach to supervisors and admins.
function onSla(f) {
  const key = f.kind === "breach" ? "breached" : "warned";
  const patch = (c) => {
    if (!c || !c.sla || (c.sla[key] || []).includes(f.metric)) return;
    c.sla = { ...c.sla, [key]: [...(c.sla[key] || []), f.metric] };
    if (f.kind === "breach") c.priority = ESCALATE[c.priority] || c.priority;
  };
  patch(state.conversations.get(f.conversation_id));
  if (state.current && state.current.id === f.conversation_id) { patch(state.current); renderHeader(); }
  renderInbox();
  const mine = f.assignee_id != null && f.assignee_id === ME.id;
  const metric = METRIC_TEXT[f.metric] || f.metric;
  let text = null;
  if (f.kind === "warning" && (mine || (MANAGER && f.assignee_id == null))) {
    text = tr(`工单 ${f.ticket_no} ${metric}即将超时`, `Ticket ${f.ticket_no}: ${metric.toLowerCase()} due soon`);
  } else if (f.kind === "breach" && (MANAGER || mine)) {
    text = tr(`工单 ${f.ticket_no} ${metric}已超时`, `Ticket ${f.ticket_no}: ${metric.toLowerCase()} overdue`);
  }
  if (text) toast(text, () => openConversation(f.conversation_id), 10000);
  clearTimeout(onSla.timer);  // the server's view (priority raised, flags) replaces the local patch
  onSla.timer = setTimeout(() => loadInbox().catch(() => {}), 800);
  refreshQueueSoon();
}

// ---------------------------------------------------------------- socket
function sendFrame(frame) {
  if (state.ws && state.connected) { state.ws.send(JSON.stringify(frame)); return true; }
  return false;
}

async function connect() {
  let ticket;
  try { ticket = (await api("/console/api/ws-ticket", { method: "POST", body: {} })).ticket; }
  catch (e) { setTimeout(connect, 3000); return; }
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/agent");
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", ticket }));
  ws.onmessage = (ev) => { try { handle(JSON.parse(ev.data)); } catch (e) { console.error(e); } };
  ws.onclose = (ev) => {
    state.ws = null;
    state.connected = false;
    clearInterval(state.pinger);
    $("#conn").hidden = false;
    const delay = ev.code === 4009 ? 0 : Math.min(15000, 1000 * 2 ** state.retry) + Math.random() * 500;
    state.retry += 1;
    setTimeout(connect, delay);
  };
}

function handle(f) {
  switch (f.type) {
    case "ready":
      if (f.server_time) syncClock(f.server_time, Date.now(), Date.now());
      state.connected = true;
      state.retry = 0;
      $("#conn").hidden = true;
      state.presence = f.staff_presence || {};
      state.pinger = setInterval(() => sendFrame({ type: "ping" }), 25000);
      if (state.current) sendFrame({ type: "subscribe", conversation_id: state.current.id, last_seq: state.lastSeq });
      for (const [id, o] of state.outbox) sendFrame({ type: "send", conversation_id: o.conversation_id, client_msg_id: id, text: o.text, internal: o.internal });
      loadInbox();
      refreshQueueSoon(0);
      renderPresence();
      break;
    case "message": {
      const m = f.message;
      if (state.current && f.conversation_id === state.current.id) {
        if (m.client_msg_id) state.outbox.delete(m.client_msg_id);
        state.messages.set(m.seq, m);
        state.lastSeq = Math.max(state.lastSeq, m.seq);
        if (m.sender_kind === "customer") $("#typing").textContent = "";
        renderMessages();
        markRead();
      }
      break;
    }
    case "ack":
      state.outbox.delete(f.client_msg_id);
      if (state.current && f.message.conversation_id === state.current.id) {
        state.messages.set(f.message.seq, f.message);
        state.lastSeq = Math.max(state.lastSeq, f.message.seq);
        renderMessages();
      }
      break;
    case "inbox": {
      const c = f.item;
      const existing = state.conversations.get(c.id) || {};
      if (state.showQueue || c.status === "queued" || existing.status === "queued") refreshQueueSoon();
      state.conversations.set(c.id, { ...existing, ...c });
      if (state.current && state.current.id === c.id) {
        state.current = { ...state.current, ...c };
        renderHeader();
        renderMessages();
      }
      renderInbox();
      break;
    }
    case "conversation":
      if (state.current && f.conversation_id === state.current.id) {
        state.current = { ...state.current, ...f.conversation };
        renderHeader();
      }
      break;
    case "typing":
      if (state.current && f.conversation_id === state.current.id && f.sender_kind === "customer") {
        $("#typing").textContent = f.state ? tr("客户正在输入…", "Customer is typing…") : "";
      }
      break;
    case "read":
      if (state.current && f.conversation_id === state.current.id && f.reader === "customer") {
        state.current.customer_read_seq = f.seq;
        renderMessages();
      }
      break;
    case "staff_presence":
      state.presence = f.staff || {};
      renderPresence();
      if (state.showQueue) refreshQueueSoon();
      break;
    case "sla":
      onSla(f);
      break;
    case "error":
      if (f.ref && state.outbox.has(f.ref)) { state.outbox.delete(f.ref); renderMessages(); }
      toast(LANG === "en" ? f.message_en : f.message);
      break;
  }
}

function presenceText(s) { return { online: tr("在线", "online"), away: tr("离开", "away") }[s] || tr("离线", "offline"); }

function renderPresence() {
  const mine = state.presence[ME.username] || "offline";
  $("#presence").value = mine;
  $("#presence-hint").hidden = mine === "online";
  const online = Object.values(state.presence).filter((s) => s === "online").length;
  $("#online-count").textContent = tr(`在线客服 ${online}`, `${online} online`);
  if (state.current) renderHeader();
}

// ---------------------------------------------------------------- wiring
document.querySelectorAll("#views button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("#views button").forEach((x) => x.classList.toggle("active", x === b));
  if (b.dataset.view === "queue") { showQueue(true); return; }
  showQueue(false);
  state.view = b.dataset.view;
  loadInbox();
}));
$("#take-over").addEventListener("click", async () => {
  const c = state.current;
  const j = await api(`/console/api/conversations/${c.id}/assign`, { method: "POST", body: { assignee_id: ME.id } })
    .catch(() => null);
  if (!j) return;
  state.current = { ...state.current, ...j.conversation };
  renderHeader();
  toast(tr(`已接手工单 ${c.ticket_no}`, `You took over ${c.ticket_no}`));
});
$("#status-filter").addEventListener("change", (ev) => { state.status = ev.target.value; loadInbox(); });
$("#conv-status").addEventListener("change", async (ev) => {
  const j = await api(`/console/api/conversations/${state.current.id}/status`, { method: "POST", body: { status: ev.target.value } }).catch(() => null);
  if (j) { state.current = { ...state.current, ...j.conversation }; renderHeader(); } else renderHeader();
});
$("#conv-assignee").addEventListener("change", async (ev) => {
  const value = ev.target.value ? Number(ev.target.value) : null;
  const j = await api(`/console/api/conversations/${state.current.id}/assign`, { method: "POST", body: { assignee_id: value } }).catch(() => null);
  if (j) { state.current = { ...state.current, ...j.conversation }; }
  renderHeader();
});
$("#presence").addEventListener("change", (ev) => {
  const value = ev.target.value;
  if (!sendFrame({ type: "presence", state: value })) {
    toast(tr("连接中断，状态未更改", "Not connected; status unchanged"));
    renderPresence();
    return;
  }
  if (value !== "online") {
    toast(tr(`你已设为${presenceText(value)}：不会再分配新会话，尚未回复的会话已退回排队由其他客服接待`,
      `You are ${presenceText(value)}: no new conversations; unanswered ones went back to the queue`), null, 8000);
  }
});
$("#composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendCurrent(); });
$("#reply").addEventListener("keydown", (ev) => {
  if (state.cannedItems && (ev.key === "Enter" || ev.key === "Tab")) { ev.preventDefault(); applyCanned(state.cannedItems[0]); return; }
  if (ev.key === "Escape") { hideCanned(); return; }
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); sendCurrent(); }
});
$("#reply").addEventListener("input", (ev) => {
  const v = ev.target.value;
  if (v.startsWith("/") && !v.includes(" ") && !v.includes("\n")) showCanned(v.slice(1)); else hideCanned();
  const now = Date.now();
  if (state.current && now - (state.typingAt || 0) > 3000) {
    state.typingAt = now;
    sendFrame({ type: "typing", conversation_id: state.current.id, state: true });
  }
});
$("#note-mode").addEventListener("change", (ev) => $("#composer").classList.toggle("note", ev.target.checked));
$("#back").addEventListener("click", () => document.body.classList.remove("has-conv"));
document.addEventListener("visibilitychange", markRead);

(async function init() {
  const [canned, staff] = await Promise.all([api("/console/api/canned"), api("/console/api/staff")]);
  state.canned = canned.canned;
  state.staff = staff.staff;
  await loadQueue().catch(() => {});  // the SLA policy and the server's clock, for the countdowns
  await loadInbox();
  connect();
  setInterval(tick, 1000);
  setInterval(() => refreshQueueSoon(0), 30000);
})();
