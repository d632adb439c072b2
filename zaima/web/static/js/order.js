// Order page: poll the JSON API while something is about to change, and reload when it does.
import "./copy.js";

const page = document.querySelector(".order-page");

function snapshot(order) {
  return [
    order.status,
    String(order.delivered_quantity),
    String((order.refunds || []).length),
    order.recharge ? order.recharge.status : "",
  ].join("|");
}

if (page && page.dataset.live) {
  const orderNo = page.dataset.orderNo;
  const rendered = [page.dataset.status, page.dataset.delivered, page.dataset.refunds, page.dataset.recharge].join("|");
  const started = Date.now();
  let failures = 0;

  const nextDelay = () => {
    const age = Date.now() - started;
    if (page.dataset.status === "awaiting_stock") return 30000;
    if (age < 2 * 60 * 1000) return 3000; // the first minutes: payment and delivery land in seconds
    if (age < 30 * 60 * 1000) return 10000;
    return 60000;
  };

  const poll = async () => {
    if (document.hidden) {
      setTimeout(poll, 5000);
      return;
    }
    try {
      const response = await fetch(`/api/v1/orders/${encodeURIComponent(orderNo)}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (response.ok) {
        failures = 0;
        if (snapshot(await response.json()) !== rendered) {
          window.location.reload();
          return;
        }
      } else {
        failures += 1;
      }
    } catch (_) {
      failures += 1; // offline for a moment on a phone: keep trying, slower
    }
    setTimeout(poll, nextDelay() * Math.min(1 + failures, 6));
  };
  setTimeout(poll, nextDelay());
}
