// Progressive enhancement: forms post in the background and the board is swapped in place.
// Without this script every form still works (POST, then redirect back to the board).
(function () {
  "use strict";
  document.documentElement.dataset.enhanced = "true";
  document.addEventListener("submit", async function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      var response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "x-requested-with": "fetch" },
      });
      var page = new DOMParser().parseFromString(await response.text(), "text/html");
      var next = page.querySelector("main");
      if (!next) throw new Error("no board in the answer");
      document.querySelector("main").replaceWith(next);
      var focus = next.querySelector("[aria-invalid=true]") ||
        (form.classList.contains("new-form") ? next.querySelector("#new-title") : null);
      if (focus) focus.focus();
    } catch (error) {
      // Fall back to a normal submission.
      form.submit();
    }
  });
})();
