package proxy

import (
	"bytes"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/dashboard"
	"nanogate/internal/clip"
)

// authKind is how a route proves who calls it.
type authKind uint8

const (
	// authNone: public (health, metrics, the dashboard's static page).
	authNone authKind = iota
	// authClient: a client key from the key table.
	authClient
	// authAdmin: the admin key; the route is absent (404) without one.
	authAdmin
	// authSigned: a signed link, checked by the handler (the image store);
	// its refusals count as failed authentications all the same.
	authSigned
)

func (k authKind) String() string {
	switch k {
	case authClient:
		return "client"
	case authAdmin:
		return "admin"
	case authSigned:
		return "signed"
	}
	return "none"
}

// route is one entry of the route table: where it is, which methods it
// takes, how its caller is authenticated, and its handler. A path holds at
// most one "{id}" segment, which matches one non-empty path segment.
type route struct {
	paths   []string
	methods []string
	auth    authKind
	// logAs names the route in the request log; a refused authentication
	// of such a route gets its request log line like any other failure.
	logAs  string
	handle func(s *Server, ctx *fasthttp.RequestCtx, r routed)
	// allow is the Allow header of a 405: methods, and HEAD with GET.
	allow string
	// billed routes start spending money when posted to (a batch): a key's
	// own budget is checked before them. The routes that spend at once
	// reserve against it in the gateway, with their team's budget, in the
	// same step.
	billed bool
}

// routed is what the handler of a route gets: the state it runs on, the
// request id, the authenticated caller (nil for authNone and authSigned)
// and the {id} path segment.
type routed struct {
	st     *State
	rid    string
	caller *auth.Caller
	id     string
}

var (
	get    = []string{fasthttp.MethodGet}
	post   = []string{fasthttp.MethodPost}
	getDel = []string{fasthttp.MethodGet, fasthttp.MethodDelete}
	getPst = []string{fasthttp.MethodGet, fasthttp.MethodPost}
	getPtD = []string{fasthttp.MethodGet, fasthttp.MethodPatch, fasthttp.MethodDelete}
)

// routes is every path the gateway serves. A request goes through one
// step, serve: find its route, check the method, authorize, then the
// handler.
var routes = []*route{
	{paths: []string{"/v1/chat/completions", "/chat/completions"}, methods: post, auth: authClient, logAs: "chat",
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleChat(ctx, r.st, r.rid, r.caller) }},
	{paths: []string{"/v1/images/generations", "/images/generations"}, methods: post, auth: authClient, logAs: "images",
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleImages(ctx, r.st, r.rid, r.caller, false) }},
	{paths: []string{"/v1/images/edits", "/images/edits"}, methods: post, auth: authClient, logAs: "images_edits",
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleImages(ctx, r.st, r.rid, r.caller, true) }},
	{paths: []string{"/v1/models", "/models"}, methods: get, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleModels(ctx, r.st, r.caller) }},
	{paths: []string{"/v1/models/{id}", "/models/{id}"}, methods: get, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleModel(ctx, r.st, r.caller, r.id) }},
	{paths: []string{"/v1/usage", "/usage"}, methods: get, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleUsage(ctx, r.st, r.caller) }},
	{paths: []string{"/v1/files", "/files"}, methods: getPst, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleFiles(ctx, r.st, r.caller) }},
	{paths: []string{"/v1/files/{id}", "/files/{id}"}, methods: getDel, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleFile(ctx, r.st, r.caller, r.id, false) }},
	{paths: []string{"/v1/files/{id}/content", "/files/{id}/content"}, methods: get, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleFile(ctx, r.st, r.caller, r.id, true) }},
	{paths: []string{"/v1/batches", "/batches"}, methods: getPst, auth: authClient, billed: true,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleBatches(ctx, r.st, r.caller) }},
	{paths: []string{"/v1/batches/{id}", "/batches/{id}"}, methods: get, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleBatch(ctx, r.st, r.caller, r.id, false) }},
	{paths: []string{"/v1/batches/{id}/cancel", "/batches/{id}/cancel"}, methods: post, auth: authClient,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleBatch(ctx, r.st, r.caller, r.id, true) }},

	{paths: []string{"/admin/usage"}, methods: get, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminUsage(ctx, r.st) }},
	{paths: []string{"/admin/providers"}, methods: get, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminProviders(ctx, r.st) }},
	{paths: []string{"/admin/config"}, methods: get, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminConfig(ctx, r.st) }},
	{paths: []string{"/admin/batches"}, methods: get, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminBatches(ctx, r.st) }},
	{paths: []string{"/admin/teams"}, methods: getPst, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminTeams(ctx, r) }},
	{paths: []string{"/admin/teams/{id}"}, methods: getPtD, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminTeam(ctx, r) }},
	{paths: []string{"/admin/keys"}, methods: getPst, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminKeys(ctx, r) }},
	{paths: []string{"/admin/keys/{id}"}, methods: getPtD, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminKey(ctx, r) }},
	{paths: []string{"/admin/keys/{id}/rotate"}, methods: post, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminKeyRotate(ctx, r) }},
	{paths: []string{"/admin/audit"}, methods: get, auth: authAdmin,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleAdminAudit(ctx, r) }},
	// The page holds no data (its script calls the admin APIs above with the
	// bearer key), so it is served without auth; like them, it is absent
	// when no admin key is configured.
	{paths: []string{dashboard.Root, dashboard.Page, dashboard.ScriptPath, dashboard.StylePath}, methods: get, auth: authNone,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) {
			if r.st.Config.AdminKey == "" {
				writeError(ctx, errAdminDisabled)
				return
			}
			dashboard.Serve(ctx)
		}},

	{paths: []string{"/images/{id}"}, methods: get, auth: authSigned,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) {
			if r.st.Offload != nil {
				if h := r.st.Offload.Handler(); h != nil {
					h(ctx)
					return
				}
			}
			writeError(ctx, errNotFound)
		}},

	{paths: []string{"/healthz"}, methods: get, auth: authNone,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"ok"}` + "\n")
		}},
	{paths: []string{"/readyz"}, methods: get, auth: authNone,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) { s.handleReady(ctx, r.st) }},
	{paths: []string{"/metrics"}, methods: get, auth: authNone,
		handle: func(s *Server, ctx *fasthttp.RequestCtx, r routed) {
			s.metrics.BytesInFlight.Set(float64(s.inflight.InUse()))
			s.prom(ctx)
		}},
}

// patternRoute is a route path with an {id} segment, split around it.
type patternRoute struct {
	prefix, suffix string
	r              *route
}

var (
	exactRoutes   = map[string]*route{}
	patternRoutes []patternRoute
)

func init() {
	for _, r := range routes {
		r.allow = strings.Join(r.methods, ", ")
		for _, m := range r.methods {
			if m == fasthttp.MethodGet {
				r.allow += ", " + fasthttp.MethodHead
			}
		}
		for _, p := range r.paths {
			if pre, suf, ok := strings.Cut(p, "{id}"); ok {
				patternRoutes = append(patternRoutes, patternRoute{prefix: pre, suffix: suf, r: r})
				continue
			}
			if exactRoutes[p] != nil {
				panic("proxy: two routes for " + p)
			}
			exactRoutes[p] = r
		}
	}
}

// findRoute returns the route of path and its {id} segment. Exact paths win
// over patterns ("/images/edits" is not an image id).
func findRoute(path []byte) (*route, string) {
	if r := exactRoutes[string(path)]; r != nil {
		return r, ""
	}
	for _, pr := range patternRoutes {
		rest, ok := bytes.CutPrefix(path, []byte(pr.prefix))
		if !ok {
			continue
		}
		id, ok := bytes.CutSuffix(rest, []byte(pr.suffix))
		if !ok || len(id) == 0 || bytes.IndexByte(id, '/') >= 0 {
			continue
		}
		return pr.r, string(id)
	}
	return nil, ""
}

// admin reports whether the route belongs on the admin listener when there
// is one (server.admin_listen): the admin API, its dashboard and /metrics.
func (r *route) admin() bool {
	return r.auth == authAdmin || slices.Contains(r.paths, "/metrics") || slices.Contains(r.paths, dashboard.Root)
}

// health reports whether the route is a health check, served on every
// listener.
func (r *route) health() bool {
	return slices.Contains(r.paths, "/healthz") || slices.Contains(r.paths, "/readyz")
}

// allows reports whether the route takes method; HEAD goes with GET.
func (r *route) allows(method []byte) bool {
	for _, m := range r.methods {
		if string(method) == m || (m == fasthttp.MethodGet && string(method) == fasthttp.MethodHead) {
			return true
		}
	}
	return false
}

// serve runs a request through its route: 404 for an unknown path, 405 with
// Allow for a wrong method (before any key is looked at: the table is no
// secret), then authorize, then the handler.
func (s *Server) serve(ctx *fasthttp.RequestCtx, st *State, rid string, adminListener bool) {
	r, id := findRoute(ctx.Path())
	// With an admin listener, each listener serves its own routes only
	// (and both the health checks).
	if r != nil && s.admin != nil && r.admin() != adminListener && !r.health() {
		r = nil
	}
	if r == nil {
		writeError(ctx, errNotFound)
		return
	}
	if !r.allows(ctx.Method()) {
		ctx.Response.Header.Set("Allow", r.allow)
		writeError(ctx, errMethod)
		return
	}
	rq := routed{st: st, rid: rid, id: id}
	start := time.Now()
	caller, aerr := s.authorize(ctx, st, r.auth)
	if r.logAs == "" {
		// Routes without a request log of their own (the API's reads, the
		// admin API, links, health) get an access line: the admin audit
		// trail among them.
		defer func() { s.logAccess(ctx, r, rid, caller, start) }()
	}
	if aerr != nil {
		if r.logAs != "" {
			s.fail(ctx, &reqLog{start: start, id: rid, route: r.logAs, ip: s.clientAddr(ctx)}, aerr)
			return
		}
		writeError(ctx, aerr)
		return
	}
	if r.auth == authClient && caller != nil {
		// Answers the limiter admitted carry its decision; the others (model
		// lists, usage, files, refusals before admission) its state.
		defer limitHeadersIfMissing(ctx, st, caller)
	}
	if r.billed && caller != nil && caller.Budget != nil && ctx.IsPost() {
		if berr := keyBudget(st, caller); berr != nil {
			if r.logAs != "" {
				s.fail(ctx, &reqLog{start: start, id: rid, route: r.logAs, ip: s.clientAddr(ctx)}, berr)
				return
			}
			writeError(ctx, berr)
			return
		}
	}
	rq.caller = caller
	r.handle(s, ctx, rq)
	if r.auth == authSigned && ctx.Response.StatusCode() == fasthttp.StatusForbidden {
		// A link whose signature does not hold is a failed authentication;
		// a valid link is served whatever the address did before.
		ip := s.clientIP(ctx)
		if s.guard.blocked(ip) {
			writeError(ctx, errAuthFlood)
			return
		}
		s.guard.fail(ip)
	}
}

// authorize is the one authentication step of every route. Each refusal of a
// presented or missing credential counts against the client's address in the
// failed-auth guard, and an address over its allowance gets 429 until the
// guard's minute rolls over. A valid credential never touches the guard: no
// lock or allocation on the path of real requests, and a client behind a
// shared address whose neighbour guesses keys still gets through.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, st *State, kind authKind) (*auth.Caller, *apiError) {
	var (
		caller *auth.Caller
		aerr   *apiError
	)
	switch kind {
	case authNone:
		return nil, nil
	case authSigned:
		// Checked by the handler: serve counts its refusals.
		return nil, nil
	case authClient:
		caller, aerr = findClient(ctx, st.Keys)
	case authAdmin:
		if st.Config.AdminKey == "" {
			// Nothing to guess: the route does not exist.
			return nil, errAdminDisabled
		}
		aerr = checkAdminKey(ctx, st.Config.AdminKey)
	}
	if aerr == nil {
		return caller, nil
	}
	ip := s.clientIP(ctx)
	if s.guard.blocked(ip) {
		return nil, errAuthFlood
	}
	s.guard.fail(ip)
	return nil, aerr
}

// credential is the secret a request presents: the Authorization bearer
// token, else, where the route takes them (client keys: SDKs for other APIs
// send these), x-api-key or x-goog-api-key. An Authorization header that is
// not a bearer token is refused, never skipped for another header.
func credential(ctx *fasthttp.RequestCtx, otherHeaders bool) ([]byte, *apiError) {
	if h := ctx.Request.Header.Peek("Authorization"); len(h) > 0 {
		if len(h) > 7 && (string(h[:7]) == "Bearer " || string(h[:7]) == "bearer ") {
			return h[7:], nil
		}
		return nil, errBadKey
	}
	if otherHeaders {
		if h := ctx.Request.Header.Peek("x-api-key"); len(h) > 0 {
			return h, nil
		}
		if h := ctx.Request.Header.Peek("x-goog-api-key"); len(h) > 0 {
			return h, nil
		}
	}
	return nil, errMissingKey
}

// findClient finds the caller of a client route in the key table; a
// revoked or expired key is refused saying which. Only authorize calls
// it: every refusal must reach the failed-auth guard. The table never
// holds the admin key (keys.Directory.Table leaves it out).
func findClient(ctx *fasthttp.RequestCtx, keys *auth.Table) (*auth.Caller, *apiError) {
	secret, aerr := credential(ctx, true)
	if aerr != nil {
		return nil, aerr
	}
	c := keys.Lookup(secret)
	if c == nil {
		return nil, errBadKey
	}
	if aerr := checkKey(c); aerr != nil {
		return nil, aerr
	}
	return c, nil
}

// checkAdminKey checks the admin key of an admin route, in constant time; it
// is taken as a bearer token only. Only authorize calls it.
func checkAdminKey(ctx *fasthttp.RequestCtx, key string) *apiError {
	secret, aerr := credential(ctx, false)
	if aerr != nil {
		return aerr
	}
	if !auth.Equal(secret, []byte(key)) {
		return errBadKey
	}
	return nil
}

// logAccess writes the access line of a request to a route without a
// request log: method, path (never the query: links carry signatures),
// status, time, the client's address (server.trusted_proxies) and who it
// was. Health checks and scrapes, which come every few seconds, log at
// debug.
func (s *Server) logAccess(ctx *fasthttp.RequestCtx, r *route, rid string, caller *auth.Caller, start time.Time) {
	level := zap.InfoLevel
	if r.health() || slices.Contains(r.paths, "/metrics") {
		level = zap.DebugLevel
	}
	ce := s.log.Check(level, "access")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("request_id", rid),
		zap.String("method", string(ctx.Method())),
		zap.String("path", clip.String(string(ctx.Path()))),
		zap.Int("status", ctx.Response.StatusCode()),
		zap.Float64("latency_ms", elapsedMS(start)),
		zap.String("client_ip", s.clientAddr(ctx).String()),
		zap.String("auth", r.auth.String()),
	}
	switch st := ctx.Response.StatusCode(); {
	case caller != nil:
		fields = append(fields, zap.String("key", caller.Name), zap.String("team", caller.Team))
	case r.auth == authAdmin && st != fasthttp.StatusUnauthorized && st != fasthttp.StatusTooManyRequests:
		fields = append(fields, zap.String("key", "admin"))
	}
	ce.Write(fields...)
}
