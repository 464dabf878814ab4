"""One module per resource; ``service.api.main`` registers their routers. Every resource route
lives under ``V1``; each router carries the whole prefix, so a route's template is its full path
(the label of its metrics)."""

V1 = "/v1"
