// Starts Swagger UI from a file of our own: the page's CSP allows no inline script.
"use strict";
window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  // The default sends the spec to validator.swagger.io for a badge: no other host.
  validatorUrl: null,
});
