// Payment hand-off: countdown to expiry, 「我已付款」 (active payment check), and a quiet status poll
// so the page moves on by itself when the payment lands (e.g. paid in another app).

// 「我已付款」 on the pay page and on an unpaid order's page: ask the gateway now.
const wireCheck = (checkButton) => {
  const orderNo = checkButton.dataset.orderNo;
  const result = checkButton.parentElement.querySelector("[data-check-result]");
  checkButton.addEventListener("click", async () => {
    checkButton.disabled = true;
    result.textContent = checkButton.dataset.checking;
    try {
      const response = await fetch(`/api/v1/orders/${encodeURIComponent(orderNo)}/check-payment`, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const lang = document.documentElement.lang;
        const error = body.error || {};
        result.textContent = (lang === "en" ? error.message_en : error.message) || checkButton.dataset.failed;
      } else if (body.status && body.status !== checkButton.dataset.status) {
        window.location.reload(); // the pay page sends a paid order on to its order page
        return;
      } else {
        result.textContent = checkButton.dataset.notPaid;
      }
    } catch (_) {
      result.textContent = checkButton.dataset.failed;
    }
    checkButton.disabled = false;
  });
};
document.querySelectorAll("[data-check-payment]").forEach(wireCheck);

const card = document.querySelector(".pay-card");

if (card) {
  const orderNo = card.dataset.orderNo;
  const orderUrl = `/orders/${encodeURIComponent(orderNo)}`;
  const deadline = Date.now() + Number(card.dataset.remaining || 0) * 1000;
  const left = card.querySelector("[data-left]");
  const expired = card.querySelector("[data-expired]");
  const countdown = card.querySelector("[data-countdown]");

  const tick = () => {
    const seconds = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const mm = String(Math.floor(seconds / 60)).padStart(2, "0");
    const ss = String(seconds % 60).padStart(2, "0");
    left.textContent = `${mm}:${ss}`;
    if (seconds === 0) {
      countdown.hidden = true;
      expired.hidden = false;
      return;
    }
    setTimeout(tick, 1000);
  };
  tick();

  const poll = async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(`/api/v1/orders/${encodeURIComponent(orderNo)}`, {
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.ok) {
          const order = await response.json();
          if (order.status !== "pending_payment") {
            window.location.assign(orderUrl);
            return;
          }
        }
      } catch (_) {
        // A dropped request on a phone network; the next round will tell.
      }
    }
    setTimeout(poll, 5000);
  };
  setTimeout(poll, 5000);
}
