// Product page: quantity stepper and the live total. Money stays in integer fen, never floats.

const form = document.querySelector(".buy-form");

function toFen(yuan) {
  const [whole, frac = ""] = String(yuan).split(".");
  return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
}

function formatFen(fen) {
  const cents = String(fen % 100).padStart(2, "0");
  return `¥${Math.floor(fen / 100)}.${cents}`;
}

if (form) {
  const quantity = form.querySelector("#quantity");
  const total = form.querySelector("[data-total]");
  const unit = toFen(form.dataset.price);
  const min = Number(quantity.min || 1);
  const max = Number(quantity.max || 1000);

  const update = () => {
    const n = Number.parseInt(quantity.value, 10);
    if (Number.isInteger(n) && n >= min && n <= max) total.textContent = formatFen(unit * n);
  };

  form.querySelectorAll("[data-step]").forEach((button) => {
    button.addEventListener("click", () => {
      const current = Number.parseInt(quantity.value, 10) || min;
      quantity.value = String(Math.min(max, Math.max(min, current + Number(button.dataset.step))));
      update();
    });
  });
  quantity.addEventListener("input", update);
  update();

  // One order per tap: a second tap while the first request is on its way would make two orders.
  form.addEventListener("submit", () => {
    const submit = form.querySelector("button[type=submit]");
    setTimeout(() => { submit.disabled = true; }, 0);
  });
  // Coming back with the browser's back button restores the page as it was: make the button usable again.
  window.addEventListener("pageshow", () => {
    const submit = form.querySelector("button[type=submit]");
    if (submit && !submit.hasAttribute("data-sold-out")) submit.disabled = false;
  });
}
