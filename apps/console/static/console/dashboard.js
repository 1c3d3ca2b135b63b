// The operator console's dashboard refreshes itself in place: it asks the panel view for the
// panel's HTML every few seconds while a session runs, slowly while none does (so a session
// started elsewhere still shows up), and swaps it in without reloading the page.
(() => {
  "use strict";

  const live = document.getElementById("fp-dashboard");
  if (!live || !live.dataset.panelUrl) {
    return;
  }
  const seconds = (name, fallback) => {
    const value = Number(live.dataset[name]);
    return value > 0 ? value : fallback;
  };
  const liveDelay = seconds("liveSeconds", 3) * 1000;
  const idleDelay = seconds("idleSeconds", 15) * 1000;

  const sessionActive = () => {
    const state = live.querySelector("[data-session-active]");
    return state !== null && state.dataset.sessionActive === "true";
  };
  const nextDelay = () => (sessionActive() ? liveDelay : idleDelay);

  const refresh = async () => {
    // A hidden tab asks nothing; it catches up on the first refresh once it shows again.
    if (document.hidden) {
      return idleDelay;
    }
    let html;
    try {
      const response = await fetch(live.dataset.panelUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      // A lapsed login answers with the login page: keep the last panel and stop asking.
      if (response.redirected) {
        live.dataset.refresh = "stopped";
        return null;
      }
      if (!response.ok) {
        return idleDelay;
      }
      html = await response.text();
    } catch (error) {
      return idleDelay; // the controller is away: try again later
    }
    live.innerHTML = html;
    live.dataset.refreshes = String(Number(live.dataset.refreshes || 0) + 1);
    return nextDelay();
  };

  let timer = null;
  const schedule = (delay) => {
    timer = window.setTimeout(async () => {
      timer = null;
      const next = await refresh();
      if (next !== null) {
        schedule(next);
      }
    }, delay);
  };
  // Back on a tab that skipped its refreshes: catch up at once rather than after the idle period.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null) {
      window.clearTimeout(timer);
      schedule(0);
    }
  });
  schedule(nextDelay());
})();
