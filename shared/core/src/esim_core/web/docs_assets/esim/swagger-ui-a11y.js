/* Names for Swagger UI's controls that have none (axe's select-name): the "Examples" list of
   a request or response has a visible caption but no label tied to it. Runs on every change
   of the page, since Swagger UI draws an operation's details only when it is opened. */
(function () {
  "use strict";
  function label(root) {
    root.querySelectorAll("select.examples-select-element:not([aria-label])").forEach(
      function (select) {
        select.setAttribute("aria-label", "Examples");
      }
    );
  }
  new MutationObserver(function () {
    label(document);
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
