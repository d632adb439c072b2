// Copy buttons: <button data-copy-from="element-id" data-done="已复制">. Works without https too.

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      // Fall through to the selection-based copy (permission denied, old WebView).
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch (_) {
    ok = false;
  }
  area.remove();
  return ok;
}

function selectElement(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

export function setupCopyButtons(root = document) {
  root.querySelectorAll("[data-copy-from]").forEach((button) => {
    const label = button.textContent;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copyFrom);
      if (!source) return;
      const ok = await copyText(source.textContent.trim());
      if (!ok) {
        // Could not write the clipboard: select the text so a long-press copies it.
        selectElement(source);
        return;
      }
      button.textContent = button.dataset.done || "✓";
      button.classList.add("done");
      setTimeout(() => {
        button.textContent = label;
        button.classList.remove("done");
      }, 1600);
    });
  });
}

setupCopyButtons();
