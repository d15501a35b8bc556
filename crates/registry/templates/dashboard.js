// Keeps the registry dashboard current: asks for the page again as soon as the registry changes
// (the page waits for a change, at most 5 s, so heartbeat ages stay fresh too) and swaps it in.
(function () {
  "use strict";
  async function follow() {
    for (;;) {
      const main = document.querySelector("main");
      try {
        const answer = await fetch("/?version=" + main.dataset.version + "&wait=5");
        if (!answer.ok) throw new Error(String(answer.status));
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        main.replaceWith(page.querySelector("main"));
        document.getElementById("summary").textContent = page.getElementById("summary").textContent;
      } catch (error) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  }
  follow();
})();
