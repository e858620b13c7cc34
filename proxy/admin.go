package proxy

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

var errAdminDisabled = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
	Message: "The admin API is disabled (no admin_key configured)."}

// handleAdminProviders lists each provider's health and price.
func (s *Server) handleAdminProviders(ctx *fasthttp.RequestCtx, st *State) {
	b, err := json.Marshal(map[string]any{"providers": st.Gateway.Router().Statuses()})
	if err != nil {
		writeError(ctx, &apiError{Status: 500, Type: "server_error", Code: "internal_error", Message: "Internal error."})
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

// handleAdminConfig answers GET /admin/config: the configuration file in
// force, as YAML with every secret masked (config.Config.Masked).
func (s *Server) handleAdminConfig(ctx *fasthttp.RequestCtx, st *State) {
	cfg := st.Config
	if st.Directory != nil {
		// The file's: keys and teams made at run time are listed by
		// their own API, never with their hashes.
		cfg = st.Directory.Seed()
	}
	b, err := cfg.Masked()
	if err != nil {
		writeError(ctx, &apiError{Status: 500, Type: "server_error", Code: "internal_error", Message: "Internal error."})
		return
	}
	ctx.SetContentType("application/yaml; charset=utf-8")
	ctx.SetBody(b)
}
