/* Zaima 在吗 — the 「联系客服」 widget. One script tag on any page:
 *   <script src="https://help.example.com/widget.js" async data-lang="zh-CN"></script>
 * (data-theme="light" / "dark" pins the colours; by default they follow the device's dark mode.)
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
      report: "提交问题", reportBtn: "提交问题", reportIntro: "填写下面几项，客服一接手就能看到完整情况，不用来回询问。", back: "返回会话",
      fType: "问题类型", fWants: "希望如何处理", fTime: "发生时间", fOrder: "订单号", fDesc: "问题描述",
      fContact: "联系方式", fShots: "截图", optional: "（选填）", orderLinked: "（已关联，客服会看到这笔订单）",
      orderPh: "如 K7Q3-9XDM-2PHT", descPh: "看到了什么提示、试过哪些操作……（至少 10 个字）",
      contactPh: "邮箱或手机号，默认用下单时的联系方式", addShot: "添加截图", shotsHint: "最多 5 张，每张不超过 5 MB",
      removeShot: "删除这张截图", submitReport: "提交问题", submitting: "正在提交…", tooManyShots: "最多上传 5 张截图",
      reportFailed: "提交失败，请检查网络后重试", reportDone: "已提交，工单号 ",
      pt_invalid_key: "卡密无效", pt_not_delivered: "未收到货", pt_recharge_missing: "充值未到账",
      pt_account_problem: "账号问题", pt_payment_problem: "付款问题", pt_other: "其他",
      w_resend: "补发", w_refund: "退款", w_repair_account: "修复账号", w_other: "其他",
      queueAhead: "排队中：第 {p} 位（前面还有 {n} 人）", queueNext: "排队中：下一位就是您", queueWait: "预计等待约 {m} 分钟",
      queueSoon: "预计等待不到 1 分钟", queueUnknown: "预计等待：暂时无法估计",
      offHours: "现在是非服务时间，人工客服将于 {open} 上线。", offHoursNoTime: "现在是非服务时间。",
      noAgents: "客服暂时都不在线。", closing: "今天的服务时间快结束了，可能轮不到您；人工客服将于 {open} 再上线。", replyBy: "工单号 {ticket}，我们会在 {by} 前回复您，消息不会丢失。",
      replyLater: "工单号 {ticket}，客服上线后会按顺序回复您，消息不会丢失。",
      csatTitle: "请为本次服务打分", csatHint: "1 星最差，5 星最好", csatComment: "还想说点什么？（选填）",
      csatSubmit: "提交评价", csatThanks: "感谢您的评价", csatPick: "请先选择星级", star: "{n} 星",
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
      report: "Report a problem", reportBtn: "Report", reportIntro: "Fill this in so the agent sees the whole picture at once.", back: "Back to chat",
      fType: "What went wrong", fWants: "What should we do", fTime: "When did it happen", fOrder: "Order number",
      fDesc: "Description", fContact: "Contact", fShots: "Screenshots", optional: " (optional)",
      orderLinked: " (attached; the agent will see this order)", orderPh: "e.g. K7Q3-9XDM-2PHT",
      descPh: "What message did you see, what did you try… (10 characters at least)",
      contactPh: "E-mail or mobile; defaults to the one on the order", addShot: "Add screenshot",
      shotsHint: "Up to 5 images, 5 MB each", removeShot: "Remove this screenshot", submitReport: "Submit",
      submitting: "Submitting…", tooManyShots: "At most 5 screenshots", reportFailed: "Could not submit; check your connection and try again",
      reportDone: "Submitted, ticket ",
      pt_invalid_key: "Invalid key", pt_not_delivered: "Not delivered", pt_recharge_missing: "Top-up missing",
      pt_account_problem: "Account problem", pt_payment_problem: "Payment problem", pt_other: "Other",
      w_resend: "Send again", w_refund: "Refund", w_repair_account: "Fix my account", w_other: "Other",
      queueAhead: "In the queue: number {p} ({n} ahead of you)", queueNext: "In the queue: you are next", queueWait: "Expected wait about {m} min",
      queueSoon: "Expected wait under a minute", queueUnknown: "Expected wait: cannot estimate yet",
      offHours: "We are outside service hours; agents are back {open}.", offHoursNoTime: "We are outside service hours.",
      noAgents: "No agent is online right now.", closing: "Service hours end before your turn is likely to come; agents are back {open}.", replyBy: "Ticket {ticket}: we will reply by {by}; nothing you send is lost.",
      replyLater: "Ticket {ticket}: we answer in order once an agent is back; nothing you send is lost.",
      csatTitle: "How did we do?", csatHint: "1 star is poor, 5 is excellent", csatComment: "Anything else? (optional)",
      csatSubmit: "Submit rating", csatThanks: "Thank you for your rating", csatPick: "Pick a star rating first", star: "{n} stars",
    },
  };
  var lang = data.lang === "en" || (localStorage.getItem("zaima.lang") === "en" && data.lang !== "zh-CN") ? "en" : "zh-CN";
  function t(k, vars) {
    var text = T[lang][k];
    if (vars) Object.keys(vars).forEach(function (v) { text = text.split("{" + v + "}").join(vars[v]); });
    return text;
  }
  var MAX_SHOTS = 5, MAX_BYTES = 5 * 1024 * 1024, IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:-apple-system,BlinkMacSystemFont,'PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei',sans-serif}",
    ".fab{position:fixed;right:16px;bottom:16px;z-index:2147483000;border:0;border-radius:999px;background:#e8590c;color:#fff;",
    "font-size:16px;font-weight:600;padding:12px 18px;box-shadow:0 4px 14px rgba(0,0,0,.25);cursor:pointer;display:flex;gap:6px;align-items:center}",
    ".fab .dot{width:9px;height:9px;border-radius:50%;background:#adb5bd}.fab .dot.on{background:#51cf66}",
    ".panel{position:fixed;right:16px;bottom:16px;z-index:2147483001;width:380px;height:min(640px,calc(100vh - 32px));",
    "background:#fff;color:#212529;border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.3);display:flex;flex-direction:column;overflow:hidden;",
    "color-scheme:light}",  // native controls in the widget's own colours, whatever the host page declares
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
    ".compose textarea{flex:1;resize:none;border:1px solid #ced4da;border-radius:10px;padding:8px 10px;font-size:16px;max-height:120px;min-height:40px;background:#fff;color:#212529}",
    ".compose button{border:0;border-radius:10px;padding:9px 12px;font-size:15px;cursor:pointer;min-height:40px}",
    ".compose .send{background:#e8590c;color:#fff;font-weight:600}.compose .img{background:#f1f3f5;color:#495057}",
    ".err{font-size:13px;color:#c92a2a;padding:0 12px 6px}",
    ".head .rep{white-space:nowrap;font-weight:600}",
    ".head b,.head small{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".chat{flex:1;min-height:0;display:flex;flex-direction:column}",
    // the queue card: where the customer stands and an honest wait
    ".queue{margin:8px 10px 0;padding:10px 12px;border-radius:10px;background:#fff4e6;border:1px solid #ffd8a8;color:#5c3c00;font-size:14px;line-height:1.5}",
    ".queue b{display:block;font-size:15px;color:#212529}.queue .q-note{margin-top:4px;color:#8a4b00}",
    // the satisfaction card after a resolve
    ".csat{align-self:stretch;background:#fff;border:1px solid #ffd8a8;border-radius:12px;padding:12px;display:flex;flex-direction:column;gap:8px;text-align:center}",
    ".csat b{font-size:15px}.csat small{font-size:12px;color:#868e96}",
    ".stars{display:flex;justify-content:center;gap:4px}",
    ".star{width:48px;height:48px;padding:0;border:0;border-radius:10px;background:transparent;color:#ced4da;font-size:34px;line-height:1;cursor:pointer}",
    ".star.on{color:#f59f00}.star:focus-visible{outline:2px solid #e8590c}.stars.done .star{cursor:default;width:36px;height:36px;font-size:26px}",
    ".csat textarea{width:100%;resize:none;border:1px solid #ced4da;border-radius:10px;padding:8px 10px;font-size:16px;min-height:64px;background:#fff;color:#212529}",
    ".csat .c-send{min-height:44px;border:0;border-radius:10px;background:#e8590c;color:#fff;font-size:15px;font-weight:600;cursor:pointer}",
    ".csat .c-err{font-size:13px;color:#c92a2a}",
    // the problem report form
    ".report{flex:1;min-height:0;overflow-y:auto;padding:12px;background:#fff;display:flex;flex-direction:column;gap:14px}",
    ".r-top{display:flex;align-items:center;gap:8px}.r-top b{flex:1;font-size:16px}",
    ".r-top button{min-height:40px;border:1px solid #ced4da;background:#fff;border-radius:10px;padding:0 12px;font-size:14px;cursor:pointer;color:#495057}",
    ".r-intro{font-size:13px;color:#495057;margin:0}",
    ".fld{display:flex;flex-direction:column;gap:6px;border:0;margin:0;padding:0;min-width:0}",
    ".fld .l{font-weight:600;font-size:14px;color:#212529;padding:0}.fld .opt{font-weight:400;color:#868e96}",
    ".chips{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:6px}.chips.four{grid-template-columns:repeat(4,minmax(0,1fr))}",
    ".chip{position:relative;display:flex}.chip input{position:absolute;opacity:0;pointer-events:none}",
    ".chip span{flex:1;display:flex;align-items:center;justify-content:center;text-align:center;min-height:44px;padding:4px 6px;border:1px solid #ced4da;border-radius:10px;font-size:14px;line-height:1.25;cursor:pointer;background:#fff;color:#495057}",
    ".chip input:checked+span{border-color:#e8590c;background:#fff4e6;color:#d9480f;font-weight:600}.chip input:focus-visible+span{outline:2px solid #e8590c}",
    ".report input[type=text],.report input[type=datetime-local],.report textarea{width:100%;border:1px solid #ced4da;border-radius:10px;padding:9px 10px;font-size:16px;min-height:44px;background:#fff;color:#212529}",
    ".report textarea{resize:vertical;min-height:96px;line-height:1.45}",
    ".linked{font-size:15px;padding:10px;border-radius:10px;background:#f1f3f5;color:#212529}.linked small{color:#868e96;font-size:12px}",
    ".count{font-size:12px;color:#868e96;text-align:right}",
    ".shots{display:flex;flex-wrap:wrap;gap:8px;align-items:center}",
    ".shot{position:relative;width:64px;height:64px}.shot img{width:64px;height:64px;object-fit:cover;border-radius:8px;border:1px solid #dee2e6;display:block}",
    ".shot button{position:absolute;top:-8px;right:-8px;width:28px;height:28px;border-radius:50%;border:0;background:#495057;color:#fff;font-size:15px;line-height:28px;padding:0;cursor:pointer}",
    ".addshot{min-height:64px;min-width:64px;border:1px dashed #adb5bd;border-radius:10px;background:#f8f9fa;color:#495057;font-size:13px;padding:0 10px;cursor:pointer}",
    ".hint{font-size:12px;color:#868e96}",
    ".ferr{font-size:13px;color:#c92a2a}.fld.bad input[type=text],.fld.bad input[type=datetime-local],.fld.bad textarea,.fld.bad .chip span{border-color:#c92a2a}",
    ".rerr{font-size:13px;padding:8px 10px;border-radius:8px;background:#ffe3e3;color:#8a1c1c}",
    ".rsubmit{min-height:48px;border:0;border-radius:10px;background:#e8590c;color:#fff;font-size:16px;font-weight:600;cursor:pointer}",
    ".rsubmit:disabled{opacity:.6;cursor:wait}",
    ".report input:focus,.report textarea:focus,.csat textarea:focus,.compose textarea:focus{outline:none;border-color:#e8590c;box-shadow:0 0 0 3px rgba(232,89,12,.18)}",
    "[hidden]{display:none!important}",
  ].join("\n");
  // Dark: the store's own dark palette (zaima.css), for a customer on a phone at night. Follows the device's
  // setting; a host page can pin it with data-theme="light" or "dark".
  var DARK = [
    ".panel{color-scheme:dark}.panel,.compose,.report,.csat{background:#18202a;color:#e6eaef}",
    ".msg .bubble a{color:#7fb0ff}",
    ".list,.typing{background:#0f141a}",
    ".ctx,.linked{background:#111821;color:#a2adba;border-color:#2c3744}.linked{color:#e6eaef}",
    ".msg .bubble{background:#18202a;border-color:#2c3744;color:#e6eaef}",
    ".msg .who,.state,.msg.system .bubble,.hint,.count,.csat small,.fld .opt,.linked small,.r-intro{color:#a2adba}",
    ".compose{border-top-color:#2c3744}",
    ".compose textarea,.csat textarea,.report input[type=text],.report input[type=datetime-local],.report textarea{background:#0f141a;color:#e6eaef;border-color:#2c3744}",
    ".compose .img,.addshot,.r-top button{background:#232c37;color:#e6eaef;border-color:#2c3744}",
    ".banner{background:#33270f;color:#f2b650}.banner.warn,.rerr{background:#3a1715;color:#ff8a80}",
    ".queue{background:#33270f;border-color:#5c3c00;color:#f2d5a0}.queue b,.fld .l{color:#e6eaef}.queue .q-note{color:#f2b650}",
    ".csat{border-color:#5c3c00}.star{color:#4a5563}",
    ".chip span{background:#0f141a;border-color:#2c3744;color:#c8d0d9}.chip input:checked+span{background:#3a230f;color:#ff9a5c}",
    ".err,.ferr,.state.bad,.csat .c-err{color:#ff8a80}.shot img{border-color:#2c3744}",
  ].join("\n");
  CSS += "\n" + (data.theme === "light" ? "" : data.theme === "dark" ? DARK
    : "@media (prefers-color-scheme:dark){\n" + DARK + "\n}");

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
    '<button class="rep" data-testid="widget-report" data-t="reportBtn"></button>' +
    '<button class="lang" data-testid="widget-lang"></button><button class="close" data-testid="widget-close"></button></div>' +
    '<div class="banner" data-testid="widget-status" hidden></div>' +
    '<div class="banner warn offline" data-testid="widget-offline" hidden></div>' +
    '<div class="ctx" hidden data-testid="widget-order"></div>' +
    '<div class="chat">' +
    '<div class="queue" hidden data-testid="widget-queue" aria-live="polite"></div>' +
    '<div class="list" data-testid="widget-messages" aria-live="polite"></div>' +
    '<div class="typing" data-testid="widget-typing"></div>' +
    '<div class="err" data-testid="widget-error" hidden></div>' +
    '<form class="compose"><input type="file" accept="image/png,image/jpeg,image/webp,image/gif" hidden>' +
    '<button type="button" class="img" data-testid="widget-image"><svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><rect x="3" y="3" width="18" height="18" rx="2"/><circle cx="8.5" cy="8.5" r="1.5"/><path d="M21 15l-5-5L5 21"/></svg></button>' +
    '<textarea rows="1" maxlength="4000" data-testid="widget-input"></textarea>' +
    '<button type="submit" class="send" data-testid="widget-send"></button></form></div>' +
    '<form class="report" hidden novalidate data-testid="widget-report-form">' +
    '<div class="r-top"><b data-t="report"></b><button type="button" class="r-back" data-testid="widget-report-back" data-t="back"></button></div>' +
    '<p class="r-intro" data-t="reportIntro"></p>' +
    '<div class="rerr" hidden data-testid="widget-report-error" role="alert"></div>' +
    '<fieldset class="fld" data-field="problem_type"><legend class="l" data-t="fType"></legend>' +
    '<div class="chips" role="radiogroup">' +
    '<label class="chip"><input type="radio" name="problem_type" value="invalid_key"><span data-t="pt_invalid_key"></span></label>' +
    '<label class="chip"><input type="radio" name="problem_type" value="not_delivered"><span data-t="pt_not_delivered"></span></label>' +
    '<label class="chip"><input type="radio" name="problem_type" value="recharge_missing"><span data-t="pt_recharge_missing"></span></label>' +
    '<label class="chip"><input type="radio" name="problem_type" value="account_problem"><span data-t="pt_account_problem"></span></label>' +
    '<label class="chip"><input type="radio" name="problem_type" value="payment_problem"><span data-t="pt_payment_problem"></span></label>' +
    '<label class="chip"><input type="radio" name="problem_type" value="other"><span data-t="pt_other"></span></label>' +
    '</div>' +
    '<div class="ferr" hidden></div></fieldset>' +
    '<fieldset class="fld" data-field="wants"><legend class="l" data-t="fWants"></legend>' +
    '<div class="chips four" role="radiogroup">' +
    '<label class="chip"><input type="radio" name="wants" value="resend"><span data-t="w_resend"></span></label>' +
    '<label class="chip"><input type="radio" name="wants" value="refund"><span data-t="w_refund"></span></label>' +
    '<label class="chip"><input type="radio" name="wants" value="repair_account"><span data-t="w_repair_account"></span></label>' +
    '<label class="chip"><input type="radio" name="wants" value="other"><span data-t="w_other"></span></label>' +
    '</div>' +
    '<div class="ferr" hidden></div></fieldset>' +
    '<div class="fld" data-field="occurred_at"><label class="l" for="z-time" data-t="fTime"></label>' +
    '<input type="datetime-local" id="z-time" name="occurred_at" data-testid="widget-report-time"><div class="ferr" hidden></div></div>' +
    '<div class="fld" data-field="order_no"><label class="l" for="z-order"><span data-t="fOrder"></span><span class="opt order-opt" data-t="optional"></span></label>' +
    '<div class="linked" hidden data-testid="widget-report-order"></div>' +
    '<input type="text" id="z-order" name="order_no" maxlength="40" autocomplete="off" spellcheck="false" data-tp="orderPh"><div class="ferr" hidden></div></div>' +
    '<div class="fld" data-field="description"><label class="l" for="z-desc" data-t="fDesc"></label>' +
    '<textarea id="z-desc" name="description" maxlength="2000" rows="4" data-tp="descPh" data-testid="widget-report-description"></textarea>' +
    '<div class="count">0 / 2000</div><div class="ferr" hidden></div></div>' +
    '<div class="fld" data-field="contact"><label class="l" for="z-contact"><span data-t="fContact"></span><span class="opt" data-t="optional"></span></label>' +
    '<input type="text" id="z-contact" name="contact" maxlength="200" autocomplete="email" data-tp="contactPh" data-testid="widget-report-contact"><div class="ferr" hidden></div></div>' +
    '<div class="fld" data-field="files"><span class="l"><span data-t="fShots"></span><span class="opt" data-t="optional"></span></span>' +
    '<div class="shots" data-testid="widget-report-shots"><button type="button" class="addshot" data-testid="widget-report-add-shot">+ <span data-t="addShot"></span></button></div>' +
    '<div class="hint" data-t="shotsHint"></div><div class="ferr" hidden></div></div>' +
    '<button type="submit" class="rsubmit" data-testid="widget-report-submit" data-t="submitReport"></button>' +
    '</form>' +
    '</section>' +
    // Outside the panel: the chat's own image input stays the panel's only file input.
    '<input type="file" class="shot-input" multiple accept="image/png,image/jpeg,image/webp,image/gif" hidden data-testid="widget-report-files">';
  function $(sel) { return root.querySelector(sel); }

  var state = {
    token: localStorage.getItem(STORE_KEY) || null,
    conversation: null, messages: {}, lastSeq: 0, agentReadSeq: 0, agentsOnline: 0,
    ws: null, connected: false, retry: 0, outbox: {}, started: false, open: false, typingSent: 0,
    queue: null,  // the queue view while the conversation is "queued" (docs/realtime.md, frame `queue`)
    csat: null, csatPick: 0, csatThanks: 0,  // the rating state of the current conversation, the stars picked
    shots: [], reporting: false,  // the report form's screenshots ({file, url}) and whether it is being sent
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
    $(".compose textarea").placeholder = t("placeholder");
    $(".offline").textContent = t("offline");
    Array.prototype.forEach.call(root.querySelectorAll("[data-t]"), function (el) { el.textContent = t(el.dataset.t); });
    Array.prototype.forEach.call(root.querySelectorAll("[data-tp]"), function (el) { el.placeholder = t(el.dataset.tp); });
    renderShots();
    renderHeader();
    renderAll();
  }

  function renderHeader() {
    var c = state.conversation;
    $(".sub").textContent = c ? t("ticket") + " " + c.ticket_no + (state.agentsOnline > 0 ? " · " + t("online") + " " + state.agentsOnline : "") : "";
    $(".fab .dot").classList.toggle("on", state.agentsOnline > 0);
    var ctx = $(".ctx");
    if (c && c.order_no) { ctx.hidden = false; ctx.textContent = t("order") + " " + displayOrderNo(c.order_no); }
    else ctx.hidden = true;
    renderQueue();
    // The queue card says it all (and more precisely) while queued: no second "nobody online" notice.
    $(".offline").hidden = !(state.started && state.agentsOnline === 0 && $(".queue").hidden);
    renderReportOrder();
  }

  // --- the queue card ----------------------------------------------------------------------------------------

  function renderQueue() {
    var el = $(".queue"), q = state.queue, c = state.conversation;
    if (!q || !c || c.status !== "queued") { el.hidden = true; el.textContent = ""; return; }
    el.hidden = false;
    el.textContent = "";
    var head = document.createElement("b");
    head.dataset.testid = "widget-queue-position";
    head.dataset.position = q.position;
    head.textContent = q.position > 1 ? t("queueAhead", { p: q.position, n: q.position - 1 }) : t("queueNext");
    el.appendChild(head);
    var line = document.createElement("div");
    var en = lang === "en";
    var staffed = q.open_now && q.agents_online > 0 && !q.closing_soon;
    if (staffed) {
      var s = q.expected_wait_seconds;
      line.textContent = s == null ? t("queueUnknown") : s < 60 ? t("queueSoon") : t("queueWait", { m: Math.round(s / 60) });
      line.dataset.testid = "widget-queue-wait";
      el.appendChild(line);
      return;
    }
    // Off hours, or nobody on duty: say so plainly, with the ticket number and the promised reply time.
    var open = en ? q.next_open_text_en : q.next_open_text;
    var by = en ? q.reply_by_text_en : q.reply_by_text;
    var text = !q.open_now ? (open ? t("offHours", { open: open }) : t("offHoursNoTime"))
      : q.closing_soon && open ? t("closing", { open: open }) : t("noAgents");
    text += (lang === "en" ? " " : "") + (by ? t("replyBy", { ticket: q.ticket_no || c.ticket_no, by: by })
      : t("replyLater", { ticket: q.ticket_no || c.ticket_no }));
    line.className = "q-note";
    line.dataset.testid = "widget-queue-notice";
    line.textContent = text;
    el.appendChild(line);
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
    if (csatVisible()) list.appendChild(csatCard);  // the same node each time: a half-typed comment survives
    list.scrollTop = list.scrollHeight;
  }

  // --- the satisfaction card ---------------------------------------------------------------------------------

  var csatCard = document.createElement("div");
  csatCard.className = "csat";
  csatCard.dataset.testid = "widget-csat";
  csatCard.innerHTML = '<b class="c-title"></b><small class="c-hint"></small><div class="stars" role="radiogroup"></div>' +
    '<textarea class="c-comment" rows="2" maxlength="500" data-testid="widget-csat-comment" hidden></textarea>' +
    '<div class="c-err" hidden></div><button type="button" class="c-send" data-testid="widget-csat-submit"></button>';
  for (var n = 1; n <= 5; n++) {
    var star = document.createElement("button");
    star.type = "button";
    star.className = "star";
    star.textContent = "★";
    star.dataset.n = n;
    star.dataset.testid = "widget-csat-star";
    star.setAttribute("role", "radio");
    csatCard.querySelector(".stars").appendChild(star);
  }

  function csatVisible() {
    var c = state.conversation, r = state.csat;
    if (!c || !r || r.conversation_id !== c.id || (c.status !== "resolved" && c.status !== "closed")) return false;
    return r.can_rate || (r.rated && state.csatThanks === r.round);
  }

  function renderCsat() {
    var r = state.csat;
    if (!r) return;
    var thanks = r.rated;
    var shown = thanks ? r.rating : state.csatPick;
    csatCard.querySelector(".c-title").textContent = thanks ? t("csatThanks") : t("csatTitle");
    csatCard.querySelector(".c-hint").textContent = thanks ? "" : t("csatHint");
    csatCard.querySelector(".c-hint").hidden = thanks;
    csatCard.querySelector(".stars").classList.toggle("done", thanks);
    Array.prototype.forEach.call(csatCard.querySelectorAll(".star"), function (b) {
      var k = Number(b.dataset.n);
      b.classList.toggle("on", k <= shown);
      b.disabled = thanks;
      b.setAttribute("aria-checked", String(k === shown));
      b.setAttribute("aria-label", t("star", { n: k }));
    });
    var comment = csatCard.querySelector(".c-comment");
    comment.placeholder = t("csatComment");
    comment.hidden = thanks || !state.csatPick;
    csatCard.querySelector(".c-send").textContent = t("csatSubmit");
    csatCard.querySelector(".c-send").hidden = thanks;
    if (thanks) csatCard.querySelector(".c-err").hidden = true;
  }

  function refreshCsat() {
    var c = state.conversation;
    if (!c || !state.token || (c.status !== "resolved" && c.status !== "closed")) {
      if (state.csat) { state.csat = null; renderAll(); }
      return;
    }
    var id = c.id;
    fetch(BASE + "/api/v1/chat/conversations/" + id + "/csat", { headers: { Authorization: "Bearer " + state.token } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (r) {
        if (!r || !state.conversation || state.conversation.id !== id) return;
        if (!state.csat || state.csat.round !== r.round) state.csatPick = 0;  // a new round: fresh stars
        state.csat = r;
        renderCsat();
        renderAll();
      }).catch(function () { /* offline: the card comes with the next conversation update */ });
  }

  function submitCsat() {
    var r = state.csat, err = csatCard.querySelector(".c-err");
    if (!r) return;
    if (!state.csatPick) { err.hidden = false; err.textContent = t("csatPick"); return; }
    var button = csatCard.querySelector(".c-send");
    button.disabled = true;
    fetch(BASE + "/api/v1/chat/conversations/" + r.conversation_id + "/csat", {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.token },
      body: JSON.stringify({ round: r.round, rating: state.csatPick, comment: csatCard.querySelector(".c-comment").value }),
    }).then(function (res) {
      return res.json().then(function (j) {
        if (!res.ok) {
          err.hidden = false;
          err.textContent = j.error ? (lang === "en" ? j.error.message_en : j.error.message) : t("reportFailed");
          if (res.status === 409) refreshCsat();
          return;
        }
        err.hidden = true;
        state.csatThanks = j.round;
        state.csat = j;
        renderCsat();
        renderAll();
      });
    }).catch(function () { err.hidden = false; err.textContent = t("reportFailed"); })
      .then(function () { button.disabled = false; });
  }

  csatCard.addEventListener("click", function (ev) {
    var star = ev.target.closest(".star");
    if (star && !star.disabled) {
      state.csatPick = Number(star.dataset.n);
      csatCard.querySelector(".c-err").hidden = true;
      renderCsat();
      $(".list").scrollTop = $(".list").scrollHeight;
      return;
    }
    if (ev.target.closest(".c-send")) submitCsat();
  });

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
      state.queue = s.queue || null;  // the socket's `ready` frame brings it in any case
      state.messages = {};
      state.lastSeq = 0;
      (s.messages || []).forEach(function (m) { state.messages[m.seq] = m; if (m.seq > state.lastSeq) state.lastSeq = m.seq; });
      state.started = true;
      renderHeader();
      renderAll();
      refreshCsat();
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
        state.queue = f.queue || null;
        setStatus("");
        renderHeader();
        refreshCsat();
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
          state.messages = {}; state.lastSeq = 0; state.readSent = 0; state.agentReadSeq = 0; state.queue = null;
        }
        var before = state.conversation && state.conversation.status;
        state.conversation = f.conversation;
        if (f.conversation.status !== "queued") state.queue = null;
        renderHeader(); renderAll();
        if (f.conversation.status !== before) refreshCsat();  // resolved: ask for stars; reopened: hide them
        break;
      case "queue":
        if (state.conversation && f.conversation_id === state.conversation.id) { state.queue = f.queue; renderHeader(); }
        break;
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

  // Show another conversation (the ticket a report just opened): new history, a new socket for it.
  function switchConversation(conversation, queue) {
    var ws = state.ws;
    if (ws) { ws.onclose = null; ws.onmessage = null; try { ws.close(1000, "switch"); } catch (e) { /* closed */ } }
    clearInterval(state.pinger);
    state.ws = null; state.connected = false;
    state.conversation = conversation; state.queue = queue || null;
    state.messages = {}; state.lastSeq = 0; state.readSent = 0; state.agentReadSeq = 0;
    state.csat = null; state.csatPick = 0;
    renderHeader(); renderAll();
    connect();
  }

  // --- the problem report form ---------------------------------------------------------------------------------

  function localNow() {  // for <input type=datetime-local>: the wall clock, minutes precision
    var d = new Date(), p = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes());
  }

  function renderReportOrder() {
    var c = state.conversation, linked = $(".linked"), input = $("#z-order");
    var attached = !!(data.orderContext && c && c.order_no);
    linked.hidden = !attached;
    input.hidden = attached;
    $(".order-opt").hidden = attached;
    if (attached) {
      linked.textContent = displayOrderNo(c.order_no);
      var note = document.createElement("small");
      note.textContent = t("orderLinked");
      linked.appendChild(note);
    }
  }

  function renderShots() {
    var box = $(".shots"), add = $(".addshot");
    Array.prototype.forEach.call(box.querySelectorAll(".shot"), function (el) { box.removeChild(el); });
    state.shots.forEach(function (shot, i) {
      var wrap = document.createElement("div");
      wrap.className = "shot";
      wrap.dataset.testid = "widget-report-preview";
      var img = document.createElement("img");
      img.src = shot.url;
      img.alt = shot.file.name || "";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", t("removeShot"));
      remove.addEventListener("click", function () { state.shots.splice(i, 1); renderShots(); });
      wrap.appendChild(img);
      wrap.appendChild(remove);
      box.insertBefore(wrap, add);
    });
    add.hidden = state.shots.length >= MAX_SHOTS;
  }

  function addShots(files) {
    fieldError("files", "");
    Array.prototype.forEach.call(files, function (file) {
      if (state.shots.length >= MAX_SHOTS) { fieldError("files", t("tooManyShots")); return; }
      if (IMAGE_TYPES.indexOf(file.type) < 0) { fieldError("files", t("badType")); return; }
      if (file.size > MAX_BYTES) { fieldError("files", t("tooLarge")); return; }
      var shot = { file: file, url: "" };
      state.shots.push(shot);
      // A data: URL, not blob: — a store page's Content-Security-Policy usually allows only data: images.
      var reader = new FileReader();
      reader.onload = function () { shot.url = reader.result; renderShots(); };
      reader.readAsDataURL(file);
    });
    renderShots();
  }

  function fieldError(name, text) {
    var fld = root.querySelector('.report .fld[data-field="' + name + '"]');
    if (!fld) return false;
    var el = fld.querySelector(".ferr");
    el.hidden = !text;
    el.textContent = text || "";
    fld.classList.toggle("bad", !!text);
    return true;
  }

  function clearReportErrors() {
    Array.prototype.forEach.call(root.querySelectorAll(".report .fld"), function (fld) { fieldError(fld.dataset.field, ""); });
    $(".rerr").hidden = true;
  }

  function showReportErrors(error) {
    var msg = function (e) { return lang === "en" ? e.message_en : e.message; };
    var details = error.details || {};
    var list = details.errors || [{ field: details.field, message: error.message, message_en: error.message_en }];
    var general = [];
    list.forEach(function (e) { if (!e.field || !fieldError(e.field, msg(e))) general.push(msg(e)); });
    var top = $(".rerr");
    top.hidden = !general.length;
    top.textContent = general.join(" ");
    var first = root.querySelector(".report .fld.bad") || (general.length ? top : null);
    if (first) first.scrollIntoView({ block: "center", behavior: "smooth" });
  }

  function resetReport() {
    $(".report").reset();
    state.shots = [];
    renderShots();
    clearReportErrors();
    $(".count").textContent = "0 / 2000";
  }

  function showReport(on) {
    $(".report").hidden = !on;
    $(".chat").hidden = on;
    if (on) {
      var time = $("#z-time");
      time.max = localNow();
      if (!time.value) time.value = localNow();
      renderReportOrder();
      $(".report").scrollTop = 0;
    }
  }

  function submitReport(ev) {
    ev.preventDefault();
    if (state.reporting) return;
    clearReportErrors();
    var form = $(".report"), button = $(".rsubmit");
    var body = new FormData();
    ["problem_type", "wants"].forEach(function (name) {
      var checked = form.querySelector('input[name="' + name + '"]:checked');
      body.append(name, checked ? checked.value : "");
    });
    var when = $("#z-time").value;
    // The customer's wall clock, sent with its offset; the server checks it is not in the future.
    body.append("occurred_at", when && !isNaN(new Date(when)) ? new Date(when).toISOString() : when);
    body.append("description", $("#z-desc").value);
    body.append("contact", $("#z-contact").value.trim());
    if (data.orderContext) body.append("order_context", data.orderContext);
    else body.append("order_no", $("#z-order").value.trim());
    state.shots.forEach(function (shot) { body.append("files", shot.file, shot.file.name || "screenshot"); });
    state.reporting = true;
    button.disabled = true;
    button.textContent = t("submitting");
    var done = function () { state.reporting = false; button.disabled = false; button.textContent = t("submitReport"); };
    (state.sessionPromise || (state.sessionPromise = startSession())).then(function () {
      if (!state.token) throw new Error("no session");
      return fetch(BASE + "/api/v1/chat/reports", { method: "POST", headers: { Authorization: "Bearer " + state.token }, body: body });
    }).then(function (r) {
      return r.json().then(function (j) {
        done();
        if (!r.ok) { showReportErrors(j.error || { message: t("reportFailed"), message_en: t("reportFailed") }); return; }
        resetReport();
        showReport(false);
        switchConversation(j.conversation, j.queue);
        setStatus(t("reportDone") + j.ticket_no);
        setTimeout(function () { if (state.connected) setStatus(""); }, 4000);
      });
    }).catch(function () {
      done();
      showReportErrors({ message: t("reportFailed"), message_en: t("reportFailed") });
    });
  }

  function openReport() {
    openPanel(true);
    showReport(true);
  }

  function openPanel(quiet) {
    state.open = true;
    $(".panel").hidden = false;
    $(".fab").hidden = true;
    if (!state.sessionPromise) state.sessionPromise = startSession();
    if (quiet !== true) {  // 「联系客服」 means the chat, even if the report form was left open
      showReport(false);
      setTimeout(function () { $(".compose textarea").focus(); }, 50);
    }
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
  $(".compose").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var ta = $(".compose textarea");
    sendText(ta.value);
    ta.value = "";
  });
  $(".compose textarea").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $(".compose").requestSubmit(); }
  });
  $(".compose textarea").addEventListener("input", function () {
    var now = Date.now();
    if (state.conversation && now - state.typingSent > 3000) {
      state.typingSent = now;
      sendFrame({ type: "typing", conversation_id: state.conversation.id, state: true });
    }
  });
  $(".img").addEventListener("click", function () { $(".compose input[type=file]").click(); });
  $(".compose input[type=file]").addEventListener("change", function (ev) {
    uploadImage(ev.target.files[0]);
    ev.target.value = "";
  });
  $(".rep").addEventListener("click", function () { showReport($(".report").hidden); });
  $(".r-back").addEventListener("click", function () { showReport(false); });
  $(".report").addEventListener("submit", submitReport);
  $(".addshot").addEventListener("click", function () { $(".shot-input").click(); });
  $(".shot-input").addEventListener("change", function (ev) { addShots(ev.target.files); ev.target.value = ""; });
  $("#z-desc").addEventListener("input", function (ev) { $(".count").textContent = ev.target.value.length + " / 2000"; });
  function fieldEdited(ev) {  // a corrected field loses its error at once
    var fld = ev.target.closest && ev.target.closest(".fld");
    if (fld && fld.dataset.field !== "files") fieldError(fld.dataset.field, "");
  }
  $(".report").addEventListener("change", fieldEdited);
  $(".report").addEventListener("input", fieldEdited);
  // Reading the latest messages stays so when the panel changes size (a phone's keyboard, a rotated screen).
  $(".list").addEventListener("scroll", function () {
    var l = $(".list");
    state.atBottom = l.scrollHeight - l.scrollTop - l.clientHeight < 40;
  });
  window.addEventListener("resize", function () { if (state.atBottom !== false) $(".list").scrollTop = $(".list").scrollHeight; });
  document.addEventListener("visibilitychange", markRead);

  function mount() {
    document.body.appendChild(host);
    applyLang();
    if (data.open === "1") openPanel();
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  window.ZaimaWidget = { open: openPanel, close: closePanel, openReport: openReport };
  document.addEventListener("click", function (ev) {
    var report = ev.target.closest && ev.target.closest("[data-zaima-report]");
    if (report) { ev.preventDefault(); openReport(); return; }
    var el = ev.target.closest && ev.target.closest("[data-zaima-open]");
    if (el) { ev.preventDefault(); openPanel(); }
  });
})();
