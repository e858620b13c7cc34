package proxy

import (
	"encoding/json"

	"github.com/valyala/fasthttp"

	"nanogate/auth"
)

var errAdminDisabled = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
	Message: "The admin API is disabled (no admin_key configured)."}

// admin checks the admin bearer token and answers the refusal itself.
func (s *Server) admin(ctx *fasthttp.RequestCtx, st *State) bool {
	if st.Config.AdminKey == "" {
		writeError(ctx, errAdminDisabled)
		return false
	}
	h := ctx.Request.Header.Peek("Authorization")
	if len(h) < 8 || !auth.Equal(h[7:], []byte(st.Config.AdminKey)) || (string(h[:7]) != "Bearer " && string(h[:7]) != "bearer ") {
		writeError(ctx, errBadKey)
		return false
	}
	return true
}

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
