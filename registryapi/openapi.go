package registryapi

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3.0 description of /api/v1 (and of the
// docker search endpoints under /v1). It is generated from the route
// table and the view types by TestOpenAPIDocument (go test
// ./registryapi -run TestOpenAPIDocument -update-openapi), which also
// fails when a route is missing from it or a documented route does not
// answer.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPI serves GET /api/v1/openapi.json.
func (h *Hub) openAPI(w http.ResponseWriter, _ *http.Request, _ identity) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(openAPIDocument)
	return err
}
