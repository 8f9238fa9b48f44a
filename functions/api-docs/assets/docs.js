// Starts Swagger UI over the API's own document. The page, openapi.json and the API share one
// origin and root (the page is <root>/docs, an API Gateway stage prefix included), so "try it"
// calls that root unless the document names servers of its own.
"use strict";
(function () {
  var root = new URL(".", window.location.href);
  var mount = document.getElementById("swagger-ui");
  fetch(new URL("openapi.json", root), { credentials: "omit", headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("openapi.json answered " + response.status);
      return response.json();
    })
    .then(function (spec) {
      if (!Array.isArray(spec.servers) || spec.servers.length === 0) {
        spec.servers = [{ url: root.href.replace(/\/$/, ""), description: "This API" }];
      }
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        displayOperationId: true,
        displayRequestDuration: true,
        docExpansion: "list",
        filter: true,
        showCommonExtensions: true,
        // No call to swagger.io's validator: the page loads and calls nothing but this API.
        validatorUrl: null,
        withCredentials: false,
        persistAuthorization: false
      });
    })
    .catch(function (error) {
      mount.textContent = "The API document could not be loaded (" + error.message + "). It is at ";
      var link = document.createElement("a");
      link.href = new URL("openapi.json", root).href;
      link.textContent = "openapi.json";
      mount.appendChild(link);
    });
})();
