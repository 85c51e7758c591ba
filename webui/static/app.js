// Every action form asks for confirmation first (the dialog fills {field} from the form's values).
"use strict";
(function () {
  const dialog = document.getElementById("confirm-dialog");
  const text = document.getElementById("confirm-text");
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.confirmed === "yes" || !dialog || typeof dialog.showModal !== "function") {
        return;
      }
      event.preventDefault();
      const data = new FormData(form);
      text.textContent = form.dataset.confirm.replace(/\{(\w+)\}/g, function (_, name) {
        return data.get(name) || name;
      });
      dialog.returnValue = "";
      dialog.onclose = function () {
        if (dialog.returnValue === "ok") {
          form.dataset.confirmed = "yes";
          form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
          form.submit();
        }
      };
      dialog.showModal();
    });
  });
})();
